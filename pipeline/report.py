"""Stage `report`: a readable report of this run, compared with the experiment's earlier runs.

Run: python pipeline/report.py --train outputs/train --evaluate outputs/evaluate --metrics metrics \
         --out reports
"""

import argparse
from pathlib import Path

import mlflow
import pandas as pd

from ganlab import tracking
from ganlab.cli import run_stage
from ganlab.config import load_params
from ganlab.files import read_json
from ganlab.report import Section, metric_rows, progression, runs_table, write_report
from ganlab.runlog import RunLog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--evaluate", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True, help="folder of the stages' metrics JSON")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    cfg, tcfg = params.report, params.train
    m_prep = read_json(args.metrics / "prepare.json", "prepare's manifest")
    m_train = read_json(args.metrics / "train.json", "train's metrics")
    m_eval = read_json(args.metrics / "evaluate.json", "evaluate's metrics")
    m_clf = read_json(args.metrics / "classifier.json", "classifier's metrics")
    run = RunLog.from_file(args.train / "mlflow_run.json")
    info = run.info
    args.out.mkdir(parents=True, exist_ok=True)

    mlrun = run.read(mlflow.get_run, run.run_id)
    tags = mlrun.data.tags if mlrun else {}
    runs = run.read(mlflow.search_runs, experiment_ids=[info.get("experiment_id")],
                    max_results=cfg.max_runs, order_by=["start_time DESC"])
    champion = None
    if cfg.register and info.get("generator_uri"):
        champion = run.register(info["generator_uri"], cfg.registered_model, m_eval["quality"]["frechet_distance"])

    exp_page = f"http://127.0.0.1:5000/{tracking.ui_link(info.get('experiment_id', ''))}"
    link = f"{exp_page.replace('?', f'/runs/{run.run_id}?')} (after `make ui`; all runs: {exp_page})"
    cm = m_eval["confusion"]
    identity = [
        f"MLflow run `{run.run_id}`: {link}",
        f"git commit `{tags.get('git_commit', 'unknown')[:12]}`"
        + (" (uncommitted changes)" if tags.get("git_dirty") == "true" else ""),
        f"data: MNIST from `{m_prep['source']}`, hash `{m_prep['data_hash']}`, "
        f"{m_prep['counts']['train']:,} train / {m_prep['counts']['test']:,} test images",
        f"model `{tcfg.model}`, {m_train['iterations']:,} iterations, D schedule `{tcfg.d_schedule}`, "
        f"seed {tcfg.seed}",
        f"device {tags.get('device', '?')} ({tags.get('strategy', '?')}, {tags.get('precision', '?')}), "
        f"{m_train['iterations_per_s']} iterations/s",
    ]
    if m_train.get("resumed"):
        identity.append(f"resumed from a checkpoint at iteration {tags.get('resumed_at', '?')}")
    if champion:
        identity.append(f"registry: `{cfg.registered_model}` version {champion['version']}"
                        f"{', now the champion' if champion['champion'] else ''}")
    grids = sorted((args.train / "samples").glob("iter_*.png"))
    prog = progression(grids, args.out / "progression.png")
    sections = [
        Section("Run", [("p", line) for line in identity]),
        Section("Training curves", [("img", args.train / "loss.png", "Losses per sample interval"),
                                    ("img", args.train / "accuracy.png", "Discriminator accuracy on real and fake")]),
        Section("Samples over training", [("img", prog, "Sample grids from the fixed z")] if prog else []),
        Section("Final samples", [("img", args.evaluate / "grid_10x10.png", "100 samples from a fixed z"),
                                  ("img", args.evaluate / "interpolation.png", "Latent interpolations"),
                                  ("img", args.evaluate / "neighbours.png",
                                   "Samples (top) and their nearest training images (bottom)")]),
        Section("Discriminator on real test images vs fresh fakes", [
            ("p", f"TP {cm['tp']}, FN {cm['fn']}, TN {cm['tn']}, FP {cm['fp']}: accuracy {cm['accuracy']:.3f}, "
                  f"precision {cm['precision']:.3f}, recall {cm['recall']:.3f}, F1 {cm['f1']:.3f}; "
                  f"mean D(x) on real {cm['mean_d_real']:.3f}, on fake {cm['mean_d_fake']:.3f}."),
            ("img", args.evaluate / "confusion.png", "Confusion matrix")]),
        Section("Sample quality", [
            ("p", f"Measured with a CNN classifier ({m_clf['test_accuracy']:.2%} test accuracy) on "
                  f"{params.evaluate.n_samples:,} generated images against the test set; the real-data column "
                  "is train images measured the same way, the noise column uniform noise images."),
            ("table", metric_rows(m_eval["quality"], m_eval["reference"], m_eval.get("noise", {})))]),
        Section("Runs in this experiment", [("table", runs_table(runs, run.run_id) if runs is not None else
                                             pd.DataFrame())]),
    ]
    md, page = args.out / "report.md", args.out / "report.html"
    write_report(f"ganlab report: {tcfg.model}", sections, md, page)
    run.log_artifact(page, "report")
    run.log_artifact(md, "report")
    run.save_pending("report")
    print(f"report: {page.resolve()}\n  MLflow: run `make ui`, then open {exp_page}")


if __name__ == "__main__":
    run_stage("report", main)
