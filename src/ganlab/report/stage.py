"""The report stage's work: register G, and write the run's report, compared with the experiment's runs."""

from __future__ import annotations

from pathlib import Path

import mlflow

from ganlab.core.config import Params
from ganlab.core.files import read_json
from ganlab.report.content import identity, sections, write_report
from ganlab.tracking import registry
from ganlab.tracking import store as tracking
from ganlab.tracking.runlog import RunLog, logged_model


def report_stage(params: Params, train_dir: Path, evaluate_dir: Path, metrics_dir: Path, out: Path) -> str:
    """Register the served G (its champion among versions measured alike), write report.md and
    report.html into `out` and the MLflow run; return where the report and the runs are."""
    cfg, tcfg = params.report, params.train
    m_prep = read_json(metrics_dir / "prepare.json", "prepare's manifest")
    m_train = read_json(metrics_dir / "train.json", "train's metrics")
    m_eval = read_json(metrics_dir / "evaluate.json", "evaluate's metrics")
    m_clf = read_json(metrics_dir / "classifier.json", "classifier's metrics")
    run = RunLog.from_file(train_dir / "mlflow_run.json")
    info = run.info
    out.mkdir(parents=True, exist_ok=True)

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
    lines = identity(tcfg, m_prep, m_train, tags, run.run_id, tracking.run_link(exp_id, run.run_id))
    if champion:
        lines.append(f"registry: `{registered}` version {champion['version']}"
                     f"{' (registered before)' if not champion['new'] else ''}, "
                     f"{'the champion' if champion['champion'] else 'not the champion'}: {champion['why']}")
    parts = sections(lines, train_dir, evaluate_dir, out, m_eval, m_clf, params.evaluate.n_samples, runs,
                     run.run_id, m_train)
    md, page = out / "report.md", out / "report.html"
    write_report(f"ganlab report: {tcfg.model}", parts, md, page)
    run.log_artifact(page, "report")
    run.log_artifact(md, "report")
    run.save_pending("report")
    return f"report: {page.resolve()}\n  MLflow: {tracking.ui_advice(exp_id)}"
