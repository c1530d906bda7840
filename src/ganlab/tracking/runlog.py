"""One MLflow run per trained model: opened by `train`, added to by `evaluate` and `report`.

Tracking must never cost a trained model. Every write to the run is an
operation (a small JSON-able dict) that `RunLog` carries out at once; if the
tracking store fails, the operation is queued instead, the stage carries on,
and the queue is saved in `mlflow-pending/`. `make resend` (`ganlab.tools.resend`) replays it
once the store is back.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ganlab.core.files import read_json, write_json
from ganlab.tracking import store as tracking

log = logging.getLogger(__name__)

PENDING_DIR = "mlflow-pending"
# A live stage should notice an outage in seconds, not after the client's 7 retries with back-off.
LIVE_RETRIES = "2"


def numeric(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The entries MLflow can take as metrics, from the same dict DVC gets."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _now_ms() -> int:
    return int(time.time() * 1000)


def execute(run_id: str, op: dict, model: Any = None) -> Any:
    """Carry out one logging operation on run `run_id` (live, or replayed from a pending file)."""
    client = MlflowClient()
    kind = op["op"]
    now = _now_ms()
    if kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in op["params"].items()])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
    elif kind == "metrics":
        # Stamped when submitted, so a replay of a write that landed before its reply was lost
        # is the same row, which the store drops as a duplicate.
        stamp, step = op.get("timestamp", now), op.get("step") or 0
        client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v in op["metrics"].items()])
    elif kind == "artifact":
        client.log_artifact(run_id, op["path"], op["artifact_path"])
    elif kind == "image":
        _log_keyed_image(client, run_id, op, op.get("timestamp", now))
    elif kind == "model":
        return _log_model(run_id, op, model)
    elif kind == "register":
        from ganlab.tracking import registry

        # the logged model's own URI (models:/m-...): MLflow 3 keeps models outside the run's artifacts
        return registry.register_and_crown(op["model_uri"], op["name"], op["frechet_distance"],
                                           op.get("measure", ""))
    elif kind == "status":
        client.set_terminated(run_id, op["status"])
    else:
        raise ValueError(f"unknown logging operation {kind!r}")
    return None


def _log_keyed_image(client: MlflowClient, run_id: str, op: dict, stamp: int) -> None:
    """A keyed image with its iteration as the step, which the UI's image slider shows.

    `MlflowClient.log_image(key=, step=)` writes a PNG, then a WebP thumbnail, then a tag, naming
    the files with a random UUID: if the server goes after the PNG, the replay adds a second image
    for that step. The same files under names derived from the operation make a replay overwrite.
    """
    import uuid

    import PIL.Image
    from mlflow.tracking.multimedia import compress_image_size
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES

    key, step = op["key"].replace("/", "~"), op["step"]  # as log_image: a slash would make a folder
    name = f"{key}+step+{step}+timestamp+{stamp}+{uuid.uuid5(uuid.NAMESPACE_URL, f'{run_id}/{key}/{step}')}"
    image = PIL.Image.open(op["path"]).convert("RGB")
    with tempfile.TemporaryDirectory() as tmp:
        image.save(Path(tmp, f"{name}.png"))
        compress_image_size(image).save(Path(tmp, f"{name}+compressed.webp"))
        client.log_artifacts(run_id, tmp, "images")
    client.set_tag(run_id, MLFLOW_LOGGED_IMAGES, True)


def logged_model(run_id: str, name: str) -> Any:
    """The run's finished logged model called `name` (`.model_uri` leads to it), or None."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    models = mlflow.search_logged_models(
        experiment_ids=[MlflowClient().get_run(run_id).info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name}'", output_format="list")
    return next((m for m in models if m.status == LoggedModelStatus.READY), None)


def _log_model(run_id: str, op: dict, model: Any) -> Any:
    import keras
    import mlflow.keras
    from mlflow.models import infer_signature

    # A replay after a reply that got lost: the model is there already, and is not logged twice.
    if (done := logged_model(run_id, op["name"])) is not None:
        return done

    from ganlab.nets.models import is_conditional
    from ganlab.nets.saving import load_model

    model = model if model is not None else load_model(Path(op["path"]))
    rng = np.random.default_rng(0)
    x = {t.name: np.zeros((4, 1), np.int32) if t.name == "digit" else
         rng.standard_normal((4, *t.shape[1:])).astype(np.float32) for t in model.inputs}
    if not is_conditional(model):
        (x,) = x.values()
    y = np.asarray(model(x)).astype(np.float32)
    status = MlflowClient().get_run(run_id).info.status
    # log_model needs an active run; start_run would mark it FINISHED on exit, so put the status back.
    with mlflow.start_run(run_id=run_id):
        if op.get("service"):
            # Served requests give the digits as a flat list: [7, 3], not [[7], [3]].
            flat = {**x, "digit": x["digit"].ravel()} if is_conditional(model) else x
            info = _log_service(op, infer_signature(flat, y))
        else:
            info = mlflow.keras.log_model(model, name=op["name"], signature=infer_signature(x, y),
                                          pip_requirements=_requirements(keras.backend.backend()))
    MlflowClient().set_terminated(run_id, status)
    return info


def _requirements(backend: str) -> list[str]:
    """What a logged model needs, pinned to this environment. Listed, not inferred: MLflow infers them by
    loading the model in a subprocess that imports Keras and the backend again, seconds per model."""
    import importlib.metadata

    return [f"{name}=={importlib.metadata.version(name)}" for name in ("mlflow", "keras", "numpy", backend)]


def _log_service(op: dict, signature: Any) -> Any:
    """G as the pyfunc of `ganlab/tracking/serving.py`, which checks requests; what `make serve` serves."""
    import mlflow.pyfunc

    here = Path(__file__).parent
    backend = op["backend"]
    return mlflow.pyfunc.log_model(
        name=op["name"], python_model=str(here / "serving.py"), artifacts={"generator": op["path"]},
        code_paths=[str(here.parent / "nets" / "layers.py")], signature=signature,
        model_config={"keras_backend": backend}, pip_requirements=_requirements(backend))


class RunLog:
    """A failure-tolerant handle on one MLflow run: what cannot be logged now is queued for later."""

    def __init__(self, run_id: str, info: dict | None = None):
        self.run_id = run_id
        self.info = info or {"run_id": run_id}  # what train recorded in mlflow_run.json
        self.pending: list[dict] = []
        self.offline = False

    @classmethod
    def start(cls, experiment: str, run_id: str | None, run_name: str, tags: dict[str, str]) -> RunLog:
        """Open (or re-open, on resume) the run; StageError if the store is down at the start."""
        uri = tracking.tracking_uri()
        tracking.check_server(uri)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", LIVE_RETRIES)
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
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", LIVE_RETRIES)
        tracking.connect()
        return cls(info["run_id"], info)

    # ---- writes: carried out now, or queued
    def submit(self, op: dict, model: Any = None) -> Any:
        if not self.offline:
            try:
                return execute(self.run_id, op, model)
            except Exception as exc:  # any tracking failure: keep going, queue the rest
                self.offline = True
                log.warning("MLflow logging failed (%s: %s); carrying on, the rest is queued locally",
                            type(exc).__name__, tracking.redact(str(exc))[:200])
        self.pending.append(op)
        return None

    def log_params(self, params: dict[str, str]) -> None:
        self.submit({"op": "params", "params": params})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.submit({"op": "tags", "tags": tags})

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None, prefix: str = "") -> None:
        if flat := numeric(metrics, prefix):
            self.submit({"op": "metrics", "metrics": flat, "step": step, "timestamp": _now_ms()})

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.submit({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def log_image(self, path: Path, key: str, step: int) -> None:
        self.submit({"op": "image", "path": str(Path(path).resolve()), "key": key, "step": step,
                     "timestamp": _now_ms()})

    def log_model(self, model: Any, name: str, saved_at: Path) -> str | None:
        """Log a Keras model (saved at `saved_at`, which a replay loads); return its model URI."""
        info = self.submit({"op": "model", "name": name, "path": str(Path(saved_at).resolve())}, model)
        return info.model_uri if info else None

    def log_service(self, saved_at: Path, backend: str) -> str | None:
        """Log the generator saved at `saved_at` as the served pyfunc (`generator_service`); return its URI."""
        info = self.submit({"op": "model", "name": "generator_service", "path": str(Path(saved_at).resolve()),
                            "service": True, "backend": backend})
        return info.model_uri if info else None

    def register(self, model_uri: str, name: str, frechet_distance: float, measure: str = "") -> dict | None:
        return self.submit({"op": "register", "model_uri": model_uri, "name": name,
                            "frechet_distance": frechet_distance, "measure": measure})

    def end(self, status: str = "FINISHED") -> None:
        self.submit({"op": "status", "status": status})

    # ---- reads: nothing to queue
    def read(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        if self.offline:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            log.warning("MLflow read failed (%s); that part of the output is left out", type(exc).__name__)
            return None

    def save_pending(self, stage: str, folder: Path | None = None) -> Path | None:
        """Save what was not logged and say how to send it later; return the file, if any."""
        folder = folder or tracking.project_root() / PENDING_DIR
        path = folder / f"{stage}-{self.run_id}.json"
        if not self.pending:
            path.unlink(missing_ok=True)
            return None
        write_json(path, {"run_id": self.run_id, "stage": stage, "pending": self.pending})
        kinds = sorted({op["op"] for op in self.pending})
        log.warning("%d MLflow writes (%s) were not logged; outputs are complete locally and the writes are "
                    "queued in %s - run `make resend` once the tracking server is back",
                    len(self.pending), ", ".join(kinds), path)
        return path


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
