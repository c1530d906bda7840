"""Shared fixtures: tiny fake MNIST in IDX form, and a loopback HTTP server."""

from __future__ import annotations

import atexit
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import ganlab  # noqa: F401  (before any test loads TensorFlow: turns its oneDNN kernels on, as the stages do)
from ganlab.core.config import TrainConfig

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
# One DVC cache for every scratch project of a pytest run, as a team shares one (set by a global config
# that only the scratch projects' `dvc` reads): a stage that another project already ran with the same
# command, deps and params is restored from DVC's run-cache, so `classifier` trains about once per pytest
# run instead of once per project and per queued experiment (`prepare` re-runs: its raw cache persists).
if "GANLAB_TESTS_DVC_CONFIG" not in os.environ:
    _dvc_config = tempfile.mkdtemp(prefix="dvc-global-")
    atexit.register(shutil.rmtree, _dvc_config, ignore_errors=True)
    Path(_dvc_config, "config").write_text(f"[cache]\n    dir = {Path(_dvc_config, 'cache')}\n")
    os.environ["GANLAB_TESTS_DVC_CONFIG"] = _dvc_config
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# tests/on_jax needs a process on the JAX backend: tests/test_backend.py starts one for it.
collect_ignore = [] if os.environ["KERAS_BACKEND"] == "jax" else ["on_jax"]
if os.environ["KERAS_BACKEND"] == "tensorflow":
    # The tests train many times in one process, and TensorFlow's thread counts can only be set before
    # its runtime starts: set what a deterministic train() sets, once, before any test starts it.
    from ganlab.training.devices import tensorflow_determinism

    tensorflow_determinism()

ROOT = Path(__file__).resolve().parents[1]

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


# ---------------------------------------------------------------- scratch projects for end-to-end tests

VENV_BIN = Path(sys.executable).parent


def make_in(target: str, **variables: str) -> list[str]:
    """`make target` in a scratch project, on this venv. `-o` keeps make from re-running set-up there:
    its `pip install -e .` would point this venv's ganlab at the scratch copy."""
    venv = VENV_BIN.parent
    return ["make", "-o", str(venv / ".installed"), target, f"VENV={venv}", *(f"{k}={v}" for k, v in variables.items())]
SMALL = {
    "prepare": {"source": "package"},
    "train": {"iterations": 40, "sample_interval": 20, "checkpoint_interval": 20, "steps_per_execution": 10,
              "quality_samples": 500},
    "classifier": {"epochs": 1, "n_train": 2000},
    "evaluate": {"n_samples": 300},
}


def sh(cmd: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(dest: Path, tracking_uri: str | None = None, **env_extra: str) -> dict:
    """Copy the working tree to `dest` as a fresh git repo with SMALL params; return the env to run it with.

    With no `tracking_uri`, MLFLOW_TRACKING_URI is unset and the project's default store is used.
    """
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file() and not rel.startswith(("metrics/", "plots/")) and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    # An MLflow experiment of its own, which is one of train's params: the DVC cache the scratch projects
    # share (above) then never restores one project's train stage, whose MLflow run is elsewhere, into another.
    params["train"]["experiment"] = f"ganlab-{hashlib.md5(str(dest).encode()).hexdigest()[:6]}"
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": tracking_uri or "", "TF_CPP_MIN_LOG_LEVEL": "2",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_GLOBAL_CONFIG_DIR": os.environ["GANLAB_TESTS_DVC_CONFIG"], **env_extra}
    env.pop("KERAS_BACKEND", None)  # as on a user's machine: params.yaml's train.backend decides
    if not tracking_uri:
        env.pop("MLFLOW_TRACKING_URI")
    if "MLFLOW_TRACKING_TOKEN" not in env_extra:
        env.pop("MLFLOW_TRACKING_TOKEN", None)
    sh(["git", "init", "-q"], dest, env)
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "commit", "-qm", "init"], dest, env)
    return env


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


def start_train(dest: Path, env: dict, name: str, **train) -> tuple[subprocess.Popen, list[str]]:
    """Start the train stage in the background on params.yaml with `train` overrides, all under `name/`.

    Returns the process and its command; the params it reads are `name.yaml`.
    """
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"].update(train)
    (dest / f"{name}.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "pipeline/train.py", "--params", f"{name}.yaml", "--data", "data/prepared",
           "--out", f"{name}/out", "--checkpoints", f"{name}/ckpt",
           "--metrics", f"{name}/train.json", "--plots", f"{name}/plots"]
    return subprocess.Popen(cmd, cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), cmd


def answers(url: str, proc: subprocess.Popen, seconds: float = 120) -> bool:
    """Wait until `url` answers 200 (True), or `proc` has ended or `seconds` have passed (False)."""
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


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


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until `path` exists, `proc` has ended, or `seconds` have passed."""
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)


def only_the_real_loss_moved(first: list[tuple[float, float]], g_losses: list[float], schedule: str) -> None:
    """Label smoothing 0, 0.1 and 0.2 from the same weights and batch: the first step's D losses (real,
    fake) and G's loss. The real loss is linear in the smoothing; G's loss does not move, nor, under
    `combined` (measured before D's step), D's fake loss."""
    real = [r for r, _ in first]
    assert abs(real[1] - real[0]) > 1e-3 and real[2] - real[1] == pytest.approx(real[1] - real[0], rel=1e-3)
    assert g_losses[0] == g_losses[1] == g_losses[2]
    if schedule == "combined":
        assert first[0][1] == first[1][1] == first[2][1]
