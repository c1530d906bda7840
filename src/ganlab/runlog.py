"""One MLflow run per trained model: opened by `train`, added to by `evaluate` and `report`.

Tracking must never cost a trained model: every call goes through `RunLog`,
which records what could not be logged instead of failing the stage.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from ganlab import tracking
from ganlab.files import StageError, read_json, write_json

log = logging.getLogger(__name__)


def check_server(uri: str) -> None:
    """Fail fast, before any training, when the tracking store cannot be reached."""
    # The client's default is 7 retries with back-off: minutes of silence before the first line.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # the client raises many types for a down server
        raise StageError(
            f"MLflow tracking store {tracking.redact(uri)} is unreachable ({type(exc).__name__}); "
            "start it or unset MLFLOW_TRACKING_URI to use the local mlflow.db"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RunLog:
    """A thin, failure-tolerant handle on one MLflow run."""

    def __init__(self, run_id: str, info: dict | None = None):
        self.run_id = run_id
        self.info = info or {"run_id": run_id}  # what train recorded in mlflow_run.json
        self.failed: list[str] = []

    @classmethod
    def start(cls, experiment: str, run_id: str | None, run_name: str, tags: dict[str, str]) -> RunLog:
        """Open (or re-open, on resume) the run; StageError if the store is down at the start."""
        uri = tracking.tracking_uri()
        check_server(uri)
        exp_id = tracking.setup(experiment)
        client = MlflowClient()
        if run_id:
            try:
                client.get_run(run_id)
            except Exception:
                run_id = None  # the old run is gone (another store?): start a new one
        if run_id:
            client.set_terminated(run_id, "RUNNING")
        else:
            run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        return cls(run_id)

    @classmethod
    def from_file(cls, path: Path) -> RunLog:
        """Re-attach to the run that `train` recorded in `path`."""
        info = read_json(path, "the MLflow run written by train")
        mlflow.set_tracking_uri(tracking.tracking_uri())
        return cls(info["run_id"], info)

    def call(self, what: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run one MLflow call for this run; on failure, remember `what` and carry on."""
        try:
            with mlflow.start_run(run_id=self.run_id):
                return fn(*args, **kwargs)
        except Exception as exc:  # any tracking failure: keep training, report later
            if not self.failed:
                log.warning("MLflow logging failed (%s: %s); continuing, outputs stay local",
                            type(exc).__name__, tracking.redact(str(exc))[:200])
            self.failed.append(what)
            return None

    def end(self, status: str = "FINISHED") -> None:
        try:
            MlflowClient().set_terminated(self.run_id, status)
        except Exception:
            self.failed.append(f"run status {status}")

    def report_failures(self, where: Path) -> None:
        """Write what was not logged to `where` and say how to upload it later."""
        if not self.failed:
            where.unlink(missing_ok=True)
            return
        write_json(where, {"run_id": self.run_id, "not_logged": self.failed})
        log.warning("%d MLflow calls failed (%s); everything is kept locally, and %s lists it - "
                    "re-run the stage with `dvc repro -f` once the tracking server is back",
                    len(self.failed), ", ".join(sorted(set(self.failed)))[:200], where)


def run_info(run_id: str) -> dict[str, str]:
    """What later stages need to find the run again (no secrets: the URI is redacted)."""
    return {"run_id": run_id, "tracking_uri": tracking.redact(tracking.tracking_uri()),
            "experiment_id": MlflowClient().get_run(run_id).info.experiment_id if run_id else ""}


def write_run_info(path: Path, run_id: str, **extra: str) -> None:
    try:
        info = run_info(run_id)
    except Exception:  # the store may be down: the run id alone still lets us retry later
        info = {"run_id": run_id, "tracking_uri": tracking.redact(tracking.tracking_uri())}
    write_json(path, {**info, **extra})
