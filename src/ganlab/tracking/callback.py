"""The train stage's MLflow run as a Keras callback: opened (or re-opened on resume) when the run starts,
a row and a grid at every interval, the summary and the models at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from ganlab.tracking.runlog import RunLog, write_run_info
from ganlab.training.callbacks import RunCallback


class TrainTracking(RunCallback):
    """The train stage's MLflow side as a training callback: one run per model, re-opened on resume."""

    def __init__(self, experiment: str, run_name: str, params: dict[str, str], tags: dict[str, str],
                 info_file: Path):
        super().__init__()
        self.experiment, self.run_name, self.params, self.tags = experiment, run_name, params, tags
        self.info_file = info_file
        self.run: RunLog | None = None

    def on_run_start(self, state: dict) -> dict:
        """Open the run once the checkpoint state is known; return the state to checkpoint with it."""
        tags = {**self.tags, **{k: str(v) for k, v in state["device"].items()}}
        # MLflow params are immutable: a checkpoint extended with other params gets a run of its own.
        same = state.get("logged_params") == self.params
        self.run = RunLog.start(self.experiment, state.get("mlflow_run_id") if same else None, self.run_name, tags)
        if not same:
            self.run.log_params(self.params)
        if state.get("resumed_at"):
            # The run goes on under this attempt's name and tags (its DVC experiment, device, commit),
            # not those of the attempt that was stopped.
            self.run.set_tags({**tags, "mlflow.runName": self.run_name, "resumed": "true",
                               "resumed_at": ",".join(map(str, state["resumed_at"]))})
        write_run_info(self.info_file, self.run.run_id)
        return {**state, "mlflow_run_id": self.run.run_id, "logged_params": self.params}

    def on_first_grid(self, grid: Path) -> None:
        self.run.log_image(grid, "samples", 0)

    def on_interval(self, row: dict, grid: Path) -> None:
        self.run.log_metrics({k: v for k, v in row.items() if k != "iteration"}, row["iteration"])
        self.run.log_image(grid, "samples", row["iteration"])

    def stopped(self, exc: BaseException) -> None:
        # Never leave the run "running": an interrupted run is KILLED, anything else FAILED.
        if self.run:
            self.run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            self.run.save_pending("train")

    def finish(self, metrics: dict, figures: list[Path], models: dict[str, tuple[Any, Path]],
               fine: Any = None) -> str:
        """Log the summary, figures and models (and `fine`, the losses at a finer step than the interval,
        as `fine_<loss>`); close the run; return its id."""
        run = self.run
        run.log_metrics(metrics, None, "train_")
        for row in ([] if fine is None else fine.to_dict("records")):
            run.log_metrics({k: v for k, v in row.items() if k != "iteration"}, int(row["iteration"]), "fine_")
        for path in figures:
            run.log_artifact(path, "plots")
        uris = {f"{name}_uri": uri for name, (model, saved) in models.items()
                if (uri := run.log_model(model, name, saved))}
        if "generator" in models and (uri := run.log_service(models["generator"][1], keras.backend.backend())):
            uris["generator_service_uri"] = uri
        # Later stages (sampling, the report) find the logged models through these URIs.
        write_run_info(self.info_file, run.run_id, **uris)
        run.end("FINISHED")
        run.save_pending("train")
        return run.run_id
