"""The JAX suite runs in a process of its own (tests/test_backend.py starts it with KERAS_BACKEND=jax).

TensorFlow and MLflow are made unimportable first, as on the GPU machines that carry JAX alone: the
training path on JAX must need neither.
"""

import os
import sys

if os.environ.get("KERAS_BACKEND") != "jax":
    raise RuntimeError("tests/on_jax runs under KERAS_BACKEND=jax; tests/test_backend.py starts it")
for blocked in ("tensorflow", "mlflow"):
    sys.modules[blocked] = None  # `import tensorflow` now raises ImportError
