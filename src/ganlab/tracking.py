"""MLflow plumbing: where the store is, what every run is tagged with, secrets kept out."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import mlflow

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
_SECRET_IN_URI = re.compile(r"(//[^/@:]*:)[^@/]*@")


def project_root() -> Path:
    """The main checkout's root, also from inside a `dvc exp run --queue` temp workspace."""
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        return Path(common).parent
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the project's `sqlite:///<root>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / DEFAULT_DB}"


def redact(text: str) -> str:
    """Hide a password in a URI (`scheme://user:secret@host` -> `scheme://user:***@host`)."""
    return _SECRET_IN_URI.sub(r"\1***@", text)


def setup(experiment: str) -> str:
    """Point MLflow at the store and experiment; return the experiment id."""
    mlflow.set_tracking_uri(tracking_uri())
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


def log_metrics(metrics: dict[str, Any], step: int | None = None, prefix: str = "") -> None:
    """Log the numeric entries of `metrics` (the same dict DVC gets) to the active run."""
    flat = {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if flat:
        mlflow.log_metrics(flat, step=step)


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"confusion": {"tp": 1}} -> {"confusion.tp": 1}: MLflow keys for a nested DVC metrics dict."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten_metrics(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
