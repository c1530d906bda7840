"""Stage `classifier`: train the small CNN that measures sample quality in `evaluate`.

Run: python pipeline/classifier.py --data data/prepared --out outputs/classifier --metrics metrics/classifier.json
"""

import argparse
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.core.files import write_json
from ganlab.data.arrays import load_split
from ganlab.evaluation.classifier import train_classifier
from ganlab.nets.saving import save_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    args = ap.parse_args()
    cfg = load_params(args.params).classifier
    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    model, metrics = train_classifier(cfg, x_train, y_train, x_test, y_test)
    save_model(model, args.out / "classifier.keras")
    write_json(args.metrics, metrics)
    print(f"classifier: test accuracy {metrics['test_accuracy']:.2%}")


if __name__ == "__main__":
    run_stage("classifier", main)
