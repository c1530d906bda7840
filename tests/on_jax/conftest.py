"""The JAX suite runs in a process of its own (tests/test_backend.py starts it with KERAS_BACKEND=jax).

TensorFlow and MLflow are made unimportable first, as on the GPU machines that carry JAX alone: the
training path on JAX must need neither. The CPU shows JAX two devices, so `strategy: auto` trains
data-parallel on both here (tests/on_jax/test_replicas.py holds it against one device).
"""

import os
import sys

if os.environ.get("KERAS_BACKEND") != "jax":
    raise RuntimeError("tests/on_jax runs under KERAS_BACKEND=jax; tests/test_backend.py starts it")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
for blocked in ("tensorflow", "mlflow"):
    sys.modules[blocked] = None  # `import tensorflow` now raises ImportError
