"""Data-parallel JAX on two CPU devices: one model on every replica, the one-device run's numbers."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from ganlab.core.config import TrainConfig
from ganlab.core.files import StageError
from ganlab.training import train as T
from ganlab.training.devices import select_device

from ..conftest import stop_at

# float32: bfloat16's rounding differs with the order of a sum, and so between one device and two.
CFG = TrainConfig(iterations=50, sample_interval=10, checkpoint_interval=10, batch_size=16, steps_per_execution=5,
                  width=0.25, backend="jax", model="mlp_bn", ema=0.9, mixed_precision="off", quality_samples=0)


def run(cfg, images, tmp_path, name, **kw):
    return T.train(T.resolved(cfg), images, "h", tmp_path / name / "samples", tmp_path / name / "ckpt", **kw)


def test_this_process_sees_two_devices_and_auto_uses_both():
    assert len(jax.local_devices()) == 2
    replicas, info = select_device(CFG)
    assert replicas.num_replicas_in_sync == 2 and info["strategy"] == "DataParallel" and info["replicas"] == 2
    assert select_device(dataclasses.replace(CFG, strategy="one_device"))[1]["replicas"] == 1


# The convolutional GANs agree to 1e-7 for their first iterations, then part (Adam's first steps and the
# game amplify float32's rounding of sums taken in another order): cdcgan 3e-7 after 20, 2e-4 after 50.
@pytest.mark.parametrize("model, steps", [("mlp_bn", 50), ("cdcgan", 10)])
def test_every_replica_ends_with_the_same_weights_and_the_one_device_losses(model, steps, images, tmp_path):
    """The compiled step on two devices: each device's copy of every array (both networks, BatchNorm
    statistics, both optimisers, the EMA) is the same, and the losses are one device's."""
    cfg = T.resolved(dataclasses.replace(CFG, model=model, width=0.125 if model == "cdcgan" else 0.25))
    labels = np.arange(len(images)) % 10
    sums = {}
    for strategy in ("one_device", "mirrored"):
        c = dataclasses.replace(cfg, strategy=strategy)
        replicas, _ = select_device(c)
        gan = T.make_gan(c, replicas)
        gan.set_data(images, labels)
        put = replicas.replicate
        zeros = put({k: np.zeros((), np.float32) for k in ("d_loss", "g_loss")})
        args = (put(gan.state()), gan.images, gan.labels, put(np.int32(0)), zeros)
        state, sums[strategy] = gan._compiled(steps)(*args)
        if strategy == "mirrored":
            # Split, not copied: the compiled step sums gradients across the two devices.
            assert "all-reduce" in gan._compiled(steps).lower(*args).compile().as_text()
            leaves = jax.tree.leaves(state)
            assert all(len(x.addressable_shards) == 2 for x in leaves)
            for x in leaves:
                first, second = (np.asarray(s.data) for s in x.addressable_shards)
                np.testing.assert_array_equal(first, second)
            assert jax.tree.leaves(state["ema"]), "the EMA is not in the state"
    for key in ("d_loss", "g_loss"):
        np.testing.assert_allclose(float(sums["mirrored"][key]) / steps, float(sums["one_device"][key]) / steps,
                                   rtol=0, atol=1e-4)


def test_a_run_on_two_devices_resumes_exactly(images, tmp_path):
    whole = run(CFG, images, tmp_path, "whole")
    assert whole.state["device"]["replicas"] == 2
    with pytest.raises(KeyboardInterrupt):
        run(CFG, images, tmp_path, "cut", callbacks=(stop_at(25),))
    resumed = run(CFG, images, tmp_path, "cut")
    assert resumed.resumed_from == 25
    assert T.weights_digest(resumed.gan) == T.weights_digest(whole.gan)
    # Every interval but the cut one (whose row averages the resumed part only) logs the same losses.
    whole_rows = whole.history[whole.history.iteration != 30].to_numpy()
    np.testing.assert_array_equal(resumed.history[resumed.history.iteration != 30].to_numpy(), whole_rows)


def test_a_batch_that_does_not_split_over_the_devices_is_refused_in_one_line():
    cfg = T.resolved(dataclasses.replace(CFG, batch_size=15))
    with pytest.raises(StageError, match="train.batch_size 15 does not split over 2 devices") as err:
        T.make_gan(cfg, select_device(cfg)[0])
    assert "\n" not in str(err.value)


def test_multi_worker_without_its_variables_is_one_line(monkeypatch):
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", raising=False)
    with pytest.raises(StageError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES") as err:
        select_device(dataclasses.replace(CFG, strategy="multi_worker"))
    assert "\n" not in str(err.value)
