"""The GAN's step on TensorFlow: a compiled `train_step` that `fit()` runs, under any tf.distribute strategy."""

from __future__ import annotations

import keras
import tensorflow as tf

from ganlab.training import gan


class GAN(gan.GAN):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.history_metrics}

    @property
    def metrics(self):
        # Listing the trackers lets fit() reset them at each epoch (= one sample interval).
        return list(self.trackers.values())

    def set_data(self, images, labels=None) -> None:
        self.images = tf.convert_to_tensor(images, dtype=tf.float32)
        if self.conditional:
            self.labels = tf.reshape(tf.convert_to_tensor(labels, dtype=tf.int32), (-1, 1))

    def run(self, epochs: int, steps: int, callbacks: list[keras.callbacks.Callback]) -> None:
        # steps_per_execution is baked in when fit() traces its loop: retrace when it changes.
        spe = self.steps_per_call(steps)
        if spe != self.steps_per_execution:
            self.steps_per_execution = spe
            self.make_train_function(force=True)
        replicas = self.distribute_strategy.num_replicas_in_sync  # the strategy the GAN was built under
        # fit() needs an input; the step samples its own batches, so feed a dummy that never ends.
        # It has one row per replica because distributed fit() splits each element's first axis.
        dummy = tf.data.Dataset.from_tensors(tf.zeros((replicas,))).repeat()
        # Nothing to shard across workers (a file-less dataset would make tf.data warn and fall back).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        self.fit(dummy.with_options(options), epochs=epochs, steps_per_epoch=steps, callbacks=callbacks,
                 verbose=0, shuffle=False)

    def update_ema(self) -> None:
        averages = self.generator_ema.weights
        for avg, value in zip(averages, self.ema_values([a.value for a in averages],
                                                        [w.value for w in self.generator.weights])):
            avg.assign(value)

    def _seeds(self):
        ctx = tf.distribute.get_replica_context()
        replica = tf.cast(ctx.replica_id_in_sync_group if ctx else 0, tf.int64)
        it = tf.cast(self.iteration, tf.int64)
        # Distinct streams per replica and per draw; int64 keeps long runs from wrapping.
        base = tf.constant(self.seed, tf.int64) * 1_000_003 + replica
        return [tf.stack([base, it * 4 + k]) for k in range(4)]

    @staticmethod
    def _scaled(optimizer, loss):
        """The loss to differentiate (inside the tape): the replica's share, loss-scaled for float16."""
        # Gradients are summed across replicas, so each replica contributes its share.
        return optimizer.scale_loss(loss / tf.distribute.get_strategy().num_replicas_in_sync)

    @staticmethod
    def _apply(optimizer, scaled_loss, variables, tape):
        grads = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(grads, variables))

    def d_step(self, real: tf.Tensor, fake: tf.Tensor, real_digits=None, fake_digits=None):
        """Update D only: on real then on fake (two optimiser steps), or once on both ("combined")."""
        d_vars = self.discriminator.trainable_variables
        real, fake = self.d_inputs(real, real_digits), self.d_inputs(fake, fake_digits)
        if self.d_schedule == "two_step":
            with tf.GradientTape() as tape:
                logits_real = self.discriminator(real, training=True)
                loss_real = self.d_loss(True, logits_real)
                scaled = self._scaled(self.d_optimizer, loss_real)
            self._apply(self.d_optimizer, scaled, d_vars, tape)
            with tf.GradientTape() as tape:
                logits_fake = self.discriminator(fake, training=True)
                loss_fake = self.d_loss(False, logits_fake)
                scaled = self._scaled(self.d_optimizer, loss_fake)
            self._apply(self.d_optimizer, scaled, d_vars, tape)
        else:
            with tf.GradientTape() as tape:
                logits_real = self.discriminator(real, training=True)
                logits_fake = self.discriminator(fake, training=True)
                loss_real, loss_fake = self.d_loss(True, logits_real), self.d_loss(False, logits_fake)
                scaled = self._scaled(self.d_optimizer, 0.5 * (loss_real + loss_fake))
            self._apply(self.d_optimizer, scaled, d_vars, tape)
        return loss_real, loss_fake, logits_real, logits_fake

    def g_step(self, z: tf.Tensor, digits=None) -> tf.Tensor:
        """Update G only, through the D that D's own steps train.

        D runs in training mode, as the seeds' frozen D did inside Keras 2's `train_on_batch`:
        BatchNorm on batch statistics and Dropout on. Under `training=False` (moving statistics)
        G learns to fool an inference-mode D that nobody trains, while the training-mode D rejects
        every fake, and both losses fall to zero (the DCGAN did exactly that). D's frozen weights
        were not updated by that step either, so its BatchNorm moving statistics are put back.
        """
        g_vars = self.g_variables()
        frozen = self.discriminator.non_trainable_weights  # BN moving statistics (not the RNG state)
        saved = [tf.identity(v) for v in frozen]
        with tf.GradientTape() as tape:
            fake = self.generate(z, digits, training=True)
            logits = self.discriminator(self.d_inputs(fake, digits), training=True)
            g_loss = loss = self.g_loss(logits)
            if self.mode_reader is not None:  # reported apart: g_loss stays D's verdict alone
                info = self.info_loss(z, self.mode_reader(fake, training=True))
                loss = loss + info
            scaled = self._scaled(self.g_optimizer, loss)
        self._apply(self.g_optimizer, scaled, g_vars, tape)
        for var, value in zip(frozen, saved):
            var.assign(value)
        if self.mode_reader is not None:
            self.trackers["info_loss"].update_state(info)
        return g_loss

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = self.batch_size // replicas
        s_idx, s_zd, s_zg, s_digits = self._seeds()
        n = tf.shape(self.images, out_type=tf.int64)[0]
        idx = tf.random.stateless_uniform([batch], seed=s_idx, minval=0, maxval=n, dtype=tf.int64)
        real = tf.gather(self.images, idx)
        real_digits = fake_digits = g_digits = None
        if self.conditional:  # real images with their digits; each fake asks for a digit drawn uniformly
            real_digits = tf.gather(self.labels, idx)
            fake_digits, g_digits = tf.unstack(
                tf.random.stateless_uniform([2, batch, 1], seed=s_digits, minval=0, maxval=10, dtype=tf.int32))
        fake = self.generate(tf.random.stateless_normal([batch, self.z_dim], seed=s_zd), fake_digits,
                             training=self.fakes_training)
        loss_real, loss_fake, logits_real, logits_fake = self.d_step(real, fake, real_digits, fake_digits)
        g_loss = self.g_step(tf.random.stateless_normal([batch, self.z_dim], seed=s_zg), g_digits)
        if self.generator_ema is not None:
            self.update_ema()

        for name, value in gan.step_values(loss_real, loss_fake, g_loss, logits_real, logits_fake).items():
            self.trackers[name].update_state(value)
        logs = {name: t.result() for name, t in self.trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15's fit() averages multi-worker logs along axis 0, which a scalar lacks.
            logs = {name: tf.reshape(v, [1]) for name, v in logs.items()}
        return logs
