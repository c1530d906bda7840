"""Compare this experiment's MLflow runs: a table on the terminal and a bar chart of chosen metrics.

Run: python -m ganlab.tools.compare [--experiment ganlab] [--metrics FD,precision,recall] [--out compare.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import pandas as pd

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.core.files import StageError
from ganlab.report.content import RUN_COLUMNS, runs_table
from ganlab.report.plots import plt, save_figure
from ganlab.tracking import store as tracking

SHORT = {"FD": "metrics.eval_quality.frechet_distance", "precision": "metrics.eval_quality.precision",
         "recall": "metrics.eval_quality.recall", "coverage": "metrics.eval_quality.coverage",
         "modes": "metrics.eval_quality.modes_covered",
         "score": "metrics.eval_quality.classifier_score", "it/s": "metrics.train_iterations_per_s"}


def runs_frame(experiment: str, max_runs: int = 50) -> pd.DataFrame:
    """The experiment's runs, newest first: the report's runs table (names, key metrics, what differs)."""
    tracking.connect()
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=max_runs, order_by=["start_time DESC"])
    if runs.empty:
        raise StageError(f"no runs in MLflow experiment {experiment!r} yet; run `make run` first")
    return runs_table(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=None, help="defaults to train.experiment in params.yaml")
    ap.add_argument("--metrics", default="FD,precision,recall", help=f"comma list of {', '.join(SHORT)}")
    ap.add_argument("--out", type=Path, default=Path("compare.png"))
    args = ap.parse_args()
    experiment = args.experiment or load_params().train.experiment
    table = runs_frame(experiment)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns="").to_string(index=False))
    chosen = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in SHORT]
    if unknown:
        raise StageError(f"unknown metric {unknown[0]!r} for --metrics; use {', '.join(SHORT)}")
    heads = [RUN_COLUMNS[SHORT[m]] for m in chosen if RUN_COLUMNS[SHORT[m]] in table.columns]
    # A label tells the runs apart: the experiment's (or run's) name, and the run id where names repeat.
    labels = table["name"].where(~table["name"].duplicated(keep=False), table["name"] + " " + table["run_id"])
    fig, axes = plt.subplots(1, max(1, len(heads)), figsize=(4 * max(1, len(heads)), 3.2), squeeze=False)
    for ax, head in zip(axes[0], heads):
        ax.barh(labels, table[head].astype(float))
        ax.set_title(head, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"compare: {len(table)} runs; plot in {args.out}")


if __name__ == "__main__":
    run_stage("compare", main)
