"""What a training run is called and tagged in MLflow: names that tell runs apart in a list."""

from __future__ import annotations

import time

from ganlab.core.config import Params, TrainConfig, flatten
from ganlab.nets.specs import RESOLVED


def logged_params(params: Params, resolved: TrainConfig) -> dict[str, str]:
    """The `prepare` and `train` params as MLflow params: the raw values (null = the model's reference)
    and, as `train.resolved.*`, what they resolved to."""
    logged = {k: str(v) for k, v in flatten(params).items() if k.split(".")[0] in ("prepare", "train")}
    logged.update({f"train.resolved.{k}": str(getattr(resolved, k)) for k in RESOLVED})
    return logged


def run_name(cfg: TrainConfig, dvc_experiment: str | None = None, now: float | None = None) -> str:
    """Model, length, schedule, seed and (on JAX) the backend, with the start time that tells a re-run
    from the first; led by the DVC experiment's name when there is one."""
    name = f"{cfg.model}-{cfg.iterations}it-{cfg.d_schedule}-seed{cfg.seed}"
    name += ("-jax" if cfg.backend == "jax" else "") + time.strftime(" %m-%d %H:%M", time.localtime(now))
    return f"{dvc_experiment} ({name})" if dvc_experiment else name
