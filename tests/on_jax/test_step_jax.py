"""The JAX step keeps the TensorFlow step's guarantees: isolation, the game, determinism, resume, NaN stop."""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from ganlab.training import train as T
from ganlab.training.callbacks import Diverged
from ganlab.training.devices import select_device

from ..conftest import (
    TINY,
    changed,
    d_verdicts,
    g_loss_on_the_best_fakes,
    mode_cross_entropy,
    only_the_real_loss_moved,
    stop_at,
    upconv_and_layer_pair,
    weights,
)

TINY = dataclasses.replace(TINY, backend="jax")


def make(cfg):
    return T.make_gan(T.resolved(cfg), select_device(cfg)[0])


def run(cfg, images, tmp_path, name, **kw):
    return T.train(T.resolved(cfg), images, "h", tmp_path / name / "samples", tmp_path / name / "ckpt", **kw)


def test_neither_tensorflow_nor_mlflow_is_loaded():
    assert keras.backend.backend() == "jax"
    assert sys.modules.get("tensorflow") is None and sys.modules.get("mlflow") is None


@pytest.mark.parametrize("model", ["mlp", "mlp_bn", "dcgan"])
@pytest.mark.parametrize("schedule", ["two_step", "combined"])
def test_each_update_moves_only_its_own_network(model, schedule, images):
    gan = make(dataclasses.replace(TINY, model=model, d_schedule=schedule))
    s = gan.state()
    real = jnp.asarray(images[:8])
    fake = gan.generate(jax.random.normal(jax.random.key(0), (8, gan.z_dim)))
    d_tr, d_nt, d_opt, _ = jax.jit(gan._d_step)(s["d_tr"], s["d_nt"], s["d_opt"], real, fake)
    after_d = {**s, "d_tr": d_tr, "d_nt": d_nt, "d_opt": d_opt}
    assert changed(s["d_tr"], d_tr), "D did not learn in its own update"
    g_tr, g_nt, g_opt, d_nt2, _, _ = jax.jit(gan._g_step)(after_d, jax.random.normal(jax.random.key(1), (8, gan.z_dim)))
    assert changed(s["g_tr"], g_tr), "G did not learn in its own update"
    gan.sync({**after_d, "g_tr": g_tr, "g_nt": g_nt, "g_opt": g_opt, "d_nt": d_nt2})
    assert not changed(d_tr, [v.value for v in gan.discriminator.trainable_variables]), "G's step moved D"
    assert int(gan.d_optimizer.iterations) == (2 if schedule == "two_step" else 1)


@pytest.mark.parametrize("model", ["dcgan", "mlp_bn"])
def test_g_step_plays_against_the_d_that_d_steps_train(model):
    gan = make(dataclasses.replace(TINY, model=model))
    z = jax.random.normal(jax.random.key(2), (16, gan.z_dim))
    training_mode, inference_mode, has_bn = d_verdicts(gan, z)
    *_, d_nt, _, got = jax.jit(gan._g_step)(gan.state(), z)
    assert float(got) == pytest.approx(training_mode, rel=1e-4, abs=1e-5)
    if has_bn:
        assert abs(inference_mode - training_mode) > 0.05, "the test cannot tell the two modes apart"
    stats = [np.array(v) for v, keep in zip(d_nt, gan._layout[1]) if keep]
    before = [np.array(v) for v in gan.discriminator.non_trainable_weights]
    assert len(stats) == len(before) and not changed(before, stats), "G's step moved D's BatchNorm statistics"


def test_same_seed_same_weights_and_resume_reaches_same_end(images, tmp_path):
    # BatchNorm statistics, both optimisers and the EMA must all come back from the checkpoint.
    cfg = dataclasses.replace(TINY, model="mlp_bn", ema=0.9)
    a, b = run(cfg, images, tmp_path, "a"), run(cfg, images, tmp_path, "b")
    assert T.weights_digest(a.gan) == T.weights_digest(b.gan)
    assert a.history.equals(b.history)
    assert int(a.gan.d_optimizer.iterations) == 80 and a.metrics["iterations"] == 40
    # The losses at a finer step (every 5) average back to each interval's (of 10), as on TensorFlow.
    fine = np.array([[r["d_loss"], r["g_loss"]] for r in a.state["loss_steps"]])
    assert [r["iteration"] for r in a.state["loss_steps"]] == list(range(5, 41, 5))
    np.testing.assert_allclose(fine.reshape(4, 2, 2).mean(1), a.history[["d_loss", "g_loss"]].to_numpy(), rtol=1e-5)

    with pytest.raises(KeyboardInterrupt):
        run(cfg, images, tmp_path, "cut", callbacks=(stop_at(25),))
    saved = json.loads((tmp_path / "cut/ckpt/state.json").read_text())
    assert saved["iteration"] == 25, "the interrupt did not save a checkpoint at the exact iteration"
    resumed = run(cfg, images, tmp_path, "cut")
    assert resumed.resumed_from == 25
    assert T.weights_digest(resumed.gan) == T.weights_digest(a.gan)
    for x, y in zip(weights(a.gan.generator_ema), weights(resumed.gan.generator_ema)):
        np.testing.assert_array_equal(x, y)
    assert changed(weights(a.gan.generator_ema), weights(a.gan.generator))


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(images, tmp_path):
    cfg = dataclasses.replace(TINY, iterations=20)
    run(cfg, images, tmp_path, "nan")
    bad = np.full_like(images, np.nan)
    with pytest.raises(Diverged) as err:
        run(dataclasses.replace(cfg, iterations=40), bad, tmp_path, "nan")
    assert "iteration 30" in str(err.value) and "iteration 20" in str(err.value)
    assert json.loads((tmp_path / "nan/ckpt/state.json").read_text())["iteration"] == 20


def test_bfloat16_keeps_float32_weights_and_logits(images, tmp_path):
    res = run(dataclasses.replace(TINY, iterations=10, mixed_precision="bfloat16"), images, tmp_path, "bf16")
    assert res.state["device"]["precision"] == "mixed_bfloat16" and res.state["device"]["backend"] == "jax"
    assert all(w.dtype == "float32" for w in res.gan.generator.weights)
    assert res.gan.discriminator(images[:4]).dtype == "float32"
    assert np.isfinite(res.history[["d_loss", "g_loss"]].to_numpy()).all()


def test_a_conditional_gan_trains_and_resumes_on_jax(images, tmp_path):
    cfg = dataclasses.replace(TINY, model="cdcgan", iterations=4, sample_interval=2, checkpoint_interval=2,
                              steps_per_execution=1)
    labels = np.arange(len(images)) % 10
    whole = run(cfg, images, tmp_path, "whole", labels=labels)
    run(dataclasses.replace(cfg, iterations=2), images, tmp_path, "cut", labels=labels)
    resumed = run(cfg, images, tmp_path, "cut", labels=labels)
    assert resumed.resumed_from == 2 and T.weights_digest(resumed.gan) == T.weights_digest(whole.gan)


@pytest.mark.parametrize("fakes_training", [False, True])
def test_d_trains_on_fakes_from_g_in_the_models_mode(fakes_training, images):
    """As on TensorFlow: G runs in the spec's mode for D's fakes, and in training mode for its own step;
    in training mode the D-step call moves G's BatchNorm statistics too."""
    cfg = dataclasses.replace(TINY, model="mlp_bn")
    gan = make(cfg)
    gan.fakes_training = fakes_training
    gan.set_data(images)
    modes, call = [], gan.generator.stateless_call

    def spy(*args, training=False, **kwargs):
        modes.append(training)
        return call(*args, training=training, **kwargs)

    gan.generator.stateless_call = spy
    s = gan.state()
    after, _ = jax.jit(gan._iteration)(s, gan.images, gan.labels, jnp.int32(0))
    assert modes == [fakes_training, True]
    gan.generator.stateless_call = call
    ref = make(cfg)  # mlp_bn's own spec (inference-mode fakes); same seed: same weights, same draws
    ref.set_data(images)
    ref_after, _ = jax.jit(ref._iteration)(ref.state(), ref.images, ref.labels, jnp.int32(0))
    assert changed(ref_after["g_nt"], after["g_nt"]) is fakes_training


@pytest.mark.parametrize("schedule", ["two_step", "combined"])
def test_label_smoothing_changes_only_the_real_loss_linearly(schedule, images):
    """As on TensorFlow: from the same weights and batch the first real loss is linear in the smoothing,
    and neither G's loss nor (under `combined`, before D moves) D's fake loss depends on it."""
    first, g_losses = [], []
    z = jax.random.normal(jax.random.key(3), (16, TINY.z_dim))
    for smoothing in (0.0, 0.1, 0.2):
        gan = make(dataclasses.replace(TINY, label_smoothing=smoothing, d_schedule=schedule))
        gan.set_data(images)
        g_losses.append(float(jax.jit(gan._g_step)(gan.state(), z)[-1]))
        _, values = jax.jit(gan._iteration)(gan.state(), gan.images, gan.labels, jnp.int32(0))
        first.append((float(values["d_loss_real"]), float(values["d_loss_fake"])))
    only_the_real_loss_moved(first, g_losses, schedule)


def test_g_top_k_takes_gs_loss_on_the_fakes_d_scores_most_real():
    """As on TensorFlow: G's step reports the loss over the share of its fakes D scores highest."""
    z = jax.random.normal(jax.random.key(3), (16, TINY.z_dim))
    moved = []
    for share in (1.0, 0.5):
        gan = make(dataclasses.replace(TINY, g_top_k=share))
        want = g_loss_on_the_best_fakes(gan, z, share)
        g_tr, *_, g_loss = jax.jit(gan._g_step)(gan.state(), z)
        assert float(g_loss) == pytest.approx(want, rel=1e-5), share
        moved.append([np.asarray(w) for w in g_tr])
    assert changed(moved[0], moved[1])


@pytest.mark.parametrize("size, c_in, c_out", [(7, 8, 6), (5, 3, 4), (14, 16, 8)])
def test_upconv_is_the_blogs_layer_pair_and_compiles_without_a_dilated_convolution(size, c_in, c_out):
    """On JAX `UpConv2D` computes as one sub-pixel convolution: still UpSampling2D + Conv2D(4, 'same'),
    and with no zero-dilated input in the compiled program, the form XLA's CPU kernels run slowly."""
    x, up, pair = upconv_and_layer_pair(size, c_in, c_out)
    want = np.asarray(pair(x))
    np.testing.assert_allclose(np.asarray(up(x)), want, rtol=1e-5, atol=1e-4)  # sums of up to 256 products
    hlo = jax.jit(lambda v: up(v)).lower(x).as_text()
    dilations = re.findall(r"lhs_dilate = \[(\d+), (\d+)\]", hlo)
    assert dilations and set(dilations) == {("1", "1")}, dilations  # convolutions, none of a dilated input


def test_one_step_a_call_compiles_without_a_loop(images):
    """The DCGANs take one step a call; XLA's CPU backend runs their convolutions about 60x slower inside
    a loop, so a one-step call is straight-line code and a longer one loops."""
    cfg = T.resolved(dataclasses.replace(TINY, model="dcgan", strategy="one_device"))
    replicas, _ = select_device(cfg)
    gan = T.make_gan(cfg, replicas)
    gan.set_data(images)
    zeros = {k: np.zeros((), np.float32) for k in ("d_loss", "g_loss")}
    args = (gan.state(), gan.images, gan.labels, np.int32(0), zeros)
    # Random bits bring loops of their own: the step loop is the one more that two steps compile to.
    loops = {steps: gan._compiled(steps).lower(*args).as_text().count("stablehlo.while") for steps in (1, 2)}
    assert loops[2] == loops[1] + 1, loops


def test_a_decaying_rate_holds_then_falls_and_a_resumed_run_keeps_its_schedule(images, tmp_path):
    cfg = dataclasses.replace(TINY, learning_rate=1e-3, lr_decay=0.5)  # both rates held to iteration 20
    decayed = run(cfg, images, tmp_path, "decayed")
    constant = run(dataclasses.replace(cfg, lr_decay=0), images, tmp_path, "constant")
    cols = ["d_loss", "g_loss"]
    np.testing.assert_array_equal(decayed.history[cols][:2].to_numpy(), constant.history[cols][:2].to_numpy())
    assert not np.allclose(decayed.history[cols][2:].to_numpy(), constant.history[cols][2:].to_numpy())
    assert [float(np.asarray(o.learning_rate)) for o in (decayed.gan.d_optimizer, decayed.gan.g_optimizer)] == [0, 0]
    with pytest.raises(KeyboardInterrupt):
        run(cfg, images, tmp_path, "cut", callbacks=(stop_at(30),))
    resumed = run(cfg, images, tmp_path, "cut")
    assert resumed.resumed_from == 30 and T.weights_digest(resumed.gan) == T.weights_digest(decayed.gan)


def test_gs_step_leaves_the_latents_mode_pick_as_it_is():
    gan = make(dataclasses.replace(TINY, model="dcgan", latent_modes=10))
    pick = np.array(gan.generator.get_layer("latent_mode").kernel.value)
    s = gan.state()
    g_tr, g_nt, g_opt, d_nt, _, _ = jax.jit(gan._g_step)(s, jax.random.normal(jax.random.key(3), (16, gan.z_dim)))
    assert changed(s["g_tr"], g_tr), "G did not learn in its own update"
    gan.sync({**s, "g_tr": g_tr, "g_nt": g_nt, "g_opt": g_opt, "d_nt": d_nt})
    np.testing.assert_array_equal(np.array(gan.generator.get_layer("latent_mode").kernel.value), pick)


def test_info_weight_trains_g_and_the_mode_reader_and_a_resumed_run_keeps_q(images, tmp_path):
    """As on TensorFlow: G's step reports D's verdict alone while G and Q learn to tell the modes apart;
    and Q's weights and its optimiser slots ride in the checkpoint, so a resumed run ends where an unbroken one does."""
    cfg = dataclasses.replace(TINY, model="dcgan", latent_modes=10)
    z = jax.random.normal(jax.random.key(3), (16, cfg.z_dim))
    plain, info = make(cfg), make(dataclasses.replace(cfg, info_weight=2.0))
    first = mode_cross_entropy(info, z)
    assert float(info.info_loss(z, info.mode_reader(info.generate(z, training=True), training=True))) == \
        pytest.approx(2.0 * first, rel=1e-5)
    step, s = jax.jit(info._g_step), info.state()
    assert float(step(s, z)[-1]) == pytest.approx(float(jax.jit(plain._g_step)(plain.state(), z)[-1]), rel=1e-6)
    for _ in range(10):
        g_tr, g_nt, g_opt, d_nt, (q_tr, _), _ = step(s, z)
        s = {**s, "g_tr": g_tr, "g_nt": g_nt, "g_opt": g_opt, "d_nt": d_nt, "q_tr": q_tr}
    info.sync(s)
    assert mode_cross_entropy(info, z) < 0.8 * first, (first, mode_cross_entropy(info, z))

    small = dataclasses.replace(TINY, iterations=20, latent_modes=4, info_weight=1.0)
    whole = run(small, images, tmp_path, "whole")
    with pytest.raises(KeyboardInterrupt):
        run(small, images, tmp_path, "cut", callbacks=(stop_at(15),))
    resumed = run(small, images, tmp_path, "cut")
    assert resumed.resumed_from == 15 and T.weights_digest(resumed.gan) == T.weights_digest(whole.gan)
    assert not changed(weights(whole.gan.mode_reader), weights(resumed.gan.mode_reader))
    assert whole.history["info_loss"].gt(0).all()
