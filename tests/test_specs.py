"""Each model's reference settings: what a null key resolves to, what a set one wins, what resumes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ganlab.core.config import TrainConfig, load_params
from ganlab.training import train as T
from ganlab.training.devices import select_device

from .conftest import ROOT, TINY


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


@pytest.mark.parametrize("kw, pinned", [
    (dict(model="mlp"), "366826a579f59950"),
    (dict(model="dcgan_tuned", learning_rate=2e-4), "2c1c226c42b32dbc"),
    (dict(model="dcgan_tuned", learning_rate=2e-4, label_smoothing=0.0), "979e490a2f5f671b"),
])
def test_the_fingerprints_of_existing_checkpoints_stay_put(kw, pinned):
    """Checkpoints of these runs exist: a key added to TrainConfig must drop out of the hash at its
    neutral value (as `d_learning_rate` equal to G's and a zero `label_smoothing` do), or they no
    longer resume. Change a pin only with CHECKPOINT_FORMAT."""
    assert T.fingerprint(T.resolved(TrainConfig(backend="tensorflow", **kw)), "h") == pinned
