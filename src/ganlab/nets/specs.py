"""Each architecture's reference settings, from its source, and `resolve`: the one place a `null` is filled.

Imports no Keras, so the `validate` stage and the backend choice can read it before Keras loads.
The networks themselves are built in `ganlab.nets.models`, one builder pair per name here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ganlab.core.config import TrainConfig


@dataclass(frozen=True)
class ModelSpec:
    """The reference hyper-parameters of an architecture, and how this project runs it fastest."""

    batch_size: int
    learning_rate: float  # G's, and D's unless d_learning_rate is set
    beta_1: float
    iterations: int
    sample_interval: int
    checkpoint_interval: int
    # Whether `mixed_precision: auto` picks bfloat16 on a CPU with native bf16 (docs/compute.md, precision).
    cpu_bf16: bool = False
    # Steps per compiled call: 20 cuts the MLPs' Python overhead (1.2x); a DCGAN step takes seconds
    # on a CPU, and a signal is handled between calls, so one step per call keeps Ctrl-C prompt.
    steps_per_execution: int = 20
    # G and D also take the digit (`cdcgan`): batches carry real labels, fakes draw theirs.
    conditional: bool = False
    # D's fakes from G in training mode (BatchNorm on batch statistics), the G that G's step trains.
    # The sources use inference mode (`generator.predict`); see the cdcgan entry for why it differs.
    fakes_training: bool = False
    # One-sided label smoothing: D's real targets are 1 - this (`train.label_smoothing: null`).
    label_smoothing: float = 0.0
    # D's own Adam learning rate (`train.d_learning_rate: null`); None = learning_rate, one for both.
    d_learning_rate: float | None = None
    # The decay of the moving average of G's weights kept beside G (`train.ema: null`); 0 = none.
    ema: float = 0.0
    # The last fraction of the run over which both rates fall to zero (`train.lr_decay: null`).
    lr_decay: float = 0.0
    # What `train.backend: auto` picks (make bench on CPUs, docs/benchmarks.md; not measured on GPUs): XLA
    # fuses the MLPs' whole step; JAX's DCGAN step runs at about half TensorFlow's speed with oneDNN.
    fastest_backend: str = "tensorflow"
    # A categorical code of this many values beside z (`train.latent_modes: null`), and InfoGAN's weight
    # on reading it back from G's images (`train.info_weight: null`, only with a code); 0 = none.
    latent_modes: int = 0
    info_weight: float = 0.0


# The book (Adam() defaults, 20,000 iterations sampled every 1,000), Keras-GAN (Adam(2e-4, 0.5); its
# script trains 30,000 iterations and samples every 200, here every 1,000 as the book does), the DCGAN
# blog (Adam() defaults, batch 200, 10 "epochs" of 300 iterations). README.md names and links them.
SPECS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(batch_size=128, learning_rate=1e-3, beta_1=0.9, iterations=20_000, sample_interval=1_000,
                     checkpoint_interval=1_000, fastest_backend="jax"),
    "mlp_bn": ModelSpec(batch_size=128, learning_rate=2e-4, beta_1=0.5, iterations=30_000, sample_interval=1_000,
                        checkpoint_interval=1_000, fastest_backend="jax"),
    # bfloat16 ran the blog's DCGAN step 2.4x faster on an AMX-BF16 Xeon (1.10 -> 2.63 it/s); mlp gained nothing.
    "dcgan": ModelSpec(batch_size=200, learning_rate=1e-3, beta_1=0.9, iterations=3_000, sample_interval=300,
                       checkpoint_interval=300, cpu_bf16=True, steps_per_execution=1),
    # Not in the sources: the blog's DCGAN conditioned on the digit, at the blog's batch and length. At the
    # blog's Adam(1e-3, 0.9) its D won by iteration 300 and G collapsed (label agreement 8.6% at 600,
    # docs/results.md), so it takes the DCGAN paper's Adam(2e-4, 0.5) as Keras-GAN does, and shows D the
    # training-mode G that G's step trains: in inference mode G's early moving statistics give D fakes
    # unlike those G optimises, and both losses fell to ~0 at once (a game of two different Gs).
    # The blog's layers with what made `cdcgan` learn (Adam with beta_1 0.5, D's fakes from the
    # training-mode G), without the digit; from its sweep (docs/results.md): D's real targets at 0.9 (the best of 0,
    # 0.1 and 0.2), and G's rate twice D's (4e-4 against 2e-4: at 1,500 iterations, Fréchet distance 8.3
    # against 13-15 with one rate for both, and 15.4 with D's twice G's). Its EMA of G (0.995) scored
    # 4.02 against G's 5.91 at 3,000 iterations, without the dot G draws near the bottom-right corner.
    # A ten-value code beside z read back by InfoGAN's Q (weight 1) took the EMA to 1.73, and its
    # classifier score from 8.31 to 9.32 (docs/results.md).
    "dcgan_tuned": ModelSpec(batch_size=200, learning_rate=4e-4, d_learning_rate=2e-4, beta_1=0.5, iterations=3_000,
                             sample_interval=300, checkpoint_interval=300, cpu_bf16=True, steps_per_execution=1,
                             fakes_training=True, label_smoothing=0.1, ema=0.995, latent_modes=10, info_weight=1.0),
    "cdcgan": ModelSpec(batch_size=200, learning_rate=2e-4, beta_1=0.5, iterations=3_000, sample_interval=300,
                        checkpoint_interval=300, cpu_bf16=True, steps_per_execution=1, conditional=True,
                        fakes_training=True),
}
MODEL_NAMES = tuple(SPECS)

# The train settings whose `null` (or `auto`) `resolve` fills in; logged as `train.resolved.*`.
RESOLVED = ("iterations", "batch_size", "learning_rate", "d_learning_rate", "beta_1", "sample_interval",
            "checkpoint_interval", "steps_per_execution", "label_smoothing", "lr_decay", "ema", "latent_modes",
            "info_weight", "backend")


def resolve(cfg: TrainConfig, backend: str | None = None) -> TrainConfig:
    """`cfg` with every `null` replaced by the model's reference value, and `backend: auto` by `backend`
    (the one Keras runs on; left `auto` when not given). Resolving a resolved config changes nothing.

    A null checkpoint_interval is the reference rounded up to a multiple of the sample interval, since
    checkpoints are taken at the end of an interval; a set one that is not a multiple is refused.
    """
    from ganlab.core.config import ConfigError

    spec = SPECS[cfg.model]
    sample = cfg.sample_interval or spec.sample_interval
    if cfg.checkpoint_interval and cfg.checkpoint_interval % sample:
        raise ConfigError(f"params.yaml: train.checkpoint_interval = {cfg.checkpoint_interval} is not allowed; "
                          f"use null or a multiple of the sample interval ({sample}: checkpoints are taken at "
                          "the end of an interval)")
    checkpoint = cfg.checkpoint_interval or -(-spec.checkpoint_interval // sample) * sample
    if cfg.keep == "best_ema" and cfg.ema is None and not spec.ema:
        raise ConfigError(f"params.yaml: train.keep = best_ema is not allowed; {cfg.model} keeps no EMA of G by "
                          "default: set train.ema (e.g. 0.999) or use train.keep: best")
    modes = spec.latent_modes if cfg.latent_modes is None else cfg.latent_modes
    if cfg.latent_modes is None and modes > cfg.z_dim:  # a set value is checked with the others (`validate`)
        raise ConfigError(f"params.yaml: train.latent_modes = null ({cfg.model}'s {modes}) is not allowed with "
                          f"train.z_dim = {cfg.z_dim}; set train.latent_modes: 0 or a train.z_dim of at least {modes}")
    # A null weight is the model's only where there is a code to read: `latent_modes: 0` turns off both.
    info_weight = (spec.info_weight if modes else 0.0) if cfg.info_weight is None else cfg.info_weight
    if info_weight and not modes:
        fix = "train.info_weight: 0" if spec.conditional else \
            "train.latent_modes (e.g. 10: Q reads back the latent's mode) or train.info_weight: 0"
        raise ConfigError(f"params.yaml: train.info_weight = {info_weight} is not allowed without a code; set {fix}")
    learning_rate = cfg.learning_rate or spec.learning_rate
    return dataclasses.replace(
        cfg,
        iterations=cfg.iterations or spec.iterations,
        batch_size=cfg.batch_size or spec.batch_size,
        learning_rate=learning_rate,
        # A set G rate without a D rate is one rate for both; the model's two rates come as a pair.
        d_learning_rate=cfg.d_learning_rate or cfg.learning_rate or spec.d_learning_rate or learning_rate,
        beta_1=spec.beta_1 if cfg.beta_1 is None else cfg.beta_1,
        label_smoothing=spec.label_smoothing if cfg.label_smoothing is None else cfg.label_smoothing,
        lr_decay=spec.lr_decay if cfg.lr_decay is None else cfg.lr_decay,
        ema=spec.ema if cfg.ema is None else cfg.ema,
        latent_modes=modes,
        info_weight=info_weight,
        sample_interval=sample,
        checkpoint_interval=checkpoint,
        steps_per_execution=cfg.steps_per_execution or spec.steps_per_execution,
        backend=backend if cfg.backend == "auto" and backend else cfg.backend,
    )
