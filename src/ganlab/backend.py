"""Keras' backend for a stage, from params: it is fixed when Keras is first imported, so it is set here first."""

from __future__ import annotations

import os
import sys

from ganlab.files import StageError


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
