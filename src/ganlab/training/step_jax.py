"""The GAN's step on JAX: a pure function of explicit state under `jax.jit`, several iterations a call.

`fit()`'s JAX trainer threads only `self.optimizer`'s variables, and a GAN has two optimisers, so
this module runs its own loop, as keras.io's "custom train step in JAX" guide does. Each compiled
call takes every variable as an array (G and D, with BatchNorm statistics and Dropout's seed state,
both optimisers' slots, the EMA, Q for `train.info_weight`), runs `steps_per_execution` iterations
in `lax.fori_loop`, and returns them. The Keras variables are brought up to date after every call, so callbacks, samples
and checkpoints see what `fit()` would show them; the callbacks are driven through `CallbackList`.

On several devices (`ganlab.training.devices.Replicas`) the state is replicated and each iteration's
batch split among them; the compiled call is the same function, partitioned by `jax.jit`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import keras
import numpy as np

from ganlab.training import gan
from ganlab.training.devices import Replicas


class GAN(gan.GAN):
    def __init__(self, *args, replicas: Replicas | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.replicas = replicas or Replicas()

    def set_data(self, images, labels=None) -> None:
        # Every device holds the whole training set; each draws its share of a batch from it.
        self.images = self.replicas.replicate(np.asarray(images, dtype=np.float32))
        # A stand-in for unconditional models, so the compiled call has one signature.
        self.labels = self.replicas.replicate(
            np.asarray(labels if self.conditional else [0], dtype=np.int32).reshape(-1, 1))

    # ------------------------------------------------------------ state

    def _holders(self) -> dict[str, list]:
        """The Keras variables behind each part of the state, in a fixed order."""
        g, d = self.generator, self.discriminator
        return {"g_tr": g.trainable_variables, "g_nt": g.non_trainable_variables,
                "d_tr": d.trainable_variables, "d_nt": d.non_trainable_variables,
                "g_opt": self.g_optimizer.variables, "d_opt": self.d_optimizer.variables,
                "ema": self.generator_ema.weights if self.generator_ema is not None else [],
                "q_tr": self.mode_reader.trainable_variables if self.mode_reader is not None else [],
                "q_nt": self.mode_reader.non_trainable_variables if self.mode_reader is not None else []}

    def state(self) -> dict[str, list]:
        return {part: [v.value for v in holders] for part, holders in self._holders().items()}

    def sync(self, state: dict[str, list]) -> None:
        """Write the arrays of `state` back into the Keras variables (this process's copy)."""
        state = self.replicas.local(state)
        for part, holders in self._holders().items():
            for var, value in zip(holders, state[part]):
                var.assign(value)

    @functools.cached_property
    def _layout(self):
        """Where each of G's weights sits in the state, and which of D's non-trainable variables are
        BatchNorm statistics (G's step puts those back) rather than Dropout's seed state."""
        g_tr = {id(v): i for i, v in enumerate(self.generator.trainable_variables)}
        g_nt = {id(v): i for i, v in enumerate(self.generator.non_trainable_variables)}
        g_weights = [("g_tr", g_tr[id(w)]) if id(w) in g_tr else ("g_nt", g_nt[id(w)])
                     for w in self.generator.weights]
        stats = {id(v) for v in self.discriminator.non_trainable_weights}
        d_stats = [id(v) in stats for v in self.discriminator.non_trainable_variables]
        return g_weights, d_stats

    # ------------------------------------------------------------ one iteration

    def _d_step(self, d_tr, d_nt, d_opt, real, fake, real_digits=None, fake_digits=None):
        """Update D only: on real then on fake (two optimiser steps), or once on both ("combined")."""
        d = self.discriminator
        real, fake = self.d_inputs(real, real_digits), self.d_inputs(fake, fake_digits)

        def loss(labels_are_real, x, tr, nt):
            logits, nt = d.stateless_call(tr, nt, x, training=True)
            return self.d_loss(labels_are_real, logits), (nt, logits)

        if self.d_schedule == "two_step":
            for labels_are_real, x in ((True, real), (False, fake)):
                (value, (d_nt, logits)), grads = jax.value_and_grad(
                    functools.partial(loss, labels_are_real, x), has_aux=True)(d_tr, d_nt)
                d_tr, d_opt = self.d_optimizer.stateless_apply(d_opt, grads, d_tr)
                if labels_are_real:
                    loss_real, logits_real = value, logits
            return d_tr, d_nt, d_opt, (loss_real, value, logits_real, logits)

        def both(tr, nt):
            l_real, (nt, logits_real) = loss(True, real, tr, nt)
            l_fake, (nt, logits_fake) = loss(False, fake, tr, nt)
            return 0.5 * (l_real + l_fake), (nt, (l_real, l_fake, logits_real, logits_fake))

        (_, (d_nt, out)), grads = jax.value_and_grad(both, has_aux=True)(d_tr, d_nt)
        d_tr, d_opt = self.d_optimizer.stateless_apply(d_opt, grads, d_tr)
        return d_tr, d_nt, d_opt, out

    def _g_step(self, s, z, digits=None):
        """Update G only, through the D that D's own steps train (training mode, as on TensorFlow:
        see `step_tensorflow.GAN.g_step`); D's BatchNorm statistics are put back afterwards, while
        Dropout's seed state moves on. Q (`mode_reader`), when there is one, learns in the same update."""
        g, d, q = self.generator, self.discriminator, self.mode_reader

        def loss(g_tr, q_tr, g_nt, d_nt):
            fake, g_nt = g.stateless_call(g_tr, g_nt, self.g_inputs(z, digits), training=True)
            fake = fake.astype(jnp.float32)
            logits, d_nt = d.stateless_call(s["d_tr"], d_nt, self.d_inputs(fake, digits), training=True)
            g_loss = self.g_loss(logits)
            info = None
            if q is not None:  # reported apart: g_loss stays D's verdict alone
                info = self.info_loss(z, q.stateless_call(q_tr, s["q_nt"], fake, training=True)[0])
            return g_loss if info is None else g_loss + info, (g_loss, info, g_nt, d_nt)

        (_, (g_loss, info, g_nt, d_nt)), (g_grads, q_grads) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            s["g_tr"], s["q_tr"], s["g_nt"], s["d_nt"])
        # One optimiser over G's variables then Q's, the order `g_variables` built it in.
        new, g_opt = self.g_optimizer.stateless_apply(s["g_opt"], g_grads + q_grads, s["g_tr"] + s["q_tr"])
        g_tr, q_tr = new[:len(g_grads)], new[len(g_grads):]
        d_nt = [old if is_stat else new for old, new, is_stat in zip(s["d_nt"], d_nt, self._layout[1])]
        return g_tr, g_nt, g_opt, d_nt, (q_tr, info), g_loss

    def _iteration(self, s: dict, images, labels, it):
        # Keyed by (seed, iteration): a resumed run draws what an unbroken one would.
        # The same draws on any number of devices: each takes its slice of the batch (`split`).
        k_idx, k_zd, k_zg, k_digits = jax.random.split(jax.random.fold_in(jax.random.key(self.seed), it), 4)
        split = self.replicas.split
        idx = split(jax.random.randint(k_idx, (self.batch_size,), 0, images.shape[0]))
        real, real_digits = images[idx], None
        fake_digits = g_digits = None
        if self.conditional:  # real images with their digits; each fake asks for a digit drawn uniformly
            real_digits = labels[idx]
            digits = jax.random.randint(k_digits, (2, self.batch_size, 1), 0, 10, dtype=jnp.int32)
            fake_digits, g_digits = split(digits[0]), split(digits[1])
        # In training mode G's BatchNorm statistics move, as they do on TensorFlow.
        fake, g_nt = self.generator.stateless_call(
            s["g_tr"], s["g_nt"], self.g_inputs(split(jax.random.normal(k_zd, (self.batch_size, self.z_dim))),
                                                fake_digits),
            training=self.fakes_training)
        s = {**s, "g_nt": g_nt}
        d_tr, d_nt, d_opt, (loss_real, loss_fake, logits_real, logits_fake) = self._d_step(
            s["d_tr"], s["d_nt"], s["d_opt"], real, fake.astype(jnp.float32), real_digits, fake_digits)
        s = {**s, "d_tr": d_tr, "d_nt": d_nt, "d_opt": d_opt}
        g_tr, g_nt, g_opt, d_nt, (q_tr, info), g_loss = self._g_step(
            s, split(jax.random.normal(k_zg, (self.batch_size, self.z_dim))), g_digits)
        s = {**s, "g_tr": g_tr, "g_nt": g_nt, "g_opt": g_opt, "d_nt": d_nt, "q_tr": q_tr}
        if self.generator_ema is not None:
            s["ema"] = self.ema_values(s["ema"], [s[part][i] for part, i in self._layout[0]])
        return s, gan.step_values(loss_real, loss_fake, g_loss, logits_real, logits_fake, info)

    @functools.cached_property
    def _calls(self) -> dict:
        return {}  # steps -> its compiled function (a few: the interval's, a resumed or a short last one)

    def _compiled(self, steps: int):
        """`steps` iterations in one compiled call: (state, images, labels, first iteration, sums) -> (state, sums)."""
        if steps in self._calls:
            return self._calls[steps]

        def many(state, images, labels, start, sums):
            def body(i, carry):
                state, sums = carry
                state, values = self._iteration(state, images, labels, start + i)
                return state, {k: sums[k] + values[k] for k in sums}
            if steps == 1:
                # XLA's CPU backend runs a convolution inside a loop about 60x slower than outside one
                # (docs/benchmarks.md), and the DCGANs take one step a call.
                return body(0, (state, sums))
            return jax.lax.fori_loop(0, steps, body, (state, sums))
        self._calls[steps] = self.replicas.jit(many)
        return self._calls[steps]

    # ------------------------------------------------------------ the loop

    def run(self, epochs: int, steps: int, callbacks: list[keras.callbacks.Callback]) -> None:
        spe = self.steps_per_execution = self.steps_per_call(steps)
        calls = keras.callbacks.CallbackList(callbacks, model=self)
        self.stop_training = False
        put, local = self.replicas.replicate, self.replicas.local
        state, it = put(self.state()), int(self.iteration.numpy())
        calls.on_train_begin()
        for epoch in range(epochs):
            calls.on_epoch_begin(epoch)
            sums = put({k: np.zeros((), np.float32) for k in self.history_metrics})
            for call in range(steps // spe):
                calls.on_train_batch_begin(call)
                state, sums = self._compiled(spe)(state, self.images, self.labels, put(np.int32(it)), sums)
                self.replicas.wait(sums)
                it += spe
                self.sync(state)
                calls.on_train_batch_end(call, {k: v / ((call + 1) * spe) for k, v in local(sums).items()})
            calls.on_epoch_end(epoch, {k: float(v) / steps for k, v in local(sums).items()})
            if self.stop_training:
                break
        calls.on_train_end()
