"""Stage `evaluate`: D's confusion matrix, sample pictures and quality numbers, into the train run.

Run: python pipeline/evaluate.py --data data/prepared --train outputs/train \
         --classifier outputs/classifier/classifier.keras --out outputs/evaluate \
         --metrics metrics/evaluate.json --plots plots/evaluate
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ganlab import evaluate as ev
from ganlab import tracking
from ganlab.cli import run_stage
from ganlab.config import load_params
from ganlab.data import load_split
from ganlab.files import write_json
from ganlab.plots import confusion_figure, neighbours_picture, save_figure, save_grid, save_image, tile
from ganlab.runlog import RunLog
from ganlab.saving import load_model


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
    x_test, _ = load_split(args.data, "test")
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_samples

    # Confusion matrix: real test images (never seen in training) against as many fresh fakes.
    real = np.asarray(x_test[:n])
    fakes = generator.predict(rng.standard_normal((n, z_dim)).astype(np.float32), batch_size=1000, verbose=0)
    sigmoid = lambda logits: 1 / (1 + np.exp(-np.asarray(logits, np.float64)))  # noqa: E731
    d_real = sigmoid(discriminator.predict(real, batch_size=1000, verbose=0))
    d_fake = sigmoid(discriminator.predict(fakes, batch_size=1000, verbose=0))
    cm = ev.confusion(d_real, d_fake)

    # Quality: generated vs test, and real train images vs test as the reference.
    ref_idx = np.sort(rng.choice(len(x_train), n, replace=False))
    quality = ev.quality_report(classifier, fakes, np.asarray(x_train[ref_idx]), real, cfg.pr_k, cfg.seed)
    metrics = {"confusion": cm, "quality": quality["generated"], "reference": quality["real_reference"],
               "noise": quality["noise_reference"]}
    write_json(args.metrics, metrics)

    # Pictures from fixed z, so that runs are comparable.
    args.out.mkdir(parents=True, exist_ok=True)
    z_fixed = np.random.default_rng(0).standard_normal((100, z_dim)).astype(np.float32)
    grids = generator.predict(z_fixed, verbose=0)
    pictures = [save_grid(grids, rows, args.out / f"grid_{rows}x{rows}.png") for rows in (4, 5, 10)]
    z_pairs = np.random.default_rng(1).standard_normal((cfg.n_interpolations, 2, z_dim)).astype(np.float32)
    strip = np.concatenate([generator.predict(ev.interpolate(a, b, 10), verbose=0) for a, b in z_pairs])
    pictures.append(save_image(tile(strip, cfg.n_interpolations, 10), args.out / "interpolation.png"))
    sample = grids[: cfg.n_neighbours]
    nearest = np.stack([x_train[i] for i in ev.nearest_neighbours(sample, x_train)])
    pictures.append(save_image(neighbours_picture(sample, nearest), args.out / "neighbours.png"))
    fig = confusion_figure(cm)
    pictures.append(save_figure(fig, args.out / "confusion.png"))

    # DVC's confusion template wants one row per judged image.
    args.plots.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "actual": ["real"] * n + ["fake"] * n,
        "predicted": np.where(np.concatenate([d_real.ravel(), d_fake.ravel()]) >= 0.5, "real", "fake"),
    }).to_csv(args.plots / "confusion.csv", index=False)

    run = RunLog.from_file(args.train / "mlflow_run.json")
    run.log_metrics(tracking.flatten_metrics(metrics), None, "eval_")
    for path in pictures:
        run.log_artifact(path, "evaluate")
    run.save_pending("evaluate")
    q, r = metrics["quality"], metrics["reference"]
    print(f"evaluate: D accuracy {cm['accuracy']:.3f}, "
          f"FD {q['frechet_distance']:.2f} (real {r['frechet_distance']:.2f}), "
          f"modes {q['modes_covered']}/10, precision {q['precision']:.3f}, recall {q['recall']:.3f}")


if __name__ == "__main__":
    run_stage("evaluate", main)
