"""Where and in what precision `train` runs: the distribution strategy and the mixed-precision policy.

`mixed_precision: auto` picks float16 on GPUs that run it fast (compute capability >= 7.0), and
bfloat16 on a CPU that has it natively (AMX-BF16 or AVX512-BF16 in its flags), but only for the
models whose benchmark gained from it (`ModelSpec.cpu_bf16`). Everywhere else it is float32, so a
CPU without bf16 is never slowed down and the book's MLP keeps its numerics.

The strategies are TensorFlow's `tf.distribute`; on JAX training runs on one device (the first GPU,
else the CPU), and float16 is refused there because the JAX step does no loss scaling: on a GPU,
`auto` gives bfloat16 instead, which needs none.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras

from ganlab.core.config import TrainConfig
from ganlab.core.files import StageError
from ganlab.core.hardware import cpu_info, onednn_state
from ganlab.nets.specs import SPECS

POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def choose_precision(cfg: TrainConfig, gpu_capabilities: list[tuple[int, int]], cpu: dict[str, Any],
                     backend: str = "tensorflow") -> str:
    """The Keras dtype policy for `cfg` on this hardware: float32, mixed_float16 or mixed_bfloat16."""
    if cfg.mixed_precision != "auto":
        return POLICIES[cfg.mixed_precision]
    if gpu_capabilities:
        # bfloat16 needs compute capability 8.0 (Ampere); float16 runs fast from 7.0 (Volta).
        if backend == "jax":
            return "mixed_bfloat16" if all(cc >= (8, 0) for cc in gpu_capabilities) else "float32"
        return "mixed_float16" if all(cc >= (7, 0) for cc in gpu_capabilities) else "float32"
    if cpu["bf16_flags"] and SPECS[cfg.model].cpu_bf16:
        return "mixed_bfloat16"
    return "float32"


class OneDevice:
    """What `make_gan` needs of a strategy, on JAX: arrays live on JAX's default device."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def select_device(cfg: TrainConfig):
    """Pick the distribution strategy and precision, set the policy; return (strategy, what was chosen)."""
    if keras.backend.backend() == "jax":
        return _select_jax(cfg)
    return _select_tensorflow(cfg)


def _select_jax(cfg: TrainConfig) -> tuple[OneDevice, dict[str, Any]]:
    import jax

    # TrainConfig.validate refuses float16 and the tf.distribute strategies with backend jax.
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    capabilities = [tuple(int(x) for x in str(getattr(d, "compute_capability", "0.0")).split(".")[:2])
                    for d in gpus[:1]]
    cpu = cpu_info()
    policy = choose_precision(cfg, capabilities, cpu, backend="jax")
    keras.mixed_precision.set_global_policy(policy)
    return OneDevice(), _info(cfg, gpus[0].device_kind if gpus else "cpu", cpu, "OneDevice", 1, 1, True, policy)


def _info(cfg: TrainConfig, device: str, cpu: dict, strategy: str, replicas: int, workers: int, chief: bool,
          policy: str) -> dict[str, Any]:
    return {
        "backend": keras.backend.backend(),
        "device": device,
        "cpu": cpu["cpu"],
        "cpu_bf16": ",".join(cpu["bf16_flags"]) or "none",
        "strategy": strategy,
        "replicas": replicas,
        "workers": workers,
        "chief": chief,
        "precision": policy,
        # TensorFlow's oneDNN kernels (ganlab.core.hardware turns them on); "n/a" on JAX.
        "onednn": onednn_state() if keras.backend.backend() == "tensorflow" else "n/a",
        "jit_compile": cfg.jit_compile,
    }


def _select_tensorflow(cfg: TrainConfig):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    chief, workers = True, 1
    if cfg.strategy == "multi_worker":
        # Must come before anything starts TensorFlow's runtime (listing logical devices does).
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        cluster = resolver.cluster_spec().as_dict()
        if not cluster:
            raise StageError("train.strategy multi_worker needs TF_CONFIG (cluster and task) in the environment; "
                             "see the README's 'Scaling up', or use train.strategy: auto")
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        # The chief is task `chief`, or worker 0 when the cluster names none (TensorFlow's convention).
        chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                                  and "chief" not in cluster)
        workers = sum(len(tasks) for tasks in cluster.values())
    elif cfg.strategy == "mirrored" or (cfg.strategy == "auto" and len(gpus) > 1):
        logical = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in logical])
    else:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    cpu = cpu_info()
    policy = choose_precision(cfg, [d.get("compute_capability", (0, 0)) for d in details], cpu)
    keras.mixed_precision.set_global_policy(policy)
    # MultiWorkerMirroredStrategy's class is called CollectiveAllReduceStrategy: use the public name.
    name = ("MultiWorkerMirroredStrategy" if workers > 1 or cfg.strategy == "multi_worker"
            else type(strategy).__name__)
    device = ",".join(d.get("device_name", g.name) for d, g in zip(details, gpus)) or "cpu"
    return strategy, _info(cfg, device, cpu, name, strategy.num_replicas_in_sync, workers, chief, policy)
