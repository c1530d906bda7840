"""Keras 3 on TensorFlow or JAX: the choice from params, the JAX suite, and backend-neutral figures."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ganlab.core.config import ConfigError, TrainConfig
from ganlab.core.files import StageError
from ganlab.training import backend

from .scratch import ROOT


def jax_env() -> dict:
    return {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.slow
@pytest.mark.parametrize("suite", sorted(p.name for p in (ROOT / "tests/on_jax").glob("test_*.py")))
def test_the_jax_step_keeps_every_guarantee(suite):
    """tests/on_jax: isolation, the game, determinism, resume, NaN stop, bf16, many devices, without TF
    or MLflow loaded; one process per file, so that parallel workers share them out."""
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-rA", "-p", "no:cacheprovider", f"tests/on_jax/{suite}"]
    out = subprocess.run(cmd, cwd=ROOT, env=jax_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    summary = out.stdout.strip().splitlines()[-1]
    tests = (ROOT / "tests/on_jax" / suite).read_text().count("\ndef test_")
    passed = re.search(r"\b(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= tests and "skipped" not in summary, summary


def test_a_keras_backend_that_disagrees_with_params_is_one_line(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(StageError) as err:
        backend.use("jax")
    assert "KERAS_BACKEND=tensorflow" in str(err.value) and "train.backend: jax" in str(err.value)
    assert "\n" not in str(err.value)
    backend.use("tensorflow")  # agreeing is fine


def test_a_jax_stage_seeds_keras_without_importing_tensorflow():
    code = ("import sys; from ganlab.training import backend; backend.use('jax'); import keras; "
            "keras.utils.set_random_seed(1); print(keras.backend.backend(), sys.modules['tensorflow'])")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["jax", "None"], out.stdout + out.stderr[-2000:]


def test_auto_picks_the_models_fastest_backend_and_tensorflow_where_only_it_can(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    auto = TrainConfig(backend="auto")
    assert backend.choose(auto) == "jax"  # mlp
    assert backend.choose(dataclasses.replace(auto, model="mlp_bn")) == "jax"
    assert backend.choose(dataclasses.replace(auto, model="dcgan")) == "tensorflow"
    # Every strategy runs on both backends: only float16's loss scaling needs TensorFlow.
    assert backend.choose(dataclasses.replace(auto, strategy="mirrored")) == "jax"
    assert backend.choose(dataclasses.replace(auto, strategy="multi_worker")) == "jax"
    assert backend.choose(dataclasses.replace(auto, mixed_precision="float16")) == "tensorflow"
    # Explicit choices stay as they are.
    assert backend.choose(dataclasses.replace(auto, backend="tensorflow")) == "tensorflow"
    assert backend.choose(dataclasses.replace(auto, model="dcgan", backend="jax")) == "jax"


def test_auto_follows_the_cluster_a_multi_worker_run_is_given(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    multi = TrainConfig(backend="auto", strategy="multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{}")
    assert backend.choose(multi) == "tensorflow"  # mlp, whose fastest is JAX
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(StageError, match="TF_CONFIG") as err:
        backend.choose(multi)
    assert "\n" not in str(err.value) and "float16" not in str(err.value)
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.delenv("TF_CONFIG")
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "127.0.0.1:1234")
    assert backend.choose(dataclasses.replace(multi, model="dcgan")) == "jax"  # dcgan, whose fastest is TensorFlow


def test_auto_follows_a_keras_backend_set_in_the_environment(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert backend.choose(TrainConfig(backend="auto")) == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend.choose(TrainConfig(backend="auto", model="dcgan")) == "jax"
    with pytest.raises(StageError, match="KERAS_BACKEND=jax") as err:
        backend.choose(TrainConfig(backend="auto", mixed_precision="float16"))
    assert "\n" not in str(err.value)


def test_auto_resolves_to_the_backend_keras_runs_on():
    import keras

    from ganlab.nets.specs import RESOLVED
    from ganlab.training.train import fingerprint, resolved

    assert "backend" in RESOLVED
    assert resolved(TrainConfig(backend="auto")).backend == keras.backend.backend()
    # A checkpoint of an explicit run resumes under auto when auto lands on the same backend.
    explicit = TrainConfig(backend=keras.backend.backend())
    assert fingerprint(resolved(TrainConfig(backend="auto")), "h") == fingerprint(resolved(explicit), "h")


def test_the_backend_is_part_of_the_fingerprint():
    from ganlab.training.train import fingerprint, resolved

    cfg = TrainConfig()
    assert fingerprint(resolved(cfg), "h") != fingerprint(resolved(dataclasses.replace(cfg, backend="jax")), "h")


def test_jax_refuses_what_only_tensorflow_does_and_takes_every_strategy():
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        dataclasses.replace(TrainConfig(), backend="jax", mixed_precision="float16").validate()
    for strategy in ("auto", "one_device", "mirrored", "multi_worker"):
        dataclasses.replace(TrainConfig(), backend="jax", strategy=strategy).validate()


JUDGE = """
import json, sys
import numpy as np
from ganlab.evaluation import judge as ev
from ganlab.core.config import EvaluateConfig
from ganlab.nets.saving import load_model
d = sys.argv[1]
x = np.load(d + "/x.npy")
nets = [load_model(f"{d}/{n}.keras") for n in ("generator", "discriminator", "classifier")]
metrics, d_real, d_fake = ev.judge(*nets, x, x, EvaluateConfig(n_samples=200, pr_k=3), z_dim=100)
print(json.dumps({"metrics": metrics, "d_fake": d_fake[:20].ravel().tolist()}))
"""


@pytest.mark.slow
def test_evaluate_gives_the_same_figures_on_either_backend(tmp_path):
    """A generator is scored the same whichever backend loads it (within float tolerance)."""
    import keras

    from ganlab.evaluation import classifier
    from ganlab.nets import models
    from ganlab.nets.saving import save_model

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(-1, 1, (300, 28, 28, 1)).astype(np.float32)
    g, d = models.build("dcgan", 100, 0.25)
    clf = classifier.build_classifier()
    np.save(tmp_path / "x.npy", x)
    for name, net in (("generator", g), ("discriminator", d), ("classifier", clf)):
        save_model(net, tmp_path / f"{name}.keras")
    runs = {}
    for name, env in (("tensorflow", {**os.environ, "KERAS_BACKEND": "tensorflow"}), ("jax", jax_env())):
        out = subprocess.run([sys.executable, "-c", JUDGE, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    tf_run, jax_run = runs["tensorflow"], runs["jax"]
    np.testing.assert_allclose(tf_run["d_fake"], jax_run["d_fake"], rtol=1e-4, atol=1e-6)

    def flat(m, prefix=""):
        for k, v in m.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    want, got = dict(flat(tf_run["metrics"])), dict(flat(jax_run["metrics"]))
    assert want.keys() == got.keys()
    # The k-NN scores count samples inside balls: a feature that moves by float32's rounding across a ball's
    # edge moves them by one count (1/200 of the samples; 1/600 of density's k x 200). `unsure_share`
    # counts samples under a probability threshold, the same way.
    counts = ("precision", "recall", "density", "coverage", "unsure_share")
    for key in want:
        tol = 2.5 / 200 if key.rsplit(".", 1)[-1] in counts else 1e-4
        assert got[key] == pytest.approx(want[key], rel=1e-3, abs=tol), key


def test_a_checkpoint_from_the_other_backend_is_refused_and_kept(tmp_path):
    from ganlab.training import train as T

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    state = {"fingerprint": "f", "iteration": 10, "checkpoint": "ckpt-10.npz", "device": {"backend": "jax"}}
    (ckpt / "state.json").write_text(json.dumps(state))
    cfg = TrainConfig(iterations=20, sample_interval=10, batch_size=16, width=0.25)
    x = np.zeros((32, 28, 28, 1), np.float32)
    with pytest.raises(StageError) as err:
        T.train(T.resolved(cfg), x, "h", tmp_path / "samples", ckpt)
    assert "written by train.backend: jax" in str(err.value) and "\n" not in str(err.value)
    assert (ckpt / "state.json").exists()
