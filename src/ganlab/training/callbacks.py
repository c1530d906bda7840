"""The callbacks around `GAN.run`: a declared interface for the run's own hooks, the interval's work
(history, grid, NaN check, checkpoint), one progress bar for the whole run, and SIGTERM as Ctrl-C."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from ganlab.core.config import TrainConfig
from ganlab.core.files import StageError
from ganlab.report.plots import save_grid
from ganlab.training.checkpoints import Checkpoints
from ganlab.training.gan import HISTORY_METRICS

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["iteration", *HISTORY_METRICS]


class Diverged(StageError):
    """A loss became NaN or infinite."""


def stop_on_sigterm() -> None:
    """Treat SIGTERM (`dvc repro` and schedulers stopping the stage) as Ctrl-C, so that the run saves a
    checkpoint. Python raises from a handler wherever the main thread is, and an exception raised inside
    code that discards errors (a finalizer, say) is lost: in a `make test` on 2 AMD EPYC (Zen 4) cores,
    2026-12-02, a stage trained to its end after one. `StopCheck` raises it again at the end of the next
    compiled call."""
    def handler(signum, frame):
        StopCheck.requested = True  # a plain flag: a second SIGTERM inside a lock's set() would hang
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class StopCheck(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of a compiled call once `stop_on_sigterm`'s handler has run;
    `train` lowers the flag when it has saved the checkpoint."""

    requested = False

    def on_train_batch_end(self, batch, logs=None):
        if StopCheck.requested:
            raise KeyboardInterrupt


class RunCallback(keras.callbacks.Callback):
    """A Keras callback that also hears of the run: `on_run_start` once the checkpoint state is known (what
    it returns is checkpointed; the model is set by then), `on_first_grid` with the grid drawn before the
    first step, and `on_interval` at the end of each interval with its history row (which it may add to)
    and grid. Only the chief of a multi-worker run has them."""

    def on_run_start(self, state: dict) -> dict:
        return state

    def on_interval(self, row: dict, grid: Path) -> None:
        pass

    def on_first_grid(self, grid: Path) -> None:
        """The grid of G before its first step (iteration 0), in a run that starts from scratch."""


class IntervalCallback(keras.callbacks.Callback):
    """At the end of each sample interval: record history, save the grid, check for NaN, checkpoint."""

    def __init__(self, cfg: TrainConfig, history: list[dict], fixed_z: np.ndarray, samples_dir: Path,
                 checkpoints: Checkpoints, state: dict, listeners: list[RunCallback]):
        super().__init__()
        self.cfg, self.history, self.fixed_z = cfg, history, fixed_z
        self.samples_dir, self.checkpoints, self.state = samples_dir, checkpoints, state
        self.listeners = listeners
        self.last_good = state.get("last_checkpoint", 0)
        self.prior_seconds = state.get("train_seconds", 0.0)
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        it = int(self.model.iteration.numpy())
        row = {"iteration": it, **{k: float(logs[k]) for k in self.model.history_metrics}}
        if not all(math.isfinite(v) for v in row.values()):
            self.model.stop_training = True
            bad = ", ".join(k for k, v in row.items() if not math.isfinite(v))
            raise Diverged(
                f"training diverged near iteration {it} ({bad} not finite); the last good checkpoint "
                f"(iteration {self.last_good}) is kept in {self.checkpoints.folder}; "
                "lower train.learning_rate or change train.seed, then re-run"
            )
        self.history.append(row)
        grid = save_grid(keras.ops.convert_to_numpy(self.model.generate(self.fixed_z)), self.cfg.grid_size,
                         self.samples_dir / f"iter_{it:06d}.png")
        for cb in self.listeners:
            cb.on_interval(row, grid)
        if it % self.cfg.checkpoint_interval == 0 or it >= self.cfg.iterations:
            self.save(it)

    def save(self, it: int) -> None:
        self.last_good = it
        self.state["last_checkpoint"] = it
        # Training time across every resumed segment, so iterations/s stays honest after a resume.
        self.state["train_seconds"] = self.prior_seconds + time.perf_counter() - self.t0
        self.state["history"] = self.history
        self.checkpoints.save(it, self.state, self.samples_dir)


STEP_COLUMNS = ["iteration", "d_loss", "g_loss", "d_acc"]


def loss_step(iterations: int, steps_per_execution: int, points: int = 100) -> int:
    """Iterations between two rows of `LossSteps`: about `points` rows a run, whole compiled calls each."""
    return steps_per_execution * max(1, math.ceil(iterations / points / steps_per_execution))


class LossSteps(keras.callbacks.Callback):
    """The losses at a finer step than the sample interval, so a short run still draws a curve: the mean
    over each `every` iterations (and a last, shorter row at `last`), taken from the running means of the
    interval that both backends report after each compiled call. A window that crosses an interval's end
    carries on into the next; the iterations not yet in a row are kept in `state["loss_pending"]` at each
    interval's end (and by `hold` on an interrupt), and `state["loss_steps"]` holds the rows, so a run
    resumed from a checkpoint writes what an unbroken one would."""

    def __init__(self, every: int, last: int, start: int, state: dict):
        super().__init__()
        self.every, self.last, self.state = every, last, state
        self.rows = state["loss_steps"]
        self.carry = self._kept_at(start)  # what came before `start` and is in no row yet
        self.logs = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = int(self.model.iteration.numpy())
        carried, sums = self.carry
        # Iterations into the interval: done, and up to the last row (below 0: carried from before).
        self.n, self.n_logged = 0, -carried
        self.sums_logged = {k: -sums.get(k, 0.0) for k in STEP_COLUMNS[1:]}
        self.carry, self.logs = (0, {}), None

    def on_train_batch_end(self, batch, logs=None):
        before, self.n = self.n, self.n + self.model.steps_per_execution
        self.logs = logs
        crossed = (self.start + self.n) // self.every != (self.start + before) // self.every
        if not logs or not (crossed or self.start + self.n >= self.last):
            return
        # The interval's running mean times its length is a running sum; two sums give the window's mean.
        sums = self._sums(logs)
        window = self.n - self.n_logged
        self.rows.append({"iteration": self.start + self.n,
                          **{k: (sums[k] - self.sums_logged[k]) / window for k in sums}})
        self.sums_logged, self.n_logged = sums, self.n

    def on_epoch_end(self, epoch, logs=None):
        self.hold()
        self.carry = self._kept_at(self.start + self.n)

    def hold(self) -> None:
        """Keep the iterations done since the last row in the state (before a checkpoint is written)."""
        if self.logs is None:
            return
        sums = self._sums(self.logs)
        self.state["loss_pending"] = {"iteration": self.start + self.n, "n": self.n - self.n_logged,
                                      "sums": {k: sums[k] - self.sums_logged[k] for k in sums}}

    def _kept_at(self, iteration: int) -> tuple[int, dict]:
        """What `hold` kept of the iterations in no row yet, (iterations, sums), if it kept it at `iteration`."""
        pending = self.state.get("loss_pending") or {}
        return (pending["n"], pending["sums"]) if pending.get("iteration") == iteration else (0, {})

    def _sums(self, logs) -> dict[str, float]:
        return {k: float(np.mean(logs[k])) * self.n for k in STEP_COLUMNS[1:]}


class ProgressBar(keras.callbacks.Callback):
    """One bar for the whole run (not one per interval) with it/s and the current losses."""

    def __init__(self, total: int, start: int, every: int = 50):
        super().__init__()
        self.bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True, mininterval=0.5,
                        disable=None if os.environ.get("GANLAB_PROGRESS") != "1" else False)
        self.every = every
        self.pending = 0

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1, Keras calls this once per compiled call.
        self.pending += self.model.steps_per_execution
        if self.pending >= self.every:
            self.bar.update(self.pending)
            self.pending = 0
            if logs:
                self.bar.set_postfix(d_loss=f"{float(logs['d_loss']):.3f}", g_loss=f"{float(logs['g_loss']):.3f}",
                                     refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        # No terminal (CI, a log file): one line per interval instead of a bar.
        if self.bar.disable and logs:
            it = int(self.model.iteration.numpy())
            log.info("iteration %d/%d  d_loss %.3f  g_loss %.3f  D acc real %.2f fake %.2f", it, self.bar.total,
                     float(logs["d_loss"]), float(logs["g_loss"]), float(logs["d_acc_real"]),
                     float(logs["d_acc_fake"]))

    def close(self) -> None:
        self.bar.update(self.pending)
        self.pending = 0
        self.bar.close()
