"""The GAN as a `keras.Model`: both networks, both optimisers, and what every backend's step shares.

One iteration, as in the book: D takes an optimiser step on a real batch, then
one on a fake batch (or one on both, `d_schedule: combined`), then G takes one
step through D. Each network's update only touches its own variables, which is
what `discriminator.trainable = False` tried to do in Keras 2.

The step itself is written once per backend, beside this file: `step_tensorflow.py`
(a compiled `train_step` under `fit()`) and `step_jax.py` (a stateless step under
`jax.jit`). `make_gan` builds the one for the backend Keras runs on.

Randomness is stateless and keyed by (seed, iteration), so a run resumed from a
checkpoint draws the same batches and noise as one that never stopped.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from ganlab.nets.models import d_input, g_input, grid_digits, latent_mode

HISTORY_METRICS = ("d_loss", "g_loss", "d_loss_real", "d_loss_fake", "d_acc", "d_acc_real", "d_acc_fake")


def bce(labels_are_real: bool, logits, smoothing: float = 0.0):
    """Binary cross-entropy on logits against all-real or all-fake labels: softplus(-x) or softplus(x).
    With `smoothing` s, real labels are 1 - s (one-sided label smoothing, for D's real batch only):
    (1 - s) softplus(-x) + s softplus(x), whose minimum is at x = log((1 - s) / s), not at infinity.

    The same numbers as sigmoid cross-entropy with logits, but TensorFlow's op for that has a gradient
    (a chain of select, exp and log1p) that varied in the last bit between processes on the full data
    set, which made two runs with one seed drift apart; softplus has a fused gradient and repeats.
    """
    logits = ops.cast(logits, "float32")
    loss = ops.softplus(-logits if labels_are_real else logits)
    if smoothing:  # a Python branch: at 0 the graph, and so the weights, are those without smoothing
        loss = (1.0 - smoothing) * loss + smoothing * ops.softplus(logits)
    return ops.mean(loss)


def step_values(loss_real, loss_fake, g_loss, logits_real, logits_fake, info_loss=None) -> dict:
    """One iteration's figures, as the history and the progress bar show them; `info_loss`, Q's weighted
    cross-entropy of the mode (`GAN.info_loss`), only for a GAN with a mode reader."""
    acc_real = ops.mean(ops.cast(logits_real >= 0, "float32"))
    acc_fake = ops.mean(ops.cast(logits_fake < 0, "float32"))
    return {
        "d_loss": 0.5 * (loss_real + loss_fake), "g_loss": g_loss,
        "d_loss_real": loss_real, "d_loss_fake": loss_fake,
        "d_acc": 0.5 * (acc_real + acc_fake), "d_acc_real": acc_real, "d_acc_fake": acc_fake,
    } | ({} if info_loss is None else {"info_loss": info_loss})


class GAN(keras.Model):
    """Wraps a generator and a discriminator. `run(epochs, steps, callbacks)` trains them: one
    Keras epoch is one sample interval, and the callbacks see it as they would under `fit()`."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, z_dim: int, seed: int = 0,
                 d_schedule: str = "two_step", conditional: bool = False, fakes_training: bool = False,
                 label_smoothing: float = 0.0, g_top_k: float = 1.0, mode_reader: keras.Model | None = None,
                 info_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.z_dim = z_dim
        # G takes {"z", "digit"} and D {"image", "digit"}; batches draw real labels with their images.
        self.conditional = conditional
        # D's fakes come from G in inference mode (the seeds' `generator.predict`), or, with
        # `fakes_training`, in training mode: the G that G's own step trains (see ModelSpec).
        self.fakes_training = fakes_training
        # D's real targets are 1 - label_smoothing (G's target stays 1): a D that cannot grow its
        # real logits without bound leaves G a gradient (Salimans et al. 2016, one-sided).
        self.label_smoothing = label_smoothing
        self.g_top_k = g_top_k
        # InfoGAN's term (`train.info_weight`): G and `mode_reader` (Q) also minimise info_weight x the
        # cross-entropy of the latent's mode that Q reads back from G's image. Q rides on G's optimiser.
        self.mode_reader = mode_reader
        self.info_weight = info_weight
        self.seed = seed
        self.d_schedule = d_schedule
        self.ema = None  # set with generator_ema by `track_ema`
        self.generator_ema: keras.Model | None = None
        self.images = self.labels = None  # set by set_data; plain arrays, so never checkpointed
        # Both networks are built from their Input layers; fit() needs to be told.
        self.built = True

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
                batch_size: int, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.batch_size = batch_size
        # `run` lowers steps_per_execution to divide each interval; this is the ceiling it returns to.
        self.most_steps_per_execution = self.steps_per_execution

    def track_ema(self, decay: float) -> None:
        """Keep `generator_ema`, a copy of G whose weights are an exponential moving average of G's."""
        self.ema = decay
        self.generator_ema = keras.models.clone_model(self.generator)
        self.generator_ema.name = "generator_ema"
        self.generator_ema.set_weights(self.generator.get_weights())

    def ema_values(self, averages: list, weights: list) -> list:
        """The EMA after G's step: the trainable weights averaged, BatchNorm's statistics copied
        (they describe the current G rather than a history of it). Pure, for every backend."""
        return [self.ema * avg + (1.0 - self.ema) * w if var.trainable else w
                for avg, w, var in zip(averages, weights, self.generator.weights)]

    def checkpointed(self) -> dict[str, list]:
        """Every variable a checkpoint must hold to resume exactly, by part.

        `variables` rather than `weights`: it adds the state of Dropout's seed generator.
        """
        parts = {"generator": self.generator.variables, "discriminator": self.discriminator.variables,
                 "d_optimizer": self.d_optimizer.variables, "g_optimizer": self.g_optimizer.variables}
        if self.generator_ema is not None:
            parts["generator_ema"] = self.generator_ema.variables
        if self.mode_reader is not None:
            parts["mode_reader"] = self.mode_reader.variables
        return parts

    def g_variables(self) -> list:
        """What G's optimiser updates: G's trainable weights, then Q's (`mode_reader`) when there is one."""
        return self.generator.trainable_variables + (
            self.mode_reader.trainable_variables if self.mode_reader is not None else [])

    @property
    def history_metrics(self) -> tuple[str, ...]:
        """The figures each iteration reports (`step_values`), averaged over an interval into the history."""
        return HISTORY_METRICS + (("info_loss",) if self.mode_reader is not None else ())

    @property
    def iteration(self):
        """Completed iterations: G steps once per iteration, and is saved in every checkpoint."""
        return self.g_optimizer.iterations

    def g_inputs(self, z, digits):
        return g_input(z, digits if self.conditional else None)

    def d_loss(self, labels_are_real: bool, logits):
        """D's loss on a real or a fake batch, with the real batch's labels smoothed."""
        return bce(labels_are_real, logits, self.label_smoothing if labels_are_real else 0.0)

    def g_loss(self, logits):
        """G's loss on its batch's D logits: on every fake, or, with `g_top_k` below 1, on the share that
        D scores most real (top-k training: why, and what several devices do, in docs/design.md). The
        batch's size is static under both backends' compilers, so `k` is a constant."""
        if self.g_top_k >= 1:  # a Python branch: at 1 the graph, and so the weights, are the sources'
            return bce(True, logits)
        logits = ops.reshape(ops.cast(logits, "float32"), (-1,))
        return bce(True, ops.top_k(logits, max(1, round(self.g_top_k * logits.shape[0])))[0])

    def info_loss(self, z, reader_logits):
        """InfoGAN's term for a categorical code, weighted: the cross-entropy of the mode z was drawn from
        (`latent_mode`) under Q's logits for G's image of z. Minimising it over G and Q raises a lower bound
        on their mutual information (Chen et al. 2016), so each mode must draw images Q can tell apart."""
        modes = latent_mode(z, reader_logits.shape[-1])
        return self.info_weight * ops.mean(ops.sparse_categorical_crossentropy(
            modes, ops.cast(reader_logits, "float32"), from_logits=True))

    def d_inputs(self, images, digits):
        return d_input(images, digits if self.conditional else None)

    def call(self, z, training=False):
        return self.generate(z, training=training)

    def generate(self, z, digits=None, training: bool = False, generator: keras.Model | None = None):
        """G(z) as float32 (or `generator`'s: G's EMA); a conditional G draws `digits`, by default 0-9 in turn."""
        if self.conditional and digits is None:
            digits = grid_digits(len(z))
        return ops.cast((generator or self.generator)(self.g_inputs(z, digits), training=training), "float32")

    def set_data(self, images, labels=None) -> None:
        """Hold the training images (N, 28, 28, 1), and their digits for a conditional GAN, on the device."""
        raise NotImplementedError

    def steps_per_call(self, steps: int) -> int:
        """Iterations per compiled call for an epoch of `steps`: as many as allowed that divide it, so a
        call never runs past the end of a sample interval."""
        return math.gcd(self.most_steps_per_execution, steps)

    def run(self, epochs: int, steps: int, callbacks: list[keras.callbacks.Callback]) -> None:
        raise NotImplementedError
