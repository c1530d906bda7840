"""The JAX suite runs in a process of its own (tests/test_backend.py starts it with KERAS_BACKEND=jax).

TensorFlow and MLflow are made unimportable first, as on the GPU machines that carry JAX alone: the
training path on JAX must need neither. The CPU shows JAX two devices, so `strategy: auto` trains
data-parallel on both here (tests/on_jax/test_replicas.py holds it against one device).
"""

import atexit
import os
import shutil
import sys
import tempfile

if os.environ.get("KERAS_BACKEND") != "jax":
    raise RuntimeError("tests/on_jax runs under KERAS_BACKEND=jax; tests/test_backend.py starts it")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
# The tests build the same small steps again and again (each run, each resume, is a new GAN whose step
# is traced anew): JAX's persistent compilation cache gives them back the executable XLA compiled for
# the same program (docs/benchmarks.md, the test suite: about 30% off this suite). One temporary folder
# per pytest run (workers inherit it; JAX writes its entries atomically), removed when the run ends.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    cache = tempfile.mkdtemp(prefix="jax-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
for blocked in ("tensorflow", "mlflow"):
    sys.modules[blocked] = None  # `import tensorflow` now raises ImportError
