"""Stage `report`: a readable report of this run, compared with the experiment's earlier runs.

Run: python pipeline/report.py --train outputs/train --evaluate outputs/evaluate --metrics metrics \
         --out reports
"""

import argparse
from pathlib import Path

import mlflow

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.core.files import read_json
from ganlab.report.content import identity, sections, write_report
from ganlab.tracking import registry
from ganlab.tracking import store as tracking
from ganlab.tracking.runlog import RunLog, logged_model


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
    # The served pyfunc (it checks requests), or G's Keras flavour for a run logged before it existed.
    served = info.get("generator_service_uri") or info.get("generator_uri")
    if not served:  # logged later, by `make resend` after an outage: find it in the run
        found = run.read(logged_model, run.run_id, "generator_service")
        served = found.model_uri if found else None
    registered = registry.registered_name(cfg.registered_model, conditional="label_agreement" in m_eval)
    if cfg.register and served:
        measure = registry.measure_key(m_eval.get("measured_by", {}))
        champion = run.register(served, registered, m_eval["quality"]["frechet_distance"], measure)

    exp_id = info.get("experiment_id", "")
    exp_page = tracking.ui_link(exp_id)
    after = "" if tracking.ui_base() != tracking.UI else "after `make ui`; "
    link = f"{tracking.ui_link(exp_id, run.run_id)} ({after}all runs: {exp_page})"
    lines = identity(tcfg, m_prep, m_train, tags, run.run_id, link)
    if champion:
        lines.append(f"registry: `{registered}` version {champion['version']}"
                     f"{' (registered before)' if not champion['new'] else ''}, "
                     f"{'the champion' if champion['champion'] else 'not the champion'}: {champion['why']}")
    parts = sections(lines, args.train, args.evaluate, args.out, m_eval, m_clf, params.evaluate.n_samples, runs,
                     run.run_id, m_train)
    md, page = args.out / "report.md", args.out / "report.html"
    write_report(f"ganlab report: {tcfg.model}", parts, md, page)
    run.log_artifact(page, "report")
    run.log_artifact(md, "report")
    run.save_pending("report")
    print(f"report: {page.resolve()}\n  MLflow: {tracking.ui_advice(exp_id)}")


if __name__ == "__main__":
    run_stage("report", main)
