"""The train stage's work: train (or resume) the GAN in params, write its outputs, track it in MLflow.

Imports Keras: the stage script sets the backend first (`ganlab.training.backend.use`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ganlab.core.config import Params
from ganlab.core.files import write_json
from ganlab.data.arrays import data_info, load_split
from ganlab.nets.models import portable
from ganlab.nets.saving import save_model
from ganlab.report.plots import history_figures, save_figure
from ganlab.tracking import store as tracking
from ganlab.tracking.callback import TrainTracking
from ganlab.tracking.naming import logged_params, run_name
from ganlab.training.callbacks import STEP_COLUMNS
from ganlab.training.train import resolved, train, weights_digest
from ganlab.training.watch import quality_watch


@dataclass(frozen=True)
class TrainPaths:
    data: Path
    out: Path
    checkpoints: Path
    metrics: Path
    plots: Path
    classifier: Path | None = None  # G's quality over training, when given


def train_stage(params: Params, paths: TrainPaths) -> str:
    """Train, save G (and its EMA) as stock Keras and D, the history and its figures, the metrics DVC and
    MLflow both get; close the MLflow run; return the stage's one-line summary."""
    data_hash = data_info(paths.data)["data_hash"]
    images, labels = load_split(paths.data, "train")
    cfg = resolved(params.train)
    dvc_exp = tracking.dvc_experiment()
    tags = {**tracking.git_info(), **dvc_exp, "data_hash": data_hash, "model": cfg.model, "backend": cfg.backend}
    mlrun = TrainTracking(cfg.experiment, run_name(cfg, dvc_exp.get("dvc_experiment")),
                          logged_params(params, cfg), tags, paths.out / "mlflow_run.json")
    # First, so that the scores it adds to each interval's row reach MLflow too.
    watch = quality_watch(paths.classifier, paths.data, cfg, paths.checkpoints)  # () without a classifier
    try:
        result = train(cfg, images, data_hash, paths.out / "samples", paths.checkpoints,
                       callbacks=(*watch, mlrun), labels=labels)
    except BaseException as exc:
        mlrun.stopped(exc)
        raise
    if not result.chief:
        # Another worker of a multi-worker run: the chief writes the outputs and the MLflow run.
        return (f"train: worker finished {result.metrics['iterations']} iterations, "
                f"weights digest {weights_digest(result.gan)}")
    last = result.metrics["iterations"]
    if watch:
        result.metrics.update(watch[0].summary(last))
        result.metrics["kept_iteration"] = watch[0].restore_best() if cfg.keep != "last" else last
    # G as stock Keras layers (the same weights and outputs): the saved file loads without ganlab.
    gens = {"generator": result.gan.generator, "generator_ema": result.gan.generator_ema}
    nets = {name: portable(cfg.model, g, cfg.z_dim, cfg.width, cfg.latent_modes)
            for name, g in gens.items() if g is not None}
    nets["discriminator"] = result.gan.discriminator
    models = {name: (model, paths.out / f"{name}.keras") for name, model in nets.items()}
    for model, path in models.values():
        save_model(model, path)
    paths.plots.mkdir(parents=True, exist_ok=True)
    result.history.to_csv(paths.plots / "history.csv", index=False)
    fine = pd.DataFrame(result.state["loss_steps"], columns=STEP_COLUMNS)
    fine.to_csv(paths.plots / "losses.csv", index=False)
    figures = [save_figure(fig, paths.out / f"{name}.png") for name, fig in history_figures(result.history).items()]
    device = result.state["device"]
    digest = weights_digest(result.gan)
    # The run id lets `dvc exp show` lead to the MLflow run of each experiment.
    metrics = {**result.metrics, "model": cfg.model, "backend": device["backend"], "precision": device["precision"],
               "onednn": device["onednn"],
               "mlflow_run_id": mlrun.run.run_id if mlrun.run else None, "weights_digest": digest,
               **{f"device_{k}": v for k, v in device.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    write_json(paths.metrics, metrics)
    run_id = mlrun.finish(metrics, figures, models if cfg.log_models else {}, fine)
    # The outputs now hold the finished run. A checkpoint left behind would make the next re-run
    # (after a code change, say) "resume" at the last iteration and train nothing.
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    best = (f", best FD{' (EMA)' if metrics.get('best_by_ema') else ''} {metrics['best_frechet_distance']:.2f} "
            f"at iteration {metrics['best_iteration']} "
            f"(kept: {metrics['kept_iteration']})" if "best_iteration" in metrics else "")
    return (f"train: {metrics['iterations']} iterations, {metrics['iterations_per_s']} it/s{best}, "
            f"MLflow run {run_id}, weights digest {digest}")
