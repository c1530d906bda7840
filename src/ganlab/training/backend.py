"""Keras' backend for a stage, from params: it is fixed when Keras is first imported, so it is set here first.

`train.backend: auto` picks the backend that trains the model fastest (`ModelSpec.fastest_backend`,
from `make bench` side by side on one CPU, docs/benchmarks.md): JAX for the MLPs, whose whole step XLA
fuses into one program, and TensorFlow with oneDNN for the DCGANs, whose convolutions JAX's CPU backend
runs several times slower.
"""

from __future__ import annotations

import os
import sys

from ganlab.core.config import TrainConfig
from ganlab.core.files import StageError
from ganlab.nets.specs import SPECS


def choose(cfg: TrainConfig) -> str:
    """The backend `cfg` trains on: an explicit `train.backend` as it is; for `auto`, a KERAS_BACKEND set in
    the environment, else TensorFlow where only it can run the settings (a tf.distribute strategy,
    float16's loss scaling), else the model's fastest."""
    if cfg.backend != "auto":
        return cfg.backend
    needs_tf = cfg.strategy in ("mirrored", "multi_worker") or cfg.mixed_precision == "float16"
    env = os.environ.get("KERAS_BACKEND")
    if env == "jax" and needs_tf:
        raise StageError(f"KERAS_BACKEND=jax, but train.strategy: {cfg.strategy} with train.mixed_precision: "
                         f"{cfg.mixed_precision} runs on TensorFlow only; unset KERAS_BACKEND or change them")
    if env in ("tensorflow", "jax"):
        return env
    return "tensorflow" if needs_tf else SPECS[cfg.model].fastest_backend


def use(backend: str) -> None:
    """Make `backend` ("tensorflow" or "jax") the one Keras will load; refuse a KERAS_BACKEND that disagrees."""
    env = os.environ.get("KERAS_BACKEND")
    if env and env != backend:
        raise StageError(f"KERAS_BACKEND={env} in the environment disagrees with train.backend: {backend} in "
                         f"params.yaml; unset KERAS_BACKEND (params.yaml chooses) or set train.backend: {env}")
    if "keras" in sys.modules:  # too late to choose: only a matching backend will do
        import keras

        if keras.backend.backend() != backend:
            raise StageError(f"Keras was already imported with the {keras.backend.backend()} backend; "
                             f"set KERAS_BACKEND={backend} before importing it")
    os.environ["KERAS_BACKEND"] = backend
