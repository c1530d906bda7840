"""Stage `train`: train the GAN in params.yaml's `train` section and track it in MLflow.

Run: python pipeline/train.py --data data/prepared --out outputs/train \
         --checkpoints checkpoints/train --metrics metrics/train.json --plots plots/train \
         [--classifier outputs/classifier/classifier.keras]   (scores G at every sample interval)
"""

import argparse
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.training import backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    for name in ("data", "out", "checkpoints", "metrics", "plots"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    ap.add_argument("--classifier", type=Path, help="the classifier stage's model: G's quality over training")
    args = ap.parse_args()
    params = load_params(args.params)
    backend.use(backend.choose(params.train))
    # Imported only now: it imports Keras, which reads KERAS_BACKEND once.
    from ganlab.training.callbacks import stop_on_sigterm
    from ganlab.training.stage import TrainPaths, train_stage

    stop_on_sigterm()  # `dvc repro` and schedulers stop the stage with SIGTERM: save a checkpoint
    print(train_stage(params, TrainPaths(args.data, args.out, args.checkpoints, args.metrics, args.plots,
                                         args.classifier)))


if __name__ == "__main__":
    run_stage("train", main)
