"""The precision `train` picks on each kind of hardware, and what the CPU's flags say."""

from pathlib import Path

import pytest

from ganlab.core.config import TrainConfig
from ganlab.training import devices

XEON_AMX = {"cpu": "Intel Xeon", "bf16_flags": ["amx_bf16", "avx512_bf16"]}
EPYC_ZEN3 = {"cpu": "AMD EPYC", "bf16_flags": []}


@pytest.mark.parametrize("model, gpus, cpu, want", [
    ("dcgan", [], XEON_AMX, "mixed_bfloat16"),     # native bf16, and the DCGAN gains from it
    ("mlp", [], XEON_AMX, "float32"),              # the book's MLP gains nothing: keep its numerics
    ("mlp_bn", [], XEON_AMX, "float32"),           # not measured to gain
    ("dcgan", [], EPYC_ZEN3, "float32"),           # emulated bf16 would only slow it down
    ("dcgan", [(9, 0)], EPYC_ZEN3, "mixed_float16"),
    ("mlp", [(8, 0), (7, 0)], XEON_AMX, "mixed_float16"),
    ("dcgan", [(6, 1)], XEON_AMX, "float32"),      # an old GPU: no fast float16, and no CPU bf16 on a GPU run
])
def test_auto_precision(model, gpus, cpu, want):
    assert devices.choose_precision(TrainConfig(model=model), gpus, cpu) == want


@pytest.mark.parametrize("setting, want", [("off", "float32"), ("float16", "mixed_float16"),
                                           ("bfloat16", "mixed_bfloat16")])
def test_explicit_precision_wins(setting, want):
    for cpu in (XEON_AMX, EPYC_ZEN3):
        assert devices.choose_precision(TrainConfig(model="dcgan", mixed_precision=setting), [(9, 0)], cpu) == want


def test_auto_on_this_machine_applies_a_policy_and_records_it():
    _, info = devices.select_device(TrainConfig(model="dcgan"))
    want = "mixed_bfloat16" if devices.cpu_info()["bf16_flags"] and info["device"] == "cpu" else None
    assert info["precision"] in ("float32", "mixed_float16", "mixed_bfloat16")
    assert want is None or info["precision"] == want
    assert info["cpu_bf16"] == (",".join(devices.cpu_info()["bf16_flags"]) or "none")
    import keras
    assert keras.mixed_precision.global_policy().name == info["precision"]
    keras.mixed_precision.set_global_policy("float32")


def test_a_half_precision_that_would_crash_tensorflow_is_refused_in_one_line(tmp_path, monkeypatch):
    from ganlab.core import hardware
    from ganlab.core.files import StageError

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 avx512_fp16 amx_bf16\n")
    monkeypatch.setattr(devices, "cpu_info", lambda: hardware.cpu_info(cpuinfo))
    monkeypatch.setattr(devices, "onednn_state", lambda: "on")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    # auto: the cap leaves no native bf16
    assert devices.select_device(TrainConfig(model="dcgan", backend="tensorflow"))[1]["precision"] == "float32"
    for setting in ("bfloat16", "float16"):
        with pytest.raises(StageError, match=f"mixed_precision {setting} under the oneDNN cap AVX2 .* would "
                                             "crash .*train.mixed_precision: off"):
            devices.select_device(TrainConfig(model="dcgan", backend="tensorflow", mixed_precision=setting))
    import keras
    assert keras.mixed_precision.global_policy().name == "float32"


def test_jit_compile_is_recorded_as_it_runs_under_tensorflows_determinism(monkeypatch, caplog):
    from tensorflow.python.framework import config as tf_config

    for determinism, want in ((True, False), (False, True)):
        monkeypatch.setattr(tf_config, "is_op_determinism_enabled", lambda on=determinism: on)
        assert devices.applied_jit_compile(TrainConfig(model="dcgan", jit_compile=True)) is want
    assert "set train.deterministic: false" in caplog.text
    assert devices.applied_jit_compile(TrainConfig(model="dcgan")) is False


def test_the_recorded_jit_compile_is_what_keras_compiles():
    from ganlab.training.train import make_gan, resolved

    cfg = resolved(TrainConfig(model="mlp", backend="tensorflow", width=0.1, jit_compile=True))
    strategy, info = devices.select_device(cfg)
    assert make_gan(cfg, strategy).jit_compile is info["jit_compile"]


class _JaxConfig:
    """What `jax_compilation_cache` reads and sets of `jax.config`, with JAX's defaults."""

    def __init__(self, **values):
        self.jax_enable_compilation_cache, self.jax_compilation_cache_dir = True, None
        self.__dict__.update(values)

    def update(self, name, value):
        setattr(self, name, value)


def test_jax_keeps_every_compilation_in_the_users_cache_and_the_environment_wins():
    config = _JaxConfig()
    folder = devices.jax_compilation_cache(config, EPYC_ZEN3 | {"flags": ["avx2"]}, {"XDG_CACHE_HOME": "/c"})
    assert folder.startswith("/c/ganlab/jax/") and config.jax_compilation_cache_dir == folder
    assert config.jax_persistent_cache_min_compile_time_secs == 0 and config.jax_compilation_cache_max_size > 0
    # One folder per CPU model and flags: another CPU, or the same model with other flags, never loads this code.
    other = devices.jax_compilation_cache(_JaxConfig(), XEON_AMX | {"flags": ["avx2"]}, {"XDG_CACHE_HOME": "/c"})
    flags = devices.jax_compilation_cache(_JaxConfig(), EPYC_ZEN3 | {"flags": ["avx512f"]}, {"XDG_CACHE_HOME": "/c"})
    assert len({folder, other, flags}) == 3 and other.startswith("/c/ganlab/jax/")
    # A relative XDG_CACHE_HOME is not one (the XDG rule): ~/.cache.
    home = devices.jax_compilation_cache(_JaxConfig(), EPYC_ZEN3 | {"flags": []}, {"XDG_CACHE_HOME": "rel"})
    assert home.startswith(str(Path.home() / ".cache" / "ganlab" / "jax"))
    # JAX read JAX_COMPILATION_CACHE_DIR and the others into its config when imported: they stay, and a
    # folder of the user's is left on JAX's own terms (no cap of ours, no tiny entries).
    for environ in ({}, {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2", "JAX_COMPILATION_CACHE_MAX_SIZE": "9"}):
        config = _JaxConfig(jax_compilation_cache_dir="/mine")
        assert devices.jax_compilation_cache(config, EPYC_ZEN3 | {"flags": []}, environ) == "/mine"
        assert not hasattr(config, "jax_persistent_cache_min_compile_time_secs")
        assert not hasattr(config, "jax_compilation_cache_max_size")
    config = _JaxConfig()  # our folder, the user's limits
    devices.jax_compilation_cache(config, EPYC_ZEN3 | {"flags": []}, {"JAX_COMPILATION_CACHE_MAX_SIZE": "9"})
    assert not hasattr(config, "jax_compilation_cache_max_size")
    assert config.jax_persistent_cache_min_compile_time_secs == 0
    config = _JaxConfig(jax_enable_compilation_cache=False)  # JAX_ENABLE_COMPILATION_CACHE=false
    assert devices.jax_compilation_cache(config, EPYC_ZEN3 | {"flags": []}, {}) is None
    assert config.jax_compilation_cache_dir is None
