"""Stage `report`: a readable report of this run, compared with the experiment's earlier runs.

Run: python pipeline/report.py --train outputs/train --evaluate outputs/evaluate --metrics metrics \
         --out reports
"""

import argparse
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.report.stage import report_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--evaluate", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True, help="folder of the stages' metrics JSON")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(report_stage(load_params(args.params), args.train, args.evaluate, args.metrics, args.out))


if __name__ == "__main__":
    run_stage("report", main)
