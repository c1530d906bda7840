"""Checkpoints of a training run: every variable in one `.npz` that either backend reads, and `state.json`."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np

from ganlab.core.files import StageError, atomic_path, write_json
from ganlab.training.gan import GAN

log = logging.getLogger(__name__)

# Part of every fingerprint: a checkpoint written in another format is never read as this one.
CHECKPOINT_FORMAT = 2


def save_variables(path: Path, parts: dict[str, list]) -> None:
    """Every variable of `parts` in one `.npz` (keys `<part>/<index>`), which either backend reads,
    written whole or not at all."""
    arrays = {f"{part}/{i}": keras.ops.convert_to_numpy(v.value)
              for part, variables in parts.items() for i, v in enumerate(variables)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


class Checkpoints:
    """Weights, optimiser state and the run's bookkeeping, in a folder that survives re-runs.

    Each checkpoint is one `.npz` of every variable (`GAN.checkpointed`), which either backend
    reads back; `state.json` points at the latest. Under multi-worker training only the chief
    writes, and the other workers restore from the chief's `folder` (`scratch` marks them).
    """

    keep = 2

    def __init__(self, gan: GAN, folder: Path, scratch: Path | None = None):
        self.gan, self.folder = gan, folder
        self.chief = scratch is None
        self.state_path = folder / "state.json"

    def state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def save(self, iteration: int, state: dict, grids: Path | None = None) -> None:
        """Save every variable and `state` at `iteration`, with the sample grids in `grids` so far."""
        if not self.chief:
            return
        if grids is not None:  # first: a state that names this iteration finds its grids here
            kept = self.folder / "samples"
            kept.mkdir(parents=True, exist_ok=True)
            for grid in grids.glob("iter_*.png"):
                if not (kept / grid.name).exists():
                    shutil.copy2(grid, kept / grid.name)
        # Weights first, then the state that points at them: a crash between leaves the old pair.
        name = f"ckpt-{iteration}.npz"
        save_variables(self.folder / name, self.gan.checkpointed())
        write_json(self.state_path, {**state, "iteration": iteration, "checkpoint": name})
        for old in sorted(self.folder.glob("ckpt-*.npz"), key=lambda p: int(p.stem[5:]))[:-self.keep]:
            old.unlink()

    def restore(self, fp: str, device: dict | None = None) -> dict | None:
        """Restore the latest checkpoint if it was made with the same fingerprint; return its state.

        `device` is what this run resolved (`select_device`): a checkpoint of the same params trained in
        another precision or on another kind of device (`auto` resolves by hardware) is refused and kept.
        """
        state = self.state()
        written_on = (state or {}).get("device", {}).get("backend", "tensorflow")
        if state and written_on != keras.backend.backend():
            # Its arrays would load, but a run is only resumed as it was trained: refuse, keep it.
            raise StageError(f"the checkpoint in {self.folder} was written by train.backend: {written_on}; set it "
                             f"back to resume that run, or delete {self.folder} to start over on "
                             f"{keras.backend.backend()}")
        if not state or state.get("fingerprint") != fp:
            if state:
                log.info("checkpoint in %s is for other params; starting fresh", self.folder)
            return None
        written = state.get("device", {})
        for key, setting in (("precision", "train.mixed_precision"), ("device", "the device")):
            was, now = written.get(key), (device or {}).get(key)
            if was and now and was != now:
                raise StageError(f"the checkpoint in {self.folder} was trained with {key} {was}, and this run "
                                 f"resolves to {now}; set {setting} to match to resume it, or delete "
                                 f"{self.folder} to start over")
        path = self.folder / state["checkpoint"]
        try:
            with np.load(path) as saved:
                values = {part: [saved[f"{part}/{i}"] for i in range(len(variables))]
                          for part, variables in self.gan.checkpointed().items()}
                if len(saved.files) != sum(map(len, values.values())):
                    raise ValueError("a different number of variables")
            for part, variables in self.gan.checkpointed().items():
                for var, value in zip(variables, values[part]):
                    if tuple(var.shape) != value.shape:
                        raise ValueError(f"{var.path} has shape {value.shape}, wants {tuple(var.shape)}")
                    var.assign(value)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise StageError(
                f"checkpoint {path} cannot be restored ({type(exc).__name__}); "
                f"delete {self.folder} to start over, or set train.resume: false"
            ) from None
        return state

    def restore_grids(self, grids: Path, upto: int) -> None:
        """Put back into `grids` the kept sample grids of iterations up to `upto` (a resumed run's past)."""
        for grid in sorted((self.folder / "samples").glob("iter_*.png")):
            if int(grid.stem[5:]) <= upto and not (grids / grid.name).exists():
                shutil.copy2(grid, grids / grid.name)

    def clear(self) -> None:
        if self.chief:
            shutil.rmtree(self.folder, ignore_errors=True)
