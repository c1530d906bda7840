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


def connect() -> str:
    """Point MLflow at the store; return its URI."""
    # MLflow prints "View run at <tracking URI>", password and all: never let it.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def setup(experiment: str) -> str:
    """Point MLflow at the store and experiment; return the experiment id."""
    connect()
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


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"confusion": {"tp": 1}} -> {"confusion.tp": 1}: MLflow keys for a nested DVC metrics dict."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten_metrics(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
