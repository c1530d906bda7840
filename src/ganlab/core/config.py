"""Typed, validated config: one frozen dataclass per `params.yaml` section.

A bad value fails here, before any work starts, with a `ConfigError` whose
message names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ganlab.nets.specs import MODEL_NAMES, SPECS


class ConfigError(ValueError):
    """A `params.yaml` value is wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class PrepareConfig:
    source: Literal["auto", "cache", "download", "package"] = "auto"
    # Base URLs that serve the four official `*-ubyte.gz` files.
    mirrors: tuple[str, ...] = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
    # URLs of Keras' `mnist.npz`, tried after the IDX mirrors.
    npz_urls: tuple[str, ...] = (
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    )
    timeout_s: float = 15.0
    retries: int = 1

    def validate(self) -> None:
        _check(self.timeout_s > 0, "prepare.timeout_s", self.timeout_s, "a number > 0")
        _check(self.retries >= 0, "prepare.retries", self.retries, "an integer >= 0")


@dataclass(frozen=True)
class TrainConfig:
    model: Literal[MODEL_NAMES] = "mlp"  # the names of ganlab.nets.specs.SPECS
    # null means the reference value of the chosen model (ganlab.nets.specs.resolve fills it in).
    iterations: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    # D's own Adam learning rate (two time-scale updates). null: learning_rate when that is set, one rate
    # for both; else the model's reference (ganlab.nets.specs.resolve).
    d_learning_rate: float | None = None
    beta_1: float | None = None
    # The last fraction of the run over which both Adam rates fall linearly to zero (0: constant rates),
    # as CycleGAN decays its rate over its second half. null = the model's reference (ganlab.nets.specs).
    lr_decay: float | None = None
    z_dim: int = 100
    # Multiplies every hidden layer's size; 1.0 is the reference architecture.
    width: float = 1.0
    # two_step: the book's schedule, D steps on real then on fake (faithful);
    # combined: one D step on the real+fake batch.
    d_schedule: Literal["two_step", "combined"] = "two_step"
    sample_interval: int | None = None
    grid_size: int = 4
    checkpoint_interval: int | None = None
    seed: int = 42
    resume: bool = True
    # auto: float16 on GPUs with compute capability >= 7.0; bfloat16 on a CPU with native bf16
    # (AMX-BF16 or AVX512-BF16) for the models whose benchmark gains from it; else float32.
    mixed_precision: Literal["auto", "off", "float16", "bfloat16"] = "auto"
    jit_compile: bool = False
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    # Several steps per compiled call cut Python overhead (used: its gcd with sample_interval);
    # null = the model's reference (one DCGAN step takes seconds: one per call keeps Ctrl-C prompt).
    steps_per_execution: int | None = None
    experiment: str = "ganlab"
    log_models: bool = True
    # Decay of an exponential moving average of G's weights, kept beside G. null = the model's reference
    # (ganlab.nets.specs: dcgan_tuned 0.995, the others off); 0 = off.
    ema: float | None = None
    # D's real targets are 1 - label_smoothing (one-sided; G's stay 1). null = the model's reference
    # (ganlab.nets.specs: dcgan_tuned 0.1, the others 0).
    label_smoothing: float | None = None
    # G's loss on this share of each batch's fakes, those D scores most real (top-k training,
    # docs/design.md); 1.0 = all of them, as the sources do.
    g_top_k: float = 1.0
    # G also reads a categorical code of this many values, each as likely, drawn from z (its mode: which of
    # its first numbers is largest; ganlab.nets.models._latent, docs/design.md); 0 = z alone, as the
    # sources. null = the model's reference (ganlab.nets.specs: dcgan_tuned 10, the others 0).
    latent_modes: int | None = None
    # InfoGAN's weight (Chen et al. 2016) on a reader Q of the latent's mode from G's image: G and Q also
    # minimise this x Q's cross-entropy, so each mode draws images Q tells apart. Needs a code; 0 = off.
    # null = the model's reference where there is a code (dcgan_tuned 1), else 0.
    info_weight: float | None = None
    # The Keras backend the train stage runs on (set as KERAS_BACKEND before Keras is imported).
    # jax: its own compiled loop, on one or many devices; the fastest on CPU for the MLPs, slow for convolutions.
    # auto: the model's fastest (ganlab.training.backend.choose), or KERAS_BACKEND when the environment sets it.
    backend: Literal["auto", "tensorflow", "jax"] = "auto"
    # Same seed, same weights: TensorFlow's deterministic kernels, one op at a time. null = on for a CPU
    # (where it costs little for these networks), off on a GPU (where it costs speed). XLA on a CPU is
    # deterministic as it is (ganlab.training.devices).
    deterministic: bool | None = None
    # G (and its EMA) scored by the classifier at every sample interval on this many samples (0 = off):
    # FD, classifier score and modes over training (ganlab.training.watch).
    quality_samples: int = 2000
    # The G the stage outputs: the last one, or the interval's with the lowest quality FD: G's (best) or
    # its EMA's (best_ema). G and its EMA come from the same interval; D stays the last.
    keep: Literal["last", "best", "best_ema"] = "last"

    def validate(self) -> None:
        for key in ("iterations", "sample_interval", "checkpoint_interval"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"train.{key}", value,
                   "null (the model's reference) or an integer >= 1")
        if self.batch_size is not None:
            _check(
                1 <= self.batch_size <= 60_000,
                "train.batch_size",
                self.batch_size,
                "null or an integer in [1, 60000] (the training set has 60000 images)",
            )
        if self.learning_rate is not None:
            _check(0 < self.learning_rate < 1, "train.learning_rate", self.learning_rate, "null or in (0, 1)")
        if self.d_learning_rate is not None:
            _check(0 < self.d_learning_rate < 1, "train.d_learning_rate", self.d_learning_rate, "null or in (0, 1)")
        if self.beta_1 is not None:
            _check(0 <= self.beta_1 < 1, "train.beta_1", self.beta_1, "null or in [0, 1)")
        if self.lr_decay is not None:
            _check(0 <= self.lr_decay <= 1, "train.lr_decay", self.lr_decay,
                   "null (the model's reference), 0 (constant rates) or a fraction in (0, 1], e.g. 0.5")
        _check(0 < self.width <= 16, "train.width", self.width, "a number in (0, 16]")
        _check(1 <= self.z_dim <= 4096, "train.z_dim", self.z_dim, "an integer in [1, 4096]")
        _check(1 <= self.grid_size <= 16, "train.grid_size", self.grid_size, "an integer in [1, 16]")
        _check(self.quality_samples == 0 or 100 <= self.quality_samples <= 10_000, "train.quality_samples",
               self.quality_samples, "0 (off) or an integer in [100, 10000] (the test set has 10000 images)")
        _check(self.keep == "last" or self.quality_samples > 0, "train.keep", self.keep,
               "last, or set train.quality_samples above 0 (best is chosen by the quality scores)")
        if self.checkpoint_interval is not None and self.sample_interval is not None:
            _check(
                self.checkpoint_interval % self.sample_interval == 0,
                "train.checkpoint_interval",
                self.checkpoint_interval,
                f"null or a multiple of train.sample_interval ({self.sample_interval})",
            )
        _check(self.steps_per_execution is None or self.steps_per_execution >= 1, "train.steps_per_execution",
               self.steps_per_execution, "null (the model's reference) or an integer >= 1")
        _check(bool(self.experiment.strip()), "train.experiment", self.experiment, "a non-empty name")
        if self.label_smoothing is not None:
            _check(0 <= self.label_smoothing < 0.5, "train.label_smoothing", self.label_smoothing,
                   "null (the model's reference) or a number in [0, 0.5), e.g. 0.1 (real targets 0.9)")
        _check(0 < self.g_top_k <= 1, "train.g_top_k", self.g_top_k,
               "a share in (0, 1]: 1.0 (G learns from every fake) or e.g. 0.5 (from the half D scores most real)")
        if self.latent_modes is not None:
            _check(self.latent_modes == 0 or 2 <= self.latent_modes <= self.z_dim, "train.latent_modes",
                   self.latent_modes,
                   f"null (the model's reference), 0 (z alone) or an integer in [2, train.z_dim = {self.z_dim}]")
            _check(self.latent_modes == 0 or not SPECS[self.model].conditional, "train.latent_modes",
                   self.latent_modes, f"null or 0 for {self.model} (its digit input already picks the mode)")
        if self.info_weight is not None:  # whether there is a code to read is known once resolved
            _check(0 <= self.info_weight <= 10, "train.info_weight", self.info_weight,
                   "null (the model's reference), 0 (off) or a weight in (0, 10], e.g. 1 (InfoGAN's)")
        if self.ema is not None:
            _check(0 <= self.ema < 1, "train.ema", self.ema,
                   "null (the model's reference), 0 (off) or a decay in (0, 1), e.g. 0.999")
        _check(self.keep != "best_ema" or self.ema != 0, "train.keep", self.keep,
               "last or best with train.ema: 0 (best_ema chooses by the EMA's scores), or set train.ema")
        if self.backend == "jax":
            # The JAX step does no loss scaling.
            _check(self.mixed_precision != "float16", "train.mixed_precision", self.mixed_precision,
                   "auto, off or bfloat16 with train.backend: jax (float16 needs loss scaling)")


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 5
    batch_size: int = 128
    # Train on the first n_train prepared images; fewer only to make tests fast.
    n_train: int = 60_000
    seed: int = 0

    def validate(self) -> None:
        _check(1 <= self.n_train <= 60_000, "classifier.n_train", self.n_train, "an integer in [1, 60000]")
        _check(1 <= self.epochs <= 100, "classifier.epochs", self.epochs, "an integer in [1, 100]")
        _check(1 <= self.batch_size <= 60_000, "classifier.batch_size", self.batch_size, "an integer in [1, 60000]")


@dataclass(frozen=True)
class EvaluateConfig:
    # Real test images and fresh fakes each; 10,000 is the whole MNIST test set.
    n_samples: int = 10_000
    seed: int = 1234
    pr_k: int = 3
    n_interpolations: int = 4
    n_neighbours: int = 8

    def validate(self) -> None:
        _check(10 <= self.n_samples <= 10_000, "evaluate.n_samples", self.n_samples, "an integer in [10, 10000]")
        _check(1 <= self.pr_k < self.n_samples, "evaluate.pr_k", self.pr_k, "an integer in [1, n_samples)")
        _check(1 <= self.n_interpolations <= 16, "evaluate.n_interpolations", self.n_interpolations, "in [1, 16]")
        _check(1 <= self.n_neighbours <= 32, "evaluate.n_neighbours", self.n_neighbours, "in [1, 32]")


@dataclass(frozen=True)
class ReportConfig:
    max_runs: int = 20
    # Register the generator and move the `champion` alias to the best FD so far.
    register: bool = True
    registered_model: str = "ganlab-generator"

    def validate(self) -> None:
        _check(1 <= self.max_runs <= 1000, "report.max_runs", self.max_runs, "an integer in [1, 1000]")


@dataclass(frozen=True)
class Params:
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; use {allowed}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is Literal:
        # YAML 1.1 reads an unquoted `off` as false, and `dvc exp run -S train.mixed_precision=off` writes it so.
        if value is False and "off" in args:
            value = "off"
        if value not in args:
            hint = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"params.yaml: {key} = {value!r} is not allowed{extra}; use one of {', '.join(map(str, args))}"
            )
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; use a list")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    # bool is an int subclass in Python: refuse `true` where a number is meant and vice versa.
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; use true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; use an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; use a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; use a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _build(section: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params.yaml: section {section!r} must be a mapping of keys, not {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            extra = f"; did you mean {section}.{hint[0]}?" if hint else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"params.yaml: unknown key {section}.{key!s:.40}{extra}".replace("\n", "\\n"))
    kwargs = {k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in raw.items()}
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg


def parse_params(raw: Any) -> Params:
    """Build and validate `Params` from the parsed YAML mapping `raw`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml: the top level must be a mapping of sections")
    sections = {f.name: typing.get_type_hints(Params)[f.name] for f in dataclasses.fields(Params)}
    for key in raw:
        if key not in sections:
            hint = difflib.get_close_matches(str(key), list(sections), n=1)
            extra = f"; did you mean {hint[0]}?" if hint else ""
            raise ConfigError(f"params.yaml: unknown section {key!r}{extra}")
    return Params(**{name: _build(name, cls, raw.get(name)) for name, cls in sections.items()})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, validate and return the whole `params.yaml` at `path`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; run from the project root or pass --params") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    return parse_params(raw)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dataclass or metrics dict as {"section.key": value}: MLflow's params and metrics
    from what DVC tracks (`{"confusion": {"tp": 1}}` -> `{"confusion.tp": 1}`)."""
    items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)) if dataclasses.is_dataclass(obj) \
        else obj.items()
    out: dict[str, Any] = {}
    for name, value in items:
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(value) or isinstance(value, dict):
            out.update(flatten(value, key + "."))
        elif isinstance(value, tuple):
            out[key] = ",".join(map(str, value))
        else:
            out[key] = value
    return out
