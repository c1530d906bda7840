"""Stage `evaluate`: D's confusion matrix, sample pictures and quality numbers, into the train run.

Run: python pipeline/evaluate.py --data data/prepared --train outputs/train \
         --classifier outputs/classifier/classifier.keras --out outputs/evaluate \
         --metrics metrics/evaluate.json --plots plots/evaluate
"""

import argparse
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.core.files import write_json
from ganlab.data import load_split
from ganlab.evaluation import evaluate as ev
from ganlab.nets.models import weights_digest
from ganlab.nets.saving import load_model
from ganlab.tracking import store as tracking
from ganlab.tracking.runlog import RunLog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True, help="train's output folder")
    ap.add_argument("--classifier", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    cfg, z_dim = params.evaluate, params.train.z_dim
    generator = load_model(args.train / "generator.keras")
    discriminator = load_model(args.train / "discriminator.keras")
    classifier = load_model(args.classifier)
    x_train, _ = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    # train.ema: the averaged G, scored on the same z in the same pass.
    ema = load_model(args.train / "generator_ema.keras") if (args.train / "generator_ema.keras").exists() else None
    metrics, d_real, d_fake = ev.judge(generator, discriminator, classifier, x_train, x_test, cfg, z_dim, ema, y_test)
    # How these figures were measured: only figures measured alike are compared (the registry's champion).
    # The classifier by its weights: a re-trained file differs in its bytes, not in what it computes.
    metrics["measured_by"] = {"classifier": weights_digest(classifier), "n_samples": cfg.n_samples,
                              "seed": cfg.seed}
    write_json(args.metrics, metrics)
    files = ev.pictures(generator, x_train, metrics["confusion"], cfg, z_dim, args.out)
    args.plots.mkdir(parents=True, exist_ok=True)
    ev.confusion_rows(d_real, d_fake).to_csv(args.plots / "confusion.csv", index=False)

    run = RunLog.from_file(args.train / "mlflow_run.json")
    run.log_metrics(tracking.flatten_metrics(metrics), None, "eval_")
    for path in files:
        run.log_artifact(path, "evaluate")
    run.save_pending("evaluate")
    q, r, cm = metrics["quality"], metrics["reference"], metrics["confusion"]
    print(f"evaluate: D accuracy {cm['accuracy']:.3f}, "
          f"FD {q['frechet_distance']:.2f} (real {r['frechet_distance']:.2f}), "
          f"modes {q['modes_covered']}/10, precision {q['precision']:.3f}, recall {q['recall']:.3f}"
          + (f", label agreement {metrics['label_agreement']['overall']:.3f}" if "label_agreement" in metrics else ""))


if __name__ == "__main__":
    run_stage("evaluate", main)
