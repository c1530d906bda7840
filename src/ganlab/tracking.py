"""MLflow plumbing: where the store is, what every run is tagged with, secrets kept out."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
_SECRET_IN_URI = re.compile(r"(//[^/@:]*:)[^@/]*@")


def project_root() -> Path:
    """The main project's root, also from inside a `dvc exp run --queue` temporary workspace.

    DVC sets DVC_ROOT for every stage command, and points it at the parent repo for queued
    experiments; outside DVC, the git top level (or the current folder) stands in.
    """
    if root := os.environ.get("DVC_ROOT"):
        return Path(root)
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        return Path(top.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the project's `sqlite:///<root>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / DEFAULT_DB}"


def redact(text: str) -> str:
    """Hide a password in a URI (`scheme://user:secret@host` -> `scheme://user:***@host`)."""
    return _SECRET_IN_URI.sub(r"\1***@", text)


def connect() -> str:
    """Point MLflow at the store; return its URI."""
    # MLflow prints "View run at <tracking URI>", password and all: never let it.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def setup(experiment: str) -> str:
    """Point MLflow at the store and experiment (created if new); return the experiment id."""
    uri = connect()
    if mlflow.get_experiment_by_name(experiment) is None:
        # A SQLite store puts a new experiment's artifacts under ./mlruns of whatever folder creates it:
        # for a queued experiment, a temporary copy that DVC deletes. Anchor them in the project.
        location = (project_root() / "mlruns" / experiment).as_uri() if uri.startswith("sqlite:") else None
        try:
            MlflowClient().create_experiment(experiment, artifact_location=location)
        except MlflowException:
            pass  # created meanwhile by a parallel queued experiment
    return mlflow.set_experiment(experiment).experiment_id


def git_info() -> dict[str, str]:
    """The commit and whether the working tree has changes, for run tags."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def dvc_experiment() -> dict[str, str]:
    """The DVC experiment this stage runs in, as run tags: DVC puts its name and baseline in the
    environment of `dvc exp run`; a plain `dvc repro` or a direct call has neither."""
    names = {"DVC_EXP_NAME": "dvc_experiment", "DVC_EXP_BASELINE_REV": "dvc_baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


UI = "http://127.0.0.1:5000"  # where `make ui` serves


def ui_link(experiment_id: str) -> str:
    """The MLflow UI page of an experiment's training runs (not the GenAI views it opens on by default)."""
    return f"{UI}/#/experiments/{experiment_id}?workflowType=machine_learning" if experiment_id else UI


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"confusion": {"tp": 1}} -> {"confusion.tp": 1}: MLflow keys for a nested DVC metrics dict."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten_metrics(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def main() -> None:
    """Print where to look after a run: the report and the MLflow page of its training runs."""
    import json

    root = project_root()
    try:
        exp = json.loads((root / "outputs/train/mlflow_run.json").read_text()).get("experiment_id", "")
    except (OSError, ValueError):
        exp = ""
    print(f"report: {root / 'reports/report.html'}")
    print(f"  MLflow: run `make ui`, then open {ui_link(exp)}")


if __name__ == "__main__":
    main()
