"""Where and in what precision `train` runs: the distribution strategy and the mixed-precision policy.

`mixed_precision: auto` picks float16 on GPUs that run it fast (compute capability >= 7.0), and
bfloat16 on a CPU that has it natively (AMX-BF16 or AVX512-BF16 in its flags, and no instruction-set
cap below them: `ganlab.core.hardware.isa_caps`), but only for the models whose benchmark gained from it
(`ModelSpec.cpu_bf16`). Everywhere else it is float32, so a CPU without bf16 is never slowed down and the
book's MLP keeps its numerics. A half precision that TensorFlow would crash on under a oneDNN cap is
refused (`ganlab.core.hardware.onednn_crash_cap`).

On TensorFlow the strategies are `tf.distribute`'s. On JAX they are a `Replicas`: one device, or
data-parallel over a mesh of devices (`mirrored`, and `auto` when there are several local devices; all
processes' devices with `multi_worker`, started by `keras.distribution.initialize` from its environment
variables). float16 is refused on JAX because its step does no loss scaling: on a GPU, `auto` gives
bfloat16 instead, which needs none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from typing import Any

import keras
import numpy as np

from ganlab.core.config import TrainConfig
from ganlab.core.files import StageError
from ganlab.core.hardware import ONEDNN_ISA_ENVS, cpu_info, onednn_crash_cap, onednn_state
from ganlab.nets.specs import SPECS
from ganlab.training.backend import JAX_CLUSTER

log = logging.getLogger(__name__)

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


class Replicas:
    """What `make_gan` needs of a strategy, on JAX: the devices the step runs on.

    With one device the arrays stay where JAX puts them. With several, every variable is replicated
    on a one-axis mesh and each iteration's batch (its indices, noise and digits) is split along it;
    `jax.jit` partitions the step from those two shardings (GSPMD), so gradients, BatchNorm's batch
    statistics and the losses are those of the whole global batch, as on one device. The step is a pure
    function over explicit arrays rather than `fit()`, so it places them itself instead of through
    `keras.distribution`, whose layouts apply to variables as they are created and to `fit()`'s data.
    """

    def __init__(self, devices: list | None = None):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.devices = devices or [jax.devices()[0]]
        self.num_replicas_in_sync = len(self.devices)
        self.mesh = Mesh(np.array(self.devices), ("batch",)) if len(self.devices) > 1 else None
        if self.mesh is not None:
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.batch = NamedSharding(self.mesh, PartitionSpec("batch"))

    def scope(self):
        return contextlib.nullcontext()

    def replicate(self, tree):
        """`tree`'s arrays as one copy on every device of the mesh (every process passes the same values)."""
        import jax

        if self.mesh is None:
            return jax.tree.map(jax.numpy.asarray, tree)
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), tree)

    def split(self, x):
        """Inside the step: `x`'s first axis (the batch) divided among the devices."""
        import jax

        return x if self.mesh is None else jax.lax.with_sharding_constraint(x, self.batch)

    def local(self, tree):
        """A replicated array as an array of this process (its first device's copy), for Keras and numpy."""
        import jax

        if self.mesh is None:
            return tree
        return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)

    def wait(self, tree) -> None:
        """Block until `tree` is computed, on several CPU devices. Left to run ahead, a call queued behind
        the last stalled in its first all-reduce within a few calls (two forced devices on two cores),
        and XLA aborts the process after 40 s; one call at a time never did in 8,000 iterations."""
        import jax

        if self.mesh is not None and self.devices[0].platform == "cpu":
            jax.block_until_ready(tree)

    def jit(self, fn):
        """`fn` compiled for these devices: its outputs replicated, as its state arrives."""
        import jax

        return jax.jit(fn) if self.mesh is None else jax.jit(fn, out_shardings=self.replicated)


def select_device(cfg: TrainConfig):
    """Pick the distribution strategy and precision, set the policy; return (strategy, what was chosen)."""
    if keras.backend.backend() == "jax":
        return _select_jax(cfg)
    return _select_tensorflow(cfg)


def jax_compilation_cache(config, cpu: dict[str, Any], environ=os.environ) -> str | None:
    """Turn on JAX's persistent compilation cache, so that a run, a resume or an experiment whose step was
    compiled before loads XLA's executable instead of compiling it again (about 5 s of each `train` stage
    of `mlp`, docs/benchmarks.md). Its key holds the program, XLA's flags and JAX's version; the folder is
    one per CPU model and flags, so a home folder shared by machines never hands one CPU's code to
    another. What the environment sets wins: `JAX_COMPILATION_CACHE_DIR` moves it,
    `JAX_ENABLE_COMPILATION_CACHE=false` turns it off. Returns the folder, or None when off."""
    if not config.jax_enable_compilation_cache:
        return None
    if config.jax_compilation_cache_dir is not None:
        return config.jax_compilation_cache_dir  # the user's folder, on the user's (or JAX's) terms
    xdg = environ.get("XDG_CACHE_HOME", "")
    home = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")  # XDG: absolute only
    machine = hashlib.sha256(json.dumps([cpu["cpu"], cpu["flags"]]).encode()).hexdigest()[:12]
    config.update("jax_compilation_cache_dir", os.path.join(home, "ganlab", "jax", machine))
    # JAX keeps only compilations over 1 s by default; most of a run's (its initialisers, the scorer) are
    # shorter and together take seconds. Our own folder, so capped, least recently used first out.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ:
        config.update("jax_compilation_cache_max_size", 1 << 30)
    return config.jax_compilation_cache_dir


def _select_jax(cfg: TrainConfig) -> tuple[Replicas, dict[str, Any]]:
    import jax

    cpu = cpu_info()
    jax_compilation_cache(jax.config, cpu)  # before anything compiles
    # TrainConfig.validate refuses float16 with backend jax.
    if cfg.strategy == "multi_worker" and not jax.distributed.is_initialized():
        if not os.environ.get(JAX_CLUSTER):
            raise StageError(f"train.strategy multi_worker on JAX needs {JAX_CLUSTER} (the coordinator's "
                             "host:port), KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID in "
                             "the environment (TF_CONFIG is TensorFlow's: train.backend: tensorflow); see the "
                             "README's 'Scaling up', or use train.strategy: auto")
        keras.distribution.initialize()  # jax.distributed from those variables; before any computation
    local = jax.local_devices()
    if cfg.strategy == "multi_worker":
        devices = jax.devices()
    elif cfg.strategy == "mirrored" or (cfg.strategy == "auto" and len(local) > 1):
        devices = local
    else:
        devices = local[:1]
    gpus = [d for d in devices if d.platform == "gpu"]
    capabilities = [tuple(int(x) for x in str(getattr(d, "compute_capability", "0.0")).split(".")[:2])
                    for d in gpus]
    policy = choose_precision(cfg, capabilities, cpu, backend="jax")
    keras.mixed_precision.set_global_policy(policy)
    replicas = Replicas(devices)
    name = "OneDevice" if len(devices) == 1 else "DataParallel"
    kind = gpus[0].device_kind if gpus else "cpu"
    return replicas, _info(cfg, kind, cpu, name, len(devices), jax.process_count(), jax.process_index() == 0,
                           policy, _deterministic(cfg, bool(gpus)))


def tensorflow_determinism() -> bool:
    """Same seed, same weights on TensorFlow: its deterministic kernels, and one op at a time. Ops that
    run side by side (inter-op parallelism) finish in an order that varies, and two processes training
    the blog's DCGAN from the same weights parted within a few steps; one op at a time made them repeat
    (docs/compute.md, Determinism, with what it costs). The thread count can only be set before
    TensorFlow's runtime starts: False when it had already started with ops side by side."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    if tf.config.threading.get_inter_op_parallelism_threads() != 1:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            return False
    return True


def settle_determinism(cfg: TrainConfig) -> None:
    """Apply `train.deterministic` now, for a caller that starts TensorFlow's runtime before train()
    (the benchmark, whose first row is the book's loop); select_device then finds it applied."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        _deterministic(cfg, bool(tf.config.list_physical_devices("GPU")))


def _deterministic(cfg: TrainConfig, on_gpu: bool) -> bool:
    """`train.deterministic`, with null resolved: on for a CPU (where it costs these networks little, or
    nothing measurable in float32), off on a GPU (where it costs speed). XLA on a CPU (the JAX step) is
    deterministic as it is."""
    wanted = cfg.deterministic if cfg.deterministic is not None else not on_gpu
    if not wanted or keras.backend.backend() != "tensorflow" or tensorflow_determinism():
        return wanted
    if cfg.deterministic:
        raise StageError("train.deterministic is true, but TensorFlow's runtime started before train() with "
                         "ops run side by side; call ganlab.training.devices.tensorflow_determinism() before "
                         "any TensorFlow op, or train in a new process")
    log.warning("TensorFlow's runtime started before train(): its ops run side by side, so the same seed "
                "may not give the same weights in another process")
    return False


def applied_jit_compile(cfg: TrainConfig) -> bool:
    """Whether the step will run compiled by XLA: always on JAX; on TensorFlow as `train.jit_compile` asks,
    except that Keras compiles the step without XLA, with only a warning, while TensorFlow's op
    determinism is on (`train.deterministic`, on by default on a CPU)."""
    if keras.backend.backend() == "jax":
        return True  # the JAX step is always compiled (jax.jit)
    if not cfg.jit_compile:
        return False
    from tensorflow.python.framework.config import is_op_determinism_enabled  # the test Keras makes

    if is_op_determinism_enabled():
        log.warning("train.jit_compile is true, but Keras runs TensorFlow's step without XLA while its op "
                    "determinism is on; set train.deterministic: false to compile the step with XLA")
        return False
    return True


def _info(cfg: TrainConfig, device: str, cpu: dict, strategy: str, replicas: int, workers: int, chief: bool,
          policy: str, deterministic: bool) -> dict[str, Any]:
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
        "jit_compile": applied_jit_compile(cfg),  # what ran, as precision is recorded
        "deterministic": deterministic,
    }


def _select_tensorflow(cfg: TrainConfig):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")  # does not start the runtime
    deterministic = _deterministic(cfg, bool(gpus))  # before anything does
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
    cap = None if gpus else onednn_crash_cap(cpu, policy, onednn_state())
    if cap:
        raise StageError(f"train.mixed_precision {cfg.mixed_precision} under the oneDNN cap {cap} "
                         f"({'/'.join(ONEDNN_ISA_ENVS)}) would crash TensorFlow's oneDNN kernels on this CPU; "
                         "unset the cap, or set train.mixed_precision: off")
    keras.mixed_precision.set_global_policy(policy)
    # MultiWorkerMirroredStrategy's class is called CollectiveAllReduceStrategy: use the public name.
    name = ("MultiWorkerMirroredStrategy" if workers > 1 or cfg.strategy == "multi_worker"
            else type(strategy).__name__)
    device = ",".join(d.get("device_name", g.name) for d, g in zip(details, gpus)) or "cpu"
    return strategy, _info(cfg, device, cpu, name, strategy.num_replicas_in_sync, workers, chief, policy,
                           deterministic)
