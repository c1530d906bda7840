"""MLflow plumbing: where the store is, what every run is tagged with, secrets kept out."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ganlab.core.files import StageError

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


def check_server(uri: str) -> None:
    """Fail fast, before any training, when the tracking store cannot be reached."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        with _creation_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # the client raises many types for a down server
        raise StageError(
            f"MLflow tracking store {redact(uri)} is unreachable ({type(exc).__name__}); "
            "start it or unset MLFLOW_TRACKING_URI to use the local mlflow.db"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store: parallel queued experiments that both find no
    mlflow.db race to create its tables, and the loser fails with "table already exists"."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(uri.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)  # lock the folder: no lock file left behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_store(experiment: str) -> None:
    """The checks `validate` makes before any stage deletes its outputs: the store answers, and a project
    store's experiment keeps its artifacts in this project, not in the folder it was copied from."""
    uri = tracking_uri()
    check_server(uri)
    if not uri.startswith("sqlite:///") or not Path(uri.removeprefix("sqlite:///")).exists():
        return
    found = MlflowClient(uri).get_experiment_by_name(experiment)
    location = found.artifact_location if found else ""
    if location.startswith("file://"):
        from urllib.parse import urlsplit
        from urllib.request import url2pathname

        here = project_root().resolve()
        folder = Path(url2pathname(urlsplit(location).path)).resolve()
        if here not in (folder, *folder.parents):
            raise StageError(
                f"{uri.removeprefix('sqlite:///')} was copied from another folder: experiment {experiment!r} "
                f"stores its artifacts in {folder.parent}; move mlflow.db and mlruns/ aside to start a store "
                f"of this folder's own, or set train.experiment to a new name")


PIPELINE_WRITES = ("dvc.lock", "metrics", "plots")


def git_info() -> dict[str, str]:
    """The commit and whether the working tree has changes, for run tags."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    commit = git("rev-parse", "HEAD") or "unknown"
    # What the pipeline itself writes (DVC's lock, the stages' metrics and plots) is not a change of the code.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in PIPELINE_WRITES))
    # Each line is "XY path"; git() strips the first line's leading blank (" M path"), so split on it.
    changed = [line.strip().split(maxsplit=1)[-1] for line in dirty.splitlines() if line.strip()]
    info = {"git_commit": commit, "git_dirty": str(bool(changed)).lower()}
    if changed:
        info["git_changed"] = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return info


def dvc_experiment() -> dict[str, str]:
    """The DVC experiment this stage runs in, as run tags: DVC puts its name and baseline in the
    environment of `dvc exp run`; a plain `dvc repro` or a direct call has neither."""
    names = {"DVC_EXP_NAME": "dvc_experiment", "DVC_EXP_BASELINE_REV": "dvc_baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


UI = "http://127.0.0.1:5000"  # where `make ui` serves


def ui_base() -> str:
    """Where the MLflow UI is: the tracking server itself (its address without credentials), or `make ui`."""
    from urllib.parse import urlsplit

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}{parts.path.rstrip('/')}"
    return UI


def ui_link(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment's training runs (not the GenAI views it opens on by default),
    or of one run."""
    if not experiment_id:
        return ui_base()
    run = f"/runs/{run_id}" if run_id else ""
    return f"{ui_base()}/#/experiments/{experiment_id}{run}?workflowType=machine_learning"


def ui_advice(experiment_id: str) -> str:
    """How to open the experiment's runs: straight from the tracking server, or after `make ui`."""
    link = ui_link(experiment_id)
    return f"open {link}" if ui_base() != UI else f"run `make ui`, then open {link}"


def run_link(experiment_id: str, run_id: str) -> str:
    """The run's page and its experiment's, with what to do first when the UI is `make ui`'s."""
    after = "" if ui_base() != UI else "after `make ui`; "
    return f"{ui_link(experiment_id, run_id)} ({after}all runs: {ui_link(experiment_id)})"


def main() -> None:
    """Print where to look after a run: the report and the MLflow page of its training runs."""
    import json

    root = project_root()
    try:
        exp = json.loads((root / "outputs/train/mlflow_run.json").read_text()).get("experiment_id", "")
    except (OSError, ValueError):
        exp = ""
    print(f"report: {root / 'reports/report.html'}")
    print(f"  MLflow: {ui_advice(exp)}")


if __name__ == "__main__":
    main()
