"""Score the fakes D ranks most real beside the first ones: does D's ranking lift the classifier score?

    python bench/d_ranked.py --train outputs/train --classifier outputs/classifier/classifier.keras

With n = `evaluate.n_samples` and `evaluate.seed` from params.yaml: draws 4 x n fakes, gives each D's
logit, and scores sets of n as `evaluate` does (`ganlab.evaluation.judge.quality_report`, against the
test set): the first n, D's best half of 2n, D's best quarter of 4n; for G, and for its EMA when the
run kept one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ganlab  # noqa: F401  (oneDNN and TensorFlow's logging, as the stages set them)
from ganlab.core.config import load_params
from ganlab.data.arrays import load_split
from ganlab.evaluation.judge import quality_report
from ganlab.nets.models import draw
from ganlab.nets.saving import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, default=Path("outputs/train"))
    ap.add_argument("--classifier", type=Path, default=Path("outputs/classifier/classifier.keras"))
    ap.add_argument("--data", type=Path, default=Path("data/prepared"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    cfg = load_params(args.params).evaluate  # the seed, sample count and k that `evaluate` uses
    d, classifier = load_model(args.train / "discriminator.keras"), load_model(args.classifier)
    x_train, _ = load_split(args.data, "train")
    x_test, _ = load_split(args.data, "test")
    n = cfg.n_samples
    rng = np.random.default_rng(cfg.seed)
    generators = {name: load_model(args.train / f"{name}.keras") for name in ("generator", "generator_ema")
                  if (args.train / f"{name}.keras").exists()}
    z = rng.standard_normal((4 * n, generators["generator"].inputs[0].shape[1])).astype(np.float32)
    reals = x_train[np.sort(rng.choice(len(x_train), n, replace=False))]  # real data's reference
    for name, generator in generators.items():
        fakes = draw(generator, z)
        logits = np.ravel(d.predict(fakes, batch_size=1000, verbose=0))
        best = {f"D's best half of {2 * n}": np.sort(np.argsort(-logits[: 2 * n])[:n]),
                f"D's best quarter of {4 * n}": np.sort(np.argsort(-logits)[:n])}
        q, _ = quality_report(classifier, fakes[:n], reals, x_test[:n], cfg.pr_k, cfg.seed,
                              {k: fakes[idx] for k, idx in best.items()})
        for key in ("real_reference", "generated", *best):
            r = q[key]
            print(f"{name:14s} {key:26s} FD {r['frechet_distance']:.2f} score {r['classifier_score']:.2f} "
                  f"unsure {r['unsure_share']:.3f} KL {r['kl_to_uniform']:.3f} P/R {r['precision']:.3f}/"
                  f"{r['recall']:.3f} density/coverage {r['density']:.3f}/{r['coverage']:.3f}")


if __name__ == "__main__":
    main()
