"""Training: checkpoints and resume, divergence, and the callbacks around `GAN.fit()`.

The loop itself is the backend's (`GAN.run`: Keras' `fit()` on TensorFlow, a
`jax.jit` loop on JAX); one Keras epoch is one `sample_interval`. Side jobs (history, grids, checkpoints,
tracking, the progress bar) are Keras callbacks (`ganlab.training.callbacks`); a `RunCallback` also
hears of the run's start and of each interval's end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from ganlab.core.config import TrainConfig
from ganlab.core.files import StageError
from ganlab.nets import models
from ganlab.nets.specs import RESOLVED, SPECS, resolve
from ganlab.report.plots import save_grid
from ganlab.training.callbacks import (
    HISTORY_COLUMNS,
    IntervalCallback,
    LossSteps,
    ProgressBar,
    RunCallback,
    StopCheck,
    loss_step,
)
from ganlab.training.checkpoints import CHECKPOINT_FORMAT, Checkpoints
from ganlab.training.devices import select_device
from ganlab.training.gan import GAN

log = logging.getLogger(__name__)


def resolved(cfg: TrainConfig) -> TrainConfig:
    """`cfg` resolved (`ganlab.nets.specs.resolve`) for the backend Keras runs on: what `make_gan`,
    `fingerprint` and the loop take."""
    return resolve(cfg, keras.backend.backend())


def fingerprint(cfg: TrainConfig, data_hash: str) -> str:
    """What makes a checkpoint reusable: everything in the resolved `cfg` that changes the weights, but the
    run length unless the rates decay over it. (The precision and device that `auto` resolved to are
    checked against the checkpoint's.)"""
    keep = dataclasses.asdict(cfg)
    dropped = ["sample_interval", "checkpoint_interval", "grid_size", "resume", "experiment", "log_models",
               "steps_per_execution", "quality_samples", "keep"]
    if not cfg.lr_decay:  # a decaying rate's schedule spans the run's length: only then is the length hashed
        dropped.append("iterations")
    for key in dropped:
        keep.pop(key)
    if not keep["ema"]:  # 0 hashes as null, so checkpoints without an EMA keep their fingerprint
        keep["ema"] = None
    if not keep["lr_decay"]:  # constant rates are not hashed, so their checkpoints keep their fingerprint
        keep.pop("lr_decay")
    if not keep["label_smoothing"]:  # only a set smoothing is hashed: unsmoothed checkpoints match either way
        keep.pop("label_smoothing")
    if keep["g_top_k"] == 1:  # likewise: only a share below 1 is hashed
        keep.pop("g_top_k")
    if not keep["latent_modes"]:  # likewise: only a latent with a code is hashed
        keep.pop("latent_modes")
    else:  # with the code's form (`models._latent`), so a latent of another form is never read as this one
        keep["latent_code"] = "one_hot"
    if not keep["info_weight"]:  # likewise: only a set InfoGAN term is hashed
        keep.pop("info_weight")
    if keep["d_learning_rate"] == keep["learning_rate"]:  # likewise: one rate for both hashes as a null one
        keep.pop("d_learning_rate")
    keep["data_hash"] = data_hash
    keep["checkpoint_format"] = CHECKPOINT_FORMAT
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def weights_digest(gan: GAN) -> str:
    """A short hash of every weight (G, D and Q when there is one), to check that workers and replicas
    hold the same model."""
    reader = [] if gan.mode_reader is None else [gan.mode_reader]
    return models.weights_digest(gan.generator, gan.discriminator, *reader)


@keras.saving.register_keras_serializable("ganlab")
class LinearTail(keras.optimizers.schedules.LearningRateSchedule):
    """`rate` until the last `fraction` of `iterations`, then linearly down to zero at the run's end;
    keyed by the optimiser's own step count, which a checkpoint restores, over its steps per iteration."""

    def __init__(self, rate: float, iterations: int, fraction: float, steps_per_iteration: int = 1):
        self.rate, self.iterations, self.fraction = rate, iterations, fraction
        self.steps_per_iteration = steps_per_iteration

    def __call__(self, step):
        iteration = keras.ops.cast(step, "float32") / self.steps_per_iteration
        left = (self.iterations - iteration) / (self.iterations * self.fraction)
        return self.rate * keras.ops.clip(left, 0.0, 1.0)

    def get_config(self) -> dict:
        return {"rate": self.rate, "iterations": self.iterations, "fraction": self.fraction,
                "steps_per_iteration": self.steps_per_iteration}


def make_gan(cfg: TrainConfig, strategy, fused: bool = True) -> GAN:
    """Build and compile the GAN for the resolved `cfg` under `strategy` (weights seeded by cfg.seed), with
    the step of the backend Keras runs on (`ganlab.training.step_tensorflow` or `ganlab.training.step_jax`).
    `fused=False`: the DCGAN's G with the blog's UpSampling2D + Conv2D layers (the benchmark's comparison)."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise StageError(
            f"train.batch_size {cfg.batch_size} does not split over {strategy.num_replicas_in_sync} devices; "
            "use a multiple of the device count"
        )
    with strategy.scope():
        g, d = models.build(cfg.model, cfg.z_dim, cfg.width, fused, cfg.latent_modes)
        step = importlib.import_module(f"ganlab.training.step_{keras.backend.backend()}")
        spec = SPECS[cfg.model]
        on_tf = keras.backend.backend() == "tensorflow"
        # InfoGAN's Q, built after G and D, so theirs are the weights they have without it under one seed.
        reader = models.mode_reader(cfg.model, cfg.latent_modes, cfg.width) if cfg.info_weight else None
        gan = step.GAN(g, d, z_dim=cfg.z_dim, seed=cfg.seed, d_schedule=cfg.d_schedule,
                       conditional=spec.conditional, fakes_training=spec.fakes_training,
                       label_smoothing=cfg.label_smoothing, g_top_k=cfg.g_top_k,
                       mode_reader=reader,
                       info_weight=cfg.info_weight,
                       **({} if on_tf else {"replicas": strategy}))
        if cfg.ema:
            if on_tf and strategy.num_replicas_in_sync > 1:
                raise StageError("train.ema runs on one device on TensorFlow; set train.ema: 0, "
                                 "train.strategy: one_device, or train.backend: jax (EMA on every device)")
            gan.track_ema(cfg.ema)

        def adam(learning_rate, steps_per_iteration):
            if cfg.lr_decay:
                learning_rate = LinearTail(learning_rate, cfg.iterations, cfg.lr_decay, steps_per_iteration)
            opt = keras.optimizers.Adam(learning_rate, beta_1=cfg.beta_1)
            # float16 needs loss scaling to keep small gradients; bfloat16 has float32's range.
            if keras.mixed_precision.global_policy().name == "mixed_float16":  # TensorFlow only
                opt = keras.optimizers.LossScaleOptimizer(opt)
            return opt

        # Keras' multi-step loop fails to trace the replica id under MirroredStrategy: one step per call there.
        spe = (1 if on_tf and strategy.num_replicas_in_sync > 1
               else math.gcd(cfg.steps_per_execution, cfg.sample_interval))
        # D takes an optimiser step on real, then on fake, in each iteration of the book's schedule.
        d_steps = 2 if cfg.d_schedule == "two_step" else 1
        gan.compile(d_optimizer=adam(cfg.d_learning_rate, d_steps), g_optimizer=adam(cfg.learning_rate, 1),
                    batch_size=cfg.batch_size, jit_compile=cfg.jit_compile, steps_per_execution=spe)
        # Build optimizer slots now so a checkpoint can restore into them.
        gan.d_optimizer.build(d.trainable_variables)
        gan.g_optimizer.build(gan.g_variables())
    return gan


# ---------------------------------------------------------------- the run


@dataclass
class TrainResult:
    gan: GAN
    history: pd.DataFrame
    metrics: dict[str, Any]
    resumed_from: int
    state: dict
    chief: bool = True  # False on the other workers of a multi-worker run: they write no outputs


def train(cfg: TrainConfig, images: np.ndarray, data_hash: str, samples_dir: Path, ckpt_dir: Path,
          callbacks: tuple[keras.callbacks.Callback, ...] = (), labels: np.ndarray | None = None) -> TrainResult:
    """Train (or resume) the GAN in `cfg`, a resolved config (`resolved`), on `images` (with their digit
    `labels`, which a conditional model needs); return the model, history and summary metrics.

    `callbacks` are Keras callbacks, some with the run hooks the module docstring names (the MLflow
    run is one). A KeyboardInterrupt saves a checkpoint at the exact iteration and re-raises.
    """
    if cfg.backend == "auto" or any(getattr(cfg, key) is None for key in RESOLVED):
        raise ValueError("train() takes a resolved config: pass resolved(cfg)")
    if keras.backend.backend() != cfg.backend:
        raise StageError(f"train.backend is {cfg.backend} but Keras runs on {keras.backend.backend()}; "
                         f"run with KERAS_BACKEND={cfg.backend} (the train stage sets it from params)")
    if SPECS[cfg.model].conditional and (labels is None or len(labels) != len(images)):
        raise StageError(f"train.model {cfg.model} is conditional: it needs a digit label for every image")
    if cfg.batch_size > len(images):
        raise StageError(f"train.batch_size {cfg.batch_size} is larger than the {len(images)} training "
                         "images; lower train.batch_size")
    strategy, device = select_device(cfg)
    log.info("device %s, %s x%d, %s, jit=%s", device["device"], device["strategy"], device["replicas"],
             device["precision"], device["jit_compile"])
    gan = make_gan(cfg, strategy)
    fp = fingerprint(cfg, data_hash)
    chief = device["chief"]
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="ganlab-worker-"))
    if not chief:  # the other workers of a multi-worker run track nothing
        callbacks = tuple(cb for cb in callbacks if not isinstance(cb, RunCallback))
    try:
        return _train(cfg, gan, strategy, device, fp, (images, labels), samples_dir if chief else scratch / "samples",
                      Checkpoints(gan, ckpt_dir, scratch and scratch / "ckpt"), callbacks)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(cfg: TrainConfig, gan: GAN, strategy, device: dict, fp: str,
           data: tuple[np.ndarray, np.ndarray | None], samples_dir: Path, checkpoints: Checkpoints,
           callbacks: tuple[keras.callbacks.Callback, ...]) -> TrainResult:
    state = checkpoints.restore(fp, device) if cfg.resume else None
    fresh = state is None
    if fresh:
        checkpoints.clear()
        if samples_dir.exists():
            shutil.rmtree(samples_dir)
        state = {"fingerprint": fp}
    start = int(gan.iteration.numpy())
    history = [r for r in state.get("history", []) if r["iteration"] <= start]
    if start:
        log.info("resuming from checkpoint at iteration %d of %d", start, cfg.iterations)
        state.setdefault("resumed_at", []).append(start)
    state = {**state, "device": device}
    for cb in callbacks:
        cb.set_model(gan)  # before on_run_start, which may read the restored model
        if isinstance(cb, RunCallback):
            state = cb.on_run_start(state)
    samples_dir.mkdir(parents=True, exist_ok=True)
    # DVC deletes the outputs, grids included, before it re-runs the stage that resumes: take them back.
    checkpoints.restore_grids(samples_dir, start)

    with strategy.scope():
        gan.set_data(*data)
    fixed_z = np.random.default_rng(cfg.seed).standard_normal((cfg.grid_size**2, cfg.z_dim)).astype(np.float32)
    grid = samples_dir / f"iter_{start:06d}.png"
    if start % cfg.sample_interval == 0 and not grid.exists():
        # G as it is at `start`: before its first step (where the grids start, and MLflow's image card opens
        # at step 0), or stopped right at an interval's end before that interval's grid was drawn.
        save_grid(keras.ops.convert_to_numpy(gan.generate(fixed_z)), cfg.grid_size, grid)
    listeners = [cb for cb in callbacks if isinstance(cb, RunCallback)]
    if fresh:
        for cb in listeners:
            cb.on_first_grid(grid)
    interval_cb = IntervalCallback(cfg, history, fixed_z, samples_dir, checkpoints, state, listeners)
    bar = ProgressBar(cfg.iterations, start)
    # The losses at a finer step (kept in the checkpointed state, up to where this run starts). First, so that
    # what it holds back is in the state before the interval's checkpoint is written.
    state["loss_steps"] = [r for r in state.get("loss_steps", []) if r["iteration"] <= start]
    steps = LossSteps(loss_step(cfg.iterations, gan.most_steps_per_execution), cfg.iterations, start, state)
    all_callbacks = [StopCheck(), steps, interval_cb, bar, *callbacks]
    try:
        # A run stopped mid-interval first finishes that interval, so grids stay on the same iterations;
        # then whole intervals, then a short last one when sample_interval does not divide iterations.
        partial = min((cfg.sample_interval - start % cfg.sample_interval) % cfg.sample_interval,
                      cfg.iterations - start)
        if partial > 0:
            gan.run(1, partial, all_callbacks)
        remaining = (cfg.iterations - int(gan.iteration.numpy())) // cfg.sample_interval
        if remaining > 0:
            gan.run(remaining, cfg.sample_interval, all_callbacks)
        tail = cfg.iterations - int(gan.iteration.numpy())
        if tail > 0:
            gan.run(1, tail, all_callbacks)
    except KeyboardInterrupt:
        it = int(gan.iteration.numpy())
        steps.hold()
        interval_cb.save(it)
        StopCheck.requested = False  # acted on: a later run in this process starts clear
        log.warning("interrupted at iteration %d; checkpoint saved in %s", it, checkpoints.folder)
        raise
    finally:
        bar.close()
    seconds = interval_cb.prior_seconds + time.perf_counter() - interval_cb.t0
    done = int(gan.iteration.numpy())
    # The losses, then what callbacks added to each row (G's quality scores, `ganlab.training.watch`).
    extra = list(dict.fromkeys(k for row in history for k in row if k not in HISTORY_COLUMNS))
    hist = pd.DataFrame(history, columns=HISTORY_COLUMNS + extra)
    last = hist.iloc[-1] if len(hist) else pd.Series(dtype=float)
    metrics = {
        "iterations": int(gan.iteration.numpy()),
        # Unknown when resuming a checkpoint that predates time-keeping.
        "iterations_per_s": round(done / seconds, 2) if done and (not start or interval_cb.prior_seconds) else None,
        "train_seconds": round(seconds, 2),
        "final_d_loss": _f(last.get("d_loss")),
        "final_g_loss": _f(last.get("g_loss")),
        "final_d_acc": _f(last.get("d_acc")),
        "final_d_acc_real": _f(last.get("d_acc_real")),
        "final_d_acc_fake": _f(last.get("d_acc_fake")),
        "min_g_loss": _f(hist["g_loss"].min()) if len(hist) else None,
        "resumed": bool(state.get("resumed_at")),
    }
    return TrainResult(gan, hist, metrics, start, state, device["chief"])


def _f(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 5)
