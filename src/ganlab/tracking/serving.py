"""The served generator: an MLflow pyfunc over G's `.keras` file that checks each request before running G.

Logged by the train stage as `generator_service` (MLflow's "models from code": this file is copied
into the model and run when it loads, with `layers.py` beside it), and registered by the report
stage. Serve the champion with `make serve`, or:
    mlflow models serve -m models:/ganlab-generator@champion --env-manager local -h 127.0.0.1 -p 5001
The server needs Keras, a backend and numpy, not the ganlab package; the model loads in safe mode.
"""

from __future__ import annotations

import os
import platform

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

# A request's most latent vectors: 1,024 images are 3 MB of JSON back; 100,000 would be 300 MB.
MAX_BATCH = 1024


def bad_request(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE is answered as HTTP 400, and the server carries on.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class Generator(PythonModel):
    """`{"inputs": [[z_1 .. z_n], ...]}` -> images in [-1, 1], shape (batch, 28, 28, 1). A conditional G
    (`cdcgan`) takes `{"inputs": {"z": [[...], ...], "digit": [7, 3, ...]}}`, one digit per z."""

    max_batch = MAX_BATCH  # read by `make serve`'s size guard (ganlab.tools.serve), which loads this class

    def load_context(self, context):
        # The backend that trained G, unless the server's environment names one (both read .keras).
        os.environ.setdefault("KERAS_BACKEND", (context.model_config or {}).get("keras_backend", "tensorflow"))
        # TensorFlow's oneDNN kernels on every x86 CPU, as in the stages (ganlab.core.hardware, which this file
        # runs without). Only in effect if TensorFlow is not loaded yet; a value the user set wins.
        if platform.machine().lower() in ("x86_64", "amd64"):
            os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
        import keras

        try:
            from ganlab.nets import layers  # noqa: F401  (in the project: registers UpConv2D)
        except ImportError:
            import layers  # noqa: F401  (served alone: the copy logged beside this file)
        self.generator = keras.saving.load_model(context.artifacts["generator"], compile=False, safe_mode=True)
        names = [t.name for t in self.generator.inputs]
        self.conditional = "digit" in names
        self.z_dim = int(self.generator.inputs[names.index("z") if self.conditional else 0].shape[-1])

    def predict(self, context, model_input, params=None):
        digits = None
        if isinstance(model_input, dict):  # named inputs: the signature let only a conditional G get here
            z, digits = np.asarray(model_input["z"]), np.asarray(model_input["digit"])
        else:
            z = np.asarray(getattr(model_input, "values", model_input))
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise bad_request(f"inputs must be a list of latent vectors of {self.z_dim} numbers each; "
                              f"got shape {list(z.shape)}")
        if not 1 <= len(z) <= MAX_BATCH:
            raise bad_request(f"a request holds 1 to {MAX_BATCH} latent vectors; got {len(z)}: split it")
        if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z.astype(np.float64)).all():
            raise bad_request("latent vectors must hold finite numbers")
        z = z.astype(np.float32)
        # One compiled call for the request (at most MAX_BATCH vectors): on TensorFlow `predict` builds a
        # tf.data pipeline for each request (a `dcgan` G, 64 vectors: 87 ms against 42, docs/benchmarks.md).
        if not self.conditional:
            return self.generator.predict_on_batch(z)
        if digits.shape != (len(z),) or not np.isin(digits, np.arange(10)).all():
            raise bad_request(f"digit must hold one digit 0-9 per latent vector ({len(z)}); got {digits.tolist()[:20]}")
        return self.generator.predict_on_batch({"z": z, "digit": digits.astype(np.int32).reshape(-1, 1)})


set_model(Generator())
