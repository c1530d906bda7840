"""The GAN as a `keras.Model` whose compiled `train_step` does one full iteration.

One iteration, as in the book: D takes an optimiser step on a real batch, then
one on a fake batch (or one on both, `d_schedule: combined`), then G takes one
step through a fixed D. Each network's tape only sees its own variables, which
is what `discriminator.trainable = False` tried to do in Keras 2.

Randomness is stateless and keyed by (seed, iteration), so a run resumed from a
checkpoint draws the same batches and noise as one that never stopped.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _bce(labels_are_real: bool, logits: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy on logits against all-real or all-fake labels: softplus(-x) or softplus(x).

    The same numbers as tf.nn.sigmoid_cross_entropy_with_logits, but that op's gradient (a chain of
    select, exp and log1p) varied in the last bit between processes on the full data set, which made
    two runs with one seed drift apart; softplus has a fused gradient and repeats bit for bit.
    """
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.math.softplus(-logits if labels_are_real else logits))


class GAN(keras.Model):
    """Wraps a generator and a discriminator; `fit()` runs the adversarial training."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, z_dim: int, seed: int = 0,
                 d_schedule: str = "two_step", **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.z_dim = z_dim
        self.seed = seed
        self.d_schedule = d_schedule
        self.ema = None  # set with generator_ema by `track_ema`
        self.generator_ema: keras.Model | None = None
        self.images = None  # set by set_data; a plain tensor, so it is never checkpointed
        # Both networks are built from their Input layers; fit() needs to be told.
        self.built = True
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("d_loss", "g_loss", "d_loss_real", "d_loss_fake", "d_acc", "d_acc_real", "d_acc_fake")
        }

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
                batch_size: int, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.batch_size = batch_size

    def set_data(self, images) -> None:
        """Hold the training images (N, 28, 28, 1) on the device, sampled inside the step."""
        self.images = tf.convert_to_tensor(images, dtype=tf.float32)

    def track_ema(self, decay: float) -> None:
        """Keep `generator_ema`, a copy of G whose weights are an exponential moving average of G's."""
        self.ema = decay
        self.generator_ema = keras.models.clone_model(self.generator)
        self.generator_ema.name = "generator_ema"
        self.generator_ema.set_weights(self.generator.get_weights())

    def update_ema(self) -> None:
        """After G's step: average the trainable weights; copy BatchNorm's statistics, which describe
        the current G rather than a history of it."""
        for avg, w in zip(self.generator_ema.weights, self.generator.weights):
            avg.assign(self.ema * avg + (1.0 - self.ema) * w if w.trainable else w)

    @property
    def metrics(self):
        # Listing the trackers lets fit() reset them at each epoch (= one sample interval).
        return list(self.trackers.values())

    @property
    def iteration(self) -> tf.Variable:
        """Completed iterations: G steps once per iteration, and is saved in every checkpoint."""
        return self.g_optimizer.iterations

    def _seeds(self):
        ctx = tf.distribute.get_replica_context()
        replica = tf.cast(ctx.replica_id_in_sync_group if ctx else 0, tf.int64)
        it = tf.cast(self.iteration, tf.int64)
        # Distinct streams per replica and per draw; int64 keeps long runs from wrapping.
        base = tf.constant(self.seed, tf.int64) * 1_000_003 + replica
        return [tf.stack([base, it * 4 + k]) for k in range(4)]

    def call(self, z, training=False):
        return self.generate(z, training=training)

    def generate(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.cast(self.generator(z, training=training), tf.float32)

    @staticmethod
    def _scaled(optimizer, loss):
        """The loss to differentiate (inside the tape): the replica's share, loss-scaled for float16."""
        # Gradients are summed across replicas, so each replica contributes its share.
        return optimizer.scale_loss(loss / tf.distribute.get_strategy().num_replicas_in_sync)

    @staticmethod
    def _apply(optimizer, scaled_loss, variables, tape):
        grads = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(grads, variables))

    def d_step(self, real: tf.Tensor, fake: tf.Tensor):
        """Update D only: on real then on fake (two optimiser steps), or once on both ("combined")."""
        d_vars = self.discriminator.trainable_variables
        if self.d_schedule == "two_step":
            with tf.GradientTape() as tape:
                logits_real = self.discriminator(real, training=True)
                loss_real = _bce(True, logits_real)
                scaled = self._scaled(self.d_optimizer, loss_real)
            self._apply(self.d_optimizer, scaled, d_vars, tape)
            with tf.GradientTape() as tape:
                logits_fake = self.discriminator(fake, training=True)
                loss_fake = _bce(False, logits_fake)
                scaled = self._scaled(self.d_optimizer, loss_fake)
            self._apply(self.d_optimizer, scaled, d_vars, tape)
        else:
            with tf.GradientTape() as tape:
                logits_real = self.discriminator(real, training=True)
                logits_fake = self.discriminator(fake, training=True)
                loss_real, loss_fake = _bce(True, logits_real), _bce(False, logits_fake)
                scaled = self._scaled(self.d_optimizer, 0.5 * (loss_real + loss_fake))
            self._apply(self.d_optimizer, scaled, d_vars, tape)
        return loss_real, loss_fake, logits_real, logits_fake

    def g_step(self, z: tf.Tensor) -> tf.Tensor:
        """Update G only, through the D that D's own steps train.

        D runs in training mode, as the seeds' frozen D did inside Keras 2's `train_on_batch`:
        BatchNorm on batch statistics and Dropout on. Under `training=False` (moving statistics)
        G learns to fool an inference-mode D that nobody trains, while the training-mode D rejects
        every fake, and both losses fall to zero (the DCGAN did exactly that). D's frozen weights
        were not updated by that step either, so its BatchNorm moving statistics are put back.
        """
        g_vars = self.generator.trainable_variables
        frozen = self.discriminator.non_trainable_weights  # BN moving statistics (not the RNG state)
        saved = [tf.identity(v) for v in frozen]
        with tf.GradientTape() as tape:
            logits = self.discriminator(self.generate(z, training=True), training=True)
            g_loss = _bce(True, logits)
            scaled = self._scaled(self.g_optimizer, g_loss)
        self._apply(self.g_optimizer, scaled, g_vars, tape)
        for var, value in zip(frozen, saved):
            var.assign(value)
        return g_loss

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = self.batch_size // replicas
        s_idx, s_zd, s_zg, _ = self._seeds()
        n = tf.shape(self.images, out_type=tf.int64)[0]
        idx = tf.random.stateless_uniform([batch], seed=s_idx, minval=0, maxval=n, dtype=tf.int64)
        real = tf.gather(self.images, idx)
        # As the book's generator.predict(): fakes for D come from G in inference mode.
        fake = self.generate(tf.random.stateless_normal([batch, self.z_dim], seed=s_zd), training=False)
        loss_real, loss_fake, logits_real, logits_fake = self.d_step(real, fake)
        g_loss = self.g_step(tf.random.stateless_normal([batch, self.z_dim], seed=s_zg))
        if self.generator_ema is not None:
            self.update_ema()

        acc_real = tf.reduce_mean(tf.cast(logits_real >= 0, tf.float32))
        acc_fake = tf.reduce_mean(tf.cast(logits_fake < 0, tf.float32))
        values = {
            "d_loss": 0.5 * (loss_real + loss_fake), "g_loss": g_loss,
            "d_loss_real": loss_real, "d_loss_fake": loss_fake,
            "d_acc": 0.5 * (acc_real + acc_fake), "d_acc_real": acc_real, "d_acc_fake": acc_fake,
        }
        for name, value in values.items():
            self.trackers[name].update_state(value)
        logs = {name: t.result() for name, t in self.trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15's fit() averages multi-worker logs along axis 0, which a scalar lacks.
            logs = {name: tf.reshape(v, [1]) for name, v in logs.items()}
        return logs
