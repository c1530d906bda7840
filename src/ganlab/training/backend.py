"""Keras' backend for a stage, from params: it is fixed when Keras is first imported, so it is set here first.

`train.backend: auto` picks the backend that trains the model fastest (`ModelSpec.fastest_backend`,
from `make bench` side by side on one CPU, docs/benchmarks.md): JAX for the MLPs, whose whole step XLA
fuses into one program, and TensorFlow with oneDNN for the DCGANs, whose step JAX's CPU backend runs at
about half the speed.
"""

from __future__ import annotations

import os
import sys

from ganlab.core.config import TrainConfig
from ganlab.core.files import StageError
from ganlab.nets.specs import SPECS

JAX_CLUSTER = "KERAS_DISTRIBUTION_JOB_ADDRESSES"  # JAX's counterpart of TF_CONFIG (keras.distribution.initialize)


def choose(cfg: TrainConfig) -> str:
    """The backend `cfg` trains on: an explicit `train.backend` as it is; for `auto`, a KERAS_BACKEND set in
    the environment, else TensorFlow where only it can run the settings (float16's loss scaling), else the
    backend of the cluster a multi-worker run is given, else the model's fastest. Every strategy runs on both."""
    if cfg.backend != "auto":
        return cfg.backend
    # A multi-worker run follows the cluster the environment describes: TF_CONFIG is TensorFlow's, the
    # KERAS_DISTRIBUTION_* variables JAX's.
    multi = cfg.strategy == "multi_worker"
    tf_cluster = multi and "TF_CONFIG" in os.environ and JAX_CLUSTER not in os.environ
    jax_cluster = multi and JAX_CLUSTER in os.environ and "TF_CONFIG" not in os.environ
    env = os.environ.get("KERAS_BACKEND")
    if env == "jax" and cfg.mixed_precision == "float16":
        raise StageError("KERAS_BACKEND=jax, but train.mixed_precision: float16 runs on TensorFlow only; "
                         "unset KERAS_BACKEND or use train.mixed_precision: bfloat16")
    if env == "jax" and tf_cluster:
        raise StageError("KERAS_BACKEND=jax, but the multi-worker cluster is a TF_CONFIG (TensorFlow's); set "
                         f"{JAX_CLUSTER}, KERAS_DISTRIBUTION_NUM_PROCESSES and _PROCESS_ID instead, or unset "
                         "KERAS_BACKEND")
    if env in ("tensorflow", "jax"):
        return env
    if cfg.mixed_precision == "float16" or tf_cluster:
        return "tensorflow"
    return "jax" if jax_cluster else SPECS[cfg.model].fastest_backend


def use(backend: str) -> None:
    """Make `backend` ("tensorflow" or "jax") the one Keras will load; refuse a KERAS_BACKEND that disagrees.
    On JAX, in a process that has not imported TensorFlow, TensorFlow can no longer be imported."""
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
    if backend == "jax" and "tensorflow" not in sys.modules:
        # The JAX path needs no TensorFlow (tests/on_jax trains with it unimportable, as on GPU machines that
        # carry JAX alone), but keras.utils.set_random_seed imports it wherever it can, only to seed it: about
        # 3 s of CPU and 0.5 GB of memory of every JAX train stage (docs/compute.md). Make it unimportable here.
        # Keras' preprocessing layers (Rescaling, Random*) would then fail on JAX; no net here uses one.
        sys.modules["tensorflow"] = None
