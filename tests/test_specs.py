"""Each model's reference settings: what a null key resolves to, what a set one wins, what resumes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ganlab.core.config import ConfigError, TrainConfig, load_params
from ganlab.training import train as T
from ganlab.training.devices import select_device

from .conftest import TINY
from .scratch import ROOT


@pytest.mark.parametrize("model, want", [("mlp", (20_000, 1_000, 1_000, 128)), ("mlp_bn", (30_000, 1_000, 1_000, 128)),
                                         ("dcgan", (3_000, 300, 300, 200))])
def test_null_lengths_resolve_to_the_models_reference(model, want):
    r = T.resolved(TrainConfig(model=model))
    assert (r.iterations, r.sample_interval, r.checkpoint_interval, r.batch_size) == want
    assert r.steps_per_execution == (1 if model == "dcgan" else 20)


def test_set_lengths_win_and_a_null_checkpoint_lands_on_an_interval_end():
    r = T.resolved(TrainConfig(model="dcgan", iterations=50, sample_interval=7))
    assert (r.iterations, r.sample_interval, r.checkpoint_interval) == (50, 7, 301)
    r = T.resolved(TrainConfig(model="mlp", iterations=10, sample_interval=5, checkpoint_interval=5))
    assert (r.iterations, r.sample_interval, r.checkpoint_interval) == (10, 5, 5)
    # The run length is not part of what makes a checkpoint reusable; the resolved batch size is.
    def fp(**kw):
        return T.fingerprint(T.resolved(TrainConfig(model="dcgan", **kw)), "h")

    assert fp() == fp(iterations=9) == fp(batch_size=200) != fp(batch_size=100)
    # Label smoothing changes the weights: a null one is the model's reference (0.1 for dcgan_tuned).
    def fpt(**kw):
        return T.fingerprint(T.resolved(TrainConfig(model="dcgan_tuned", **kw)), "h")

    assert fpt() == fpt(label_smoothing=0.1) != fpt(label_smoothing=0.0)


def test_params_yaml_ships_the_reference_lengths():
    cfg = load_params(ROOT / "params.yaml").train
    assert (cfg.iterations, cfg.sample_interval, cfg.checkpoint_interval, cfg.batch_size) == (None,) * 4


@pytest.mark.parametrize("model, want", [("dcgan", False), ("cdcgan", True), ("mlp", False)])
def test_the_spec_sets_which_g_d_sees(model, want):
    cfg = dataclasses.replace(TINY, model=model)
    assert T.make_gan(T.resolved(cfg), select_device(cfg)[0]).fakes_training is want


@pytest.mark.parametrize("model, want", [("dcgan_tuned", 0.1), ("dcgan", 0.0), ("mlp", 0.0)])
def test_a_null_label_smoothing_is_the_models_reference_and_a_set_one_wins(model, want):
    assert T.resolved(dataclasses.replace(TINY, model=model)).label_smoothing == want
    assert T.resolved(dataclasses.replace(TINY, model=model, label_smoothing=0.0)).label_smoothing == 0.0


def test_d_takes_its_own_learning_rate_and_a_null_one_is_the_models_reference():
    def rates(**kw):
        r = T.resolved(dataclasses.replace(TINY, **kw))
        return r.learning_rate, r.d_learning_rate

    assert rates(model="dcgan_tuned") == (4e-4, 2e-4)  # G twice D (its sweep)
    assert rates(model="mlp") == (1e-3, 1e-3) and rates(model="mlp", learning_rate=5e-4) == (5e-4, 5e-4)
    assert rates(model="dcgan_tuned", learning_rate=1e-4, d_learning_rate=3e-4) == (1e-4, 3e-4)
    assert rates(model="dcgan_tuned", learning_rate=1e-4) == (1e-4, 1e-4)  # a set G rate: one for both
    assert rates(model="dcgan_tuned", d_learning_rate=1e-4) == (4e-4, 1e-4)
    # Only a rate of D's own changes the fingerprint: D's rate written out as G's resumes a null one's run.
    def fp(**kw):
        return T.fingerprint(T.resolved(dataclasses.replace(TINY, **kw)), "h")

    assert fp() == fp(d_learning_rate=1e-3) != fp(d_learning_rate=4e-4)
    gan = T.make_gan(T.resolved(dataclasses.replace(TINY, learning_rate=1e-3, d_learning_rate=5e-3)),
                     select_device(TINY)[0])
    got = [float(np.asarray(opt.learning_rate)) for opt in (gan.d_optimizer, gan.g_optimizer)]
    assert got == pytest.approx([5e-3, 1e-3])


def test_a_null_ema_is_the_models_reference_and_zero_is_off():
    def ema(**kw):
        return T.resolved(dataclasses.replace(TINY, **kw)).ema

    assert ema(model="dcgan_tuned") == 0.995 and ema(model="mlp") == ema(model="dcgan") == 0.0
    assert ema(model="dcgan_tuned", ema=0) == 0.0 and ema(model="mlp", ema=0.9) == 0.9
    gan = T.make_gan(T.resolved(dataclasses.replace(TINY, model="dcgan_tuned", ema=0)), select_device(TINY)[0])
    assert gan.generator_ema is None
    with pytest.raises(ConfigError, match="train.keep = best_ema .* set train.ema"):
        T.resolved(dataclasses.replace(TINY, model="mlp", keep="best_ema"))
    assert T.resolved(dataclasses.replace(TINY, model="dcgan_tuned", keep="best_ema")).keep == "best_ema"


def test_a_decaying_rate_falls_to_zero_over_the_runs_last_fraction_and_only_then(images, tmp_path):
    from .test_train import run

    cfg = dataclasses.replace(TINY, learning_rate=1e-3, d_learning_rate=4e-4, lr_decay=0.5)  # from iteration 20
    gan = T.make_gan(T.resolved(cfg), select_device(cfg)[0])

    def rates(iteration):  # D takes two optimiser steps per iteration (real, then fake)
        gan.d_optimizer.iterations.assign(2 * iteration)
        gan.g_optimizer.iterations.assign(iteration)
        return [float(np.asarray(opt.learning_rate)) for opt in (gan.d_optimizer, gan.g_optimizer)]

    assert rates(0) == rates(20) == pytest.approx([4e-4, 1e-3])
    assert rates(30) == pytest.approx([2e-4, 5e-4]) and rates(40) == [0.0, 0.0]
    # Training follows it: the same losses as constant rates up to iteration 20, others after.
    decayed, constant = (run(dataclasses.replace(cfg, lr_decay=x), images, tmp_path, str(x)).history for x in (0.5, 0))
    cols = ["d_loss", "g_loss"]
    np.testing.assert_array_equal(decayed[cols][:2].to_numpy(), constant[cols][:2].to_numpy())
    assert not np.allclose(decayed[cols][2:].to_numpy(), constant[cols][2:].to_numpy())

    def fp(**kw):  # a schedule spans the run, so its length is hashed; constant rates hash as a null decay
        return T.fingerprint(T.resolved(dataclasses.replace(TINY, **kw)), "h")

    assert fp(lr_decay=0) == fp() == fp(iterations=80) != fp(lr_decay=0.5) != fp(lr_decay=0.5, iterations=80)


@pytest.mark.parametrize("kw, pinned", [
    (dict(model="mlp"), "366826a579f59950"),
    (dict(model="dcgan_tuned", learning_rate=2e-4, ema=0, latent_modes=0), "2c1c226c42b32dbc"),
    (dict(model="dcgan_tuned", learning_rate=2e-4, label_smoothing=0.0, ema=0, latent_modes=0), "979e490a2f5f671b"),
])
def test_the_fingerprints_of_existing_checkpoints_stay_put(kw, pinned):
    """Checkpoints of these runs exist: a key added to TrainConfig must drop out of the hash at its
    neutral value (as `d_learning_rate` equal to G's and a zero `label_smoothing` do), or they no
    longer resume. Change a pin only with CHECKPOINT_FORMAT."""
    assert T.fingerprint(T.resolved(TrainConfig(backend="tensorflow", **kw)), "h") == pinned
