"""Checkpoints of a training run: every variable in one `.npz` that either backend reads, and `state.json`."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np

from ganlab.files import StageError, atomic_path, write_json
from ganlab.gan import GAN

log = logging.getLogger(__name__)

# Part of every fingerprint: a checkpoint written in another format is never read as this one.
CHECKPOINT_FORMAT = 2


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

    def save(self, iteration: int, state: dict) -> None:
        if not self.chief:
            return
        # Weights first, then the state that points at them: a crash between leaves the old pair.
        name = f"ckpt-{iteration}.npz"
        arrays = {f"{part}/{i}": keras.ops.convert_to_numpy(v.value)
                  for part, variables in self.gan.checkpointed().items() for i, v in enumerate(variables)}
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        write_json(self.state_path, {**state, "iteration": iteration, "checkpoint": name})
        for old in sorted(self.folder.glob("ckpt-*.npz"), key=lambda p: int(p.stem[5:]))[:-self.keep]:
            old.unlink()

    def restore(self, fp: str) -> dict | None:
        """Restore the latest checkpoint if it was made with the same fingerprint; return its state."""
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

    def clear(self) -> None:
        if self.chief:
            shutil.rmtree(self.folder, ignore_errors=True)
