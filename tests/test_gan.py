"""The GAN's step (ganlab.training.gan): each update moves only its own network, the two-step schedule
takes two D steps per G step, G plays against the D that D's steps train, D's fakes come from G in the
model's mode, label smoothing touches only D's real targets, `g_top_k` takes G's loss on the fakes D scores
most real, G's step leaves the latent's mode pick alone, and `info_weight` trains G and Q to tell its modes apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from ganlab.training import train as T
from ganlab.training.devices import select_device
from ganlab.training.gan import bce

from .conftest import (
    TINY,
    changed,
    d_verdicts,
    g_loss_on_the_best_fakes,
    mode_cross_entropy,
    only_the_real_loss_moved,
    weights,
)


@pytest.mark.parametrize("model", ["mlp", "mlp_bn", "dcgan"])
@pytest.mark.parametrize("schedule", ["two_step", "combined"])
def test_each_update_moves_only_its_own_network(model, schedule, images):
    cfg = dataclasses.replace(TINY, model=model, d_schedule=schedule)
    strategy, _ = select_device(cfg)
    gan = T.make_gan(T.resolved(cfg), strategy)
    real = tf.constant(images[:8])
    fake = gan.generate(tf.random.normal((8, cfg.z_dim)))
    g0, d0 = weights(gan.generator), weights(gan.discriminator)
    tf.function(gan.d_step)(real, fake)  # compiled, as in fit()
    g1, d1 = weights(gan.generator), weights(gan.discriminator)
    assert changed(d0, d1), "D did not learn in its own update"
    assert not changed(g0, g1), "G changed during D's update"
    tf.function(gan.g_step)(tf.random.normal((8, cfg.z_dim)))
    g2, d2 = weights(gan.generator), weights(gan.discriminator)
    assert changed(g1, g2), "G did not learn in its own update"
    assert not changed(d1, d2), "D changed during G's update"


def test_two_step_takes_two_discriminator_steps(images):
    strategy, _ = select_device(TINY)
    gan = T.make_gan(T.resolved(TINY), strategy)
    gan.set_data(images)
    gan.fit(tf.data.Dataset.from_tensors([0.0]).repeat(), epochs=1, steps_per_epoch=5, verbose=0, shuffle=False)
    assert int(gan.d_optimizer.iterations) == 10 and int(gan.g_optimizer.iterations) == 5


@pytest.mark.parametrize("model", ["dcgan", "mlp_bn", "mlp"])
def test_g_step_plays_against_the_d_that_d_steps_train(model, images):
    """G's loss must be D's training-mode verdict on G's fakes: the D that D's own steps train.

    With D in inference mode in G's step (BatchNorm on moving statistics), the DCGAN learns to fool
    a D nobody trains, and both losses fall to zero together (docs/design.md).
    """
    cfg = dataclasses.replace(TINY, model=model)
    gan = T.make_gan(T.resolved(cfg), select_device(cfg)[0])
    z = tf.random.stateless_normal((16, cfg.z_dim), seed=[1, 2])
    training_mode, inference_mode, has_bn = d_verdicts(gan, z)
    d_stats = weights(gan.discriminator)
    got = float(tf.function(gan.g_step)(z))
    assert got == pytest.approx(training_mode, rel=1e-4, abs=1e-5)
    if has_bn:
        assert abs(inference_mode - training_mode) > 0.05, "the test cannot tell the two modes apart"
    assert not changed(d_stats, weights(gan.discriminator)), "G's step moved D's BatchNorm statistics"


@pytest.mark.parametrize("fakes_training", [False, True])
def test_d_trains_on_fakes_from_g_in_the_models_mode(fakes_training, images):
    """The seeds' D sees G in inference mode (`generator.predict`); a model whose spec says
    `fakes_training` (cdcgan) shows D the training-mode G that G's own step trains."""
    cfg = dataclasses.replace(TINY, model="mlp_bn")
    gan = T.make_gan(T.resolved(cfg), select_device(cfg)[0])
    gan.fakes_training = fakes_training
    gan.set_data(images)
    modes, generate = [], gan.generate

    def spy(z, digits=None, training=False):
        modes.append(training)
        return generate(z, digits, training=training)

    gan.generate = spy
    tf.function(gan.train_step)(None)
    assert modes == [fakes_training, True]  # D's fakes, then G's step


@pytest.mark.parametrize("schedule", ["two_step", "combined"])
def test_label_smoothing_softens_only_ds_real_targets(schedule, images):
    """One-sided (docs/design.md): D's real loss is (1 - s) softplus(-x) + s softplus(x), minimal at
    x = log((1 - s) / s). From the same weights and batch, the first step's real loss is linear in s,
    and neither D's fake loss (measured before D moves, under `combined`) nor G's loss depends on s."""
    at = tf.Variable(np.log(9.0), dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = bce(True, at, 0.1)
    assert abs(float(tape.gradient(loss, at))) < 1e-6
    x = tf.constant(np.linspace(-6, 6, 49), tf.float32)
    want = np.mean(0.9 * np.logaddexp(0, -x.numpy()) + 0.1 * np.logaddexp(0, x.numpy()))
    np.testing.assert_allclose(float(bce(True, x, 0.1)), want, rtol=1e-6)
    first, g_losses = [], []
    for smoothing in (0.0, 0.1, 0.2):
        cfg = dataclasses.replace(TINY, label_smoothing=smoothing, d_schedule=schedule)
        gan = T.make_gan(T.resolved(cfg), select_device(cfg)[0])
        g_losses.append(float(tf.function(gan.g_step)(tf.random.stateless_normal((16, cfg.z_dim), seed=(1, 2)))))
        gan = T.make_gan(T.resolved(cfg), select_device(cfg)[0])
        gan.set_data(images)
        logs = tf.function(gan.train_step)(None)
        first.append((float(logs["d_loss_real"]), float(logs["d_loss_fake"])))
    only_the_real_loss_moved(first, g_losses, schedule)


def test_g_top_k_takes_gs_loss_on_the_fakes_d_scores_most_real():
    """From the same weights and z, G's step reports the loss over the share of its fakes that D scores
    highest (1.0: all of them, the sources' loss), and a smaller share moves G differently."""
    z = tf.random.stateless_normal((16, TINY.z_dim), seed=(1, 2))
    moved, losses = [], []
    for share in (1.0, 0.5, 0.25):
        gan = T.make_gan(T.resolved(dataclasses.replace(TINY, g_top_k=share)), select_device(TINY)[0])
        want = g_loss_on_the_best_fakes(gan, z, share)
        losses.append(float(tf.function(gan.g_step)(z)))
        assert losses[-1] == pytest.approx(want, rel=1e-5), share
        moved.append(weights(gan.generator))
    assert losses[0] > losses[1] > losses[2]  # the fakes D likes best cost G least
    assert changed(moved[0], moved[1]) and changed(moved[1], moved[2])
    # Other weights, so another checkpoint fingerprint (the pinned ones in test_specs.py show that 1.0,
    # the default, left every existing fingerprint as it was).
    top_half = dataclasses.replace(TINY, g_top_k=0.5)
    assert T.fingerprint(T.resolved(TINY), "h") != T.fingerprint(T.resolved(top_half), "h")


def test_gs_step_leaves_the_latents_mode_pick_as_it_is():
    cfg = dataclasses.replace(TINY, model="dcgan", latent_modes=10)
    gan = T.make_gan(T.resolved(cfg), select_device(cfg)[0])
    pick = gan.generator.get_layer("latent_mode").get_weights()[0]
    g0 = weights(gan.generator)
    tf.function(gan.g_step)(tf.random.stateless_normal((16, cfg.z_dim), seed=(1, 2)))
    assert changed(g0, weights(gan.generator))
    np.testing.assert_array_equal(gan.generator.get_layer("latent_mode").get_weights()[0], pick)
    z_alone = dataclasses.replace(cfg, latent_modes=0)
    assert T.fingerprint(T.resolved(z_alone), "h") != T.fingerprint(T.resolved(cfg), "h")


def test_info_weight_trains_g_and_the_mode_reader_to_tell_the_latents_modes_apart(images):
    """G's step still reports D's verdict alone; beside it, G and Q (the mode reader, on G's optimiser)
    minimise the weighted cross-entropy of z's mode under Q's reading of G's image, so that falls."""
    cfg = dataclasses.replace(TINY, model="dcgan", latent_modes=10)
    z = tf.random.stateless_normal((16, cfg.z_dim), seed=(1, 2))
    plain = T.make_gan(T.resolved(cfg), select_device(cfg)[0])
    info = T.make_gan(T.resolved(dataclasses.replace(cfg, info_weight=2.0)), select_device(cfg)[0])
    # Q is built last: under one seed G and D hold the weights they have without it.
    assert not changed(weights(plain.generator), weights(info.generator))
    assert not changed(weights(plain.discriminator), weights(info.discriminator))
    first = mode_cross_entropy(info, z)
    got = float(info.info_loss(z, info.mode_reader(info.generate(z, training=True), training=True)))
    assert got == pytest.approx(2.0 * first, rel=1e-5)
    step = tf.function(info.g_step)
    assert float(step(z)) == pytest.approx(float(tf.function(plain.g_step)(z)), rel=1e-6)
    q0 = weights(info.mode_reader)
    for _ in range(9):
        step(z)
    assert changed(q0, weights(info.mode_reader)), "Q did not learn in G's update"
    assert mode_cross_entropy(info, z) < 0.8 * first, (first, mode_cross_entropy(info, z))  # 2.31 -> 1.56
    info.set_data(images)  # the iteration reports Q's term beside the losses; a GAN without Q does not
    d0 = weights(info.discriminator)
    logs = tf.function(info.train_step)(None)
    assert float(logs["info_loss"]) > 0 and "info_loss" not in plain.history_metrics
    d1 = weights(info.discriminator)
    step(z)
    assert changed(d0, d1) and not changed(d1, weights(info.discriminator)), "G's step with Q moved D"
    with_info = dataclasses.replace(cfg, info_weight=1)
    assert T.fingerprint(T.resolved(cfg), "h") != T.fingerprint(T.resolved(with_info), "h")
