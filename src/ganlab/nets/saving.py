"""Saving and loading Keras models: atomic writes, safe-mode loads, one-line errors.

Importing `ganlab.nets.layers` registers the custom layers a saved generator may hold, so any
caller of `load_model` can read every architecture without importing the builders.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

import ganlab.nets.layers  # noqa: F401  (registers custom layers for load_model)
from ganlab.core.files import StageError


def save_model(model: keras.Model, dest: Path) -> None:
    """Save a Keras model atomically (Keras insists on the `.keras` suffix, so the temp name keeps it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.partial.keras")
    try:
        model.save(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def load_model(path: Path) -> keras.Model:
    """Load a Keras model saved by `save_model` (safe mode on); StageError if it is missing or broken."""
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; {repair(path.parent)}") from None
    except Exception as exc:  # Keras raises many types for a damaged zip/h5
        raise StageError(f"{path} cannot be loaded ({type(exc).__name__}); {repair(path.parent)}") from None


def repair(folder: Path) -> str:
    """The cheapest repair of a damaged DVC output: DVC's cache holds the good copy. `--force`, since DVC
    will not overwrite a file that differs from its record without it."""
    return f"restore it with `dvc checkout --force {folder}` or re-run `dvc repro`"
