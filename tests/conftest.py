"""Shared fixtures: tiny fake MNIST in IDX form, and a loopback HTTP server."""

from __future__ import annotations

import atexit
import gzip
import hashlib
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import ganlab  # noqa: F401  (before any test loads TensorFlow: turns its oneDNN kernels on, as the stages do)
from ganlab.core.config import TrainConfig

# Importing it points the scratch projects' DVC at one cache, in the controller before any worker starts.
from .scratch import make_project, sh

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX's persistent compilation cache (ganlab.training.devices.jax_compilation_cache) in one temporary
# folder per pytest run, not the user's: the workers, the JAX suite's process and every scratch
# project's stages inherit it, and load the executable XLA compiled for the same program (each run,
# each resume, is a new GAN whose step is traced anew). JAX writes its entries atomically.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="jax-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    # Every compilation kept, as the train stage keeps them, also those before a test's device choice.
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# tests/on_jax needs a process on the JAX backend: tests/test_backend.py starts one for it.
collect_ignore = [] if os.environ["KERAS_BACKEND"] == "jax" else ["on_jax"]
if os.environ["KERAS_BACKEND"] == "tensorflow":
    # The tests train many times in one process, and TensorFlow's thread counts can only be set before
    # its runtime starts: set what a deterministic train() sets, once, before any test starts it.
    from ganlab.training.devices import tensorflow_determinism

    tensorflow_determinism()


# Fixtures that build a scratch project, run `dvc repro` or start a server: their tests are `slow`,
# and `make test-fast` leaves them out (tests that train in a subprocess carry the mark themselves).
SLOW_FIXTURES = {"project", "repro", "served", "server", "conditional"}


def pytest_configure(config):
    # Tests that share a scratch project run on one worker (xdist_group under --dist loadgroup), or each
    # worker builds the project again. pytest 9.2 names tests in a way pytest-xdist 3.8 cannot group, and
    # the grouping is then ignored without a word.
    if config.getoption("dist", "no") == "loadgroup" and tuple(map(int, pytest.__version__.split(".")[:2])) >= (9, 2):
        raise pytest.UsageError(f"pytest {pytest.__version__} ignores xdist_group under --dist loadgroup; "
                                "install the pinned set (make setup) or run without -n")


@pytest.fixture(autouse=True)
def float32_policy():
    """`select_device` sets Keras' global dtype policy (bfloat16 for a DCGAN on a CPU that has it): a
    test must not build its models in the one an earlier test on the same worker left. Leaked, it made
    the two backends' k-NN counts differ by more than the float32 tolerance."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # The long tests first, so that the workers end on short ones: xdist hands out the groups of a shared
    # project first, then single tests in this order, each to the first worker free, and a long test
    # handed out last keeps one worker busy while the other has nothing left. Stable: a group's tests
    # keep their order.
    items.sort(key=lambda item: not (item.get_closest_marker("slow") or item.get_closest_marker("xdist_group")))


@pytest.fixture
def fake_mnist(monkeypatch):
    """Small deterministic IDX payloads, with IDX_FILES patched to expect exactly them."""
    from ganlab.data import sources as data

    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(60) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(20) % 10).astype(np.uint8),
    }
    payloads = {k: data.encode_idx(v) for k, v in arrays.items()}
    specs = {}
    for key, spec in data.IDX_FILES.items():
        raw = payloads[key]
        gz = gzip.compress(raw, mtime=0)
        specs[key] = data.IdxFile(spec.name, len(raw), hashlib.sha256(raw).hexdigest(), hashlib.md5(gz).hexdigest())
    monkeypatch.setattr(data, "IDX_FILES", specs)
    return arrays, payloads


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        path = Path(self.directory) / name
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A truncated transfer: promise the full length, send half.
        self.wfile.write(body[: len(body) // 2] if name in self.truncate else body)


@pytest.fixture
def http_dir(tmp_path):
    """Serve a fresh folder on 127.0.0.1; yields (folder, base_url, truncate set)."""
    root = tmp_path / "www"
    root.mkdir()
    truncate: set[str] = set()
    handler = type("H", (_Handler,), {"truncate": truncate})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(root), **k)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/", truncate
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- test_pipeline.py's and test_serving.py's project

@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """A scratch copy of the project (SMALL params, the default store: sqlite:///<project>/mlflow.db),
    shared by test_pipeline.py and test_serving.py."""
    dest = tmp_path_factory.mktemp("project")
    # JAX's compilation cache as a user gets it, in a cache folder of the project's own: test_pipeline.py
    # checks what its train stage put there.
    # Matplotlib keeps its font cache where it was (under a new XDG_CACHE_HOME it would rebuild it).
    import matplotlib

    env = make_project(dest, XDG_CACHE_HOME=str(dest.parent / f"{dest.name}-cache"),
                       MPLCONFIGDIR=os.environ.get("MPLCONFIGDIR", matplotlib.get_cachedir()))
    for key in [k for k in env if k.startswith("JAX_") and "CACHE" in k]:  # the suite's, and a developer's
        env.pop(key)
    return dest, env


@pytest.fixture(scope="session")
def repro(project):
    dest, env = project
    return sh(["dvc", "repro"], dest, env)


# A training a few seconds long on either backend: small nets, short intervals, resumable.
TINY = TrainConfig(iterations=40, sample_interval=10, checkpoint_interval=10, batch_size=16,
                   steps_per_execution=5, resume=True, width=0.25)


@pytest.fixture(scope="module")
def images():
    """64 random images in [-1, 1]: enough for the training tests of either backend."""
    return np.random.default_rng(0).uniform(-1, 1, (64, 28, 28, 1)).astype(np.float32)


def upconv_and_layer_pair(size: int, c_in: int, c_out: int):
    """An `UpConv2D` and the blog's UpSampling2D + Conv2D(4, 'same') with the same random weights, and an
    input for both: (x, upconv, pair)."""
    import keras

    from ganlab.nets.layers import UpConv2D

    rng = np.random.default_rng(size)
    x = rng.standard_normal((3, size, size, c_in)).astype(np.float32)
    pair = keras.Sequential([keras.Input((size, size, c_in)), keras.layers.UpSampling2D(),
                             keras.layers.Conv2D(c_out, 4, padding="same", activation="relu")])
    up = keras.Sequential([keras.Input((size, size, c_in)), UpConv2D(c_out, 4, activation="relu")])
    kernel = rng.standard_normal((4, 4, c_in, c_out)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    pair.layers[-1].set_weights([kernel, bias])
    up.layers[-1].set_weights([kernel, bias])
    return x, up, pair


def weights(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.weights]


def changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def d_verdicts(gan, z) -> tuple[float, float, bool]:
    """G's loss as D judges G's fakes for `z` in training and in inference mode, with Dropout off (one
    dropout-free D to compare with) and D's weights put back; and whether D has BatchNorm (only then
    can the two modes differ). The reference for each backend's g_step test."""
    import keras  # here, not above: the JAX suite sets its backend before Keras is first imported

    from ganlab.training.gan import bce

    for layer in gan.discriminator.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    fake = gan.generate(z, training=True)
    saved = weights(gan.discriminator)
    training_mode = float(bce(True, gan.discriminator(fake, training=True)))
    inference_mode = float(bce(True, gan.discriminator(fake, training=False)))
    for var, value in zip(gan.discriminator.weights, saved):
        var.assign(value)
    has_bn = any(isinstance(layer, keras.layers.BatchNormalization) for layer in gan.discriminator.layers)
    return training_mode, inference_mode, has_bn


def stop_at(iteration: int):
    """A Keras callback that interrupts training, as Ctrl-C would, once `iteration` is done."""
    import keras  # here, not above: the JAX suite sets its backend before Keras is first imported

    class StopAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.iteration) >= iteration:
                raise KeyboardInterrupt

    return StopAt()


def only_the_real_loss_moved(first: list[tuple[float, float]], g_losses: list[float], schedule: str) -> None:
    """Label smoothing 0, 0.1 and 0.2 from the same weights and batch: the first step's D losses (real,
    fake) and G's loss. The real loss is linear in the smoothing; G's loss does not move, nor, under
    `combined` (measured before D's step), D's fake loss."""
    real = [r for r, _ in first]
    assert abs(real[1] - real[0]) > 1e-3 and real[2] - real[1] == pytest.approx(real[1] - real[0], rel=1e-3)
    assert g_losses[0] == g_losses[1] == g_losses[2]
    if schedule == "combined":
        assert first[0][1] == first[1][1] == first[2][1]


def g_loss_on_the_best_fakes(gan, z, share: float) -> float:
    """G's loss as `train.g_top_k: share` defines it, computed apart from the step: the non-saturating
    loss softplus(-x) averaged over the `share` of the batch's D logits x that are highest, for D
    judging G's fakes of `z` (both in training mode, as in G's step)."""
    import keras

    fakes = gan.generate(z, training=True)
    logits = np.ravel(keras.ops.convert_to_numpy(gan.discriminator(fakes, training=True))).astype(np.float64)
    best = np.sort(logits)[::-1][: max(1, round(share * len(logits)))]
    return float(np.mean(np.logaddexp(0, -best)))


def mode_cross_entropy(gan, z) -> float:
    """The cross-entropy of z's latent mode under Q's reading of G's image of z (both in training mode, as in
    G's step), computed apart from the step: log-sum-exp of Q's logits less the logit of the mode z's first
    numbers pick (the largest of them)."""
    import keras

    logits = keras.ops.convert_to_numpy(gan.mode_reader(gan.generate(z, training=True), training=True))
    logits = logits.astype(np.float64)
    modes = np.argmax(np.asarray(z)[:, :logits.shape[-1]], axis=-1)
    return float(np.mean(np.logaddexp.reduce(logits, axis=-1) - logits[np.arange(len(logits)), modes]))
