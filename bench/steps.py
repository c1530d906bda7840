"""The step's speed, the way `make bench` times it: the book's loop of Keras 2 calls, and the pipeline's
compiled step (`GAN.run`) on the backend this process runs."""

from __future__ import annotations

import ganlab  # noqa: F401  (first: it turns TensorFlow's oneDNN on before Keras loads TensorFlow)

# isort: split
import dataclasses
import math
import time

import keras
import numpy as np

from ganlab.core.config import TrainConfig
from ganlab.nets import models
from ganlab.training.devices import select_device
from ganlab.training.train import make_gan, resolved


def book_loop_its(x: np.ndarray, iterations: int, batch: int = 128, z_dim: int = 100) -> float:
    """The book's loop re-created in Keras 3: predict + three train_on_batch calls per iteration.

    `discriminator.trainable` is toggled around the calls, as the blog does, so that D really learns
    (it is read when each model's train function is first traced).
    """
    g, d = models.build("mlp", z_dim)
    d_model = keras.Sequential([d, keras.layers.Activation("sigmoid")])
    d_model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(), metrics=["accuracy"])
    d_model.trainable = False
    gan = keras.Sequential([keras.Input((z_dim,)), g, d_model])
    gan.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam())
    real, fake = np.ones((batch, 1)), np.zeros((batch, 1))
    rng = np.random.default_rng(0)

    def one():
        imgs = x[np.sort(rng.integers(0, len(x), batch))]
        gen = g.predict(rng.normal(0, 1, (batch, z_dim)), verbose=0)
        d_model.trainable = True
        d_model.train_on_batch(imgs, real)
        d_model.train_on_batch(gen, fake)
        d_model.trainable = False
        gan.train_on_batch(rng.normal(0, 1, (batch, z_dim)), real)

    for _ in range(5):  # trace everything before timing
        one()
    t0 = time.perf_counter()
    for _ in range(iterations):
        one()
    return iterations / (time.perf_counter() - t0)


class CallEnds(keras.callbacks.Callback):
    """When each compiled call of a `GAN.run` ended (both backends' runs report every call)."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def compiled_its(x: np.ndarray, cfg: TrainConfig, iterations: int, fused: bool = True) -> float:
    """Iterations/s of `GAN.run` (the pipeline's compiled step on this backend) at its steady pace, after a
    warm-up call: from the end of the timed run's first compiled call to the end of its last. The first call
    is left out with `fit()`'s set-up, whose cost moves from run to run on TensorFlow (docs/benchmarks.md,
    "Two ways a TensorFlow call runs") and which a `train` stage pays once a run. A run of fewer than three
    calls is lengthened to three or more, of the same length."""
    cfg = resolved(dataclasses.replace(cfg, backend=keras.backend.backend()))
    strategy, _ = select_device(cfg)
    gan = make_gan(cfg, strategy, fused)
    gan.set_data(x)
    spe = gan.steps_per_call(iterations)
    calls = max(3, iterations // spe)
    while math.gcd(gan.most_steps_per_execution // spe, calls) != 1:  # so that `run` keeps `spe` a call
        calls += 1
    gan.run(1, spe, [])  # one call of the timed calls' length: traces and compiles
    timer = CallEnds()
    # Each end is read once the call's work is done: Keras calls a callback that overrides on_train_batch_end
    # in line (not on its background thread) and converts the call's losses to numbers before it.
    gan.run(1, spe * calls, [timer])
    return spe * (calls - 1) / (timer.ends[-1] - timer.ends[0])
