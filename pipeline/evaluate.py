"""Stage `evaluate`: D's confusion matrix, sample pictures and quality numbers, into the train run.

Run: python pipeline/evaluate.py --data data/prepared --train outputs/train \
         --classifier outputs/classifier/classifier.keras --out outputs/evaluate \
         --metrics metrics/evaluate.json --plots plots/evaluate
"""

import argparse
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.evaluation.stage import EvaluatePaths, evaluate_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True, help="train's output folder")
    for name in ("classifier", "out", "metrics", "plots"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    print(evaluate_stage(params, EvaluatePaths(args.data, args.train, args.classifier, args.out, args.metrics,
                                               args.plots)))


if __name__ == "__main__":
    run_stage("evaluate", main)
