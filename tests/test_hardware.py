"""The CPU's description, its float32 peak, and the oneDNN switch."""

import os
import subprocess
import sys

import pytest

from ganlab.core import hardware

XEON = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
        "model name\t: Intel(R) Xeon(R) Platinum 8480C\ncpu MHz\t\t: 2100.000\n"
        "flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1\n")
XEON_FP16 = XEON.replace("avx512_bf16", "avx512_bf16 avx512_fp16")
ZEN3 = ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n"
        "cpu MHz\t\t: 2450.000\nflags\t\t: fpu sse avx2 fma\n")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "XLA_FLAGS"):
        monkeypatch.delenv(key, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text(XEON)
    got = hardware.cpu_info(info)
    assert got["cpu"] == "Intel(R) Xeon(R) Platinum 8480C"
    assert got["bf16_flags"] == ["amx_bf16", "avx512_bf16"]
    assert (got["vendor"], got["family"], got["model"], got["mhz"]) == ("GenuineIntel", 6, 207, 2100.0)
    info.write_text(ZEN3)
    assert hardware.cpu_info(info)["bf16_flags"] == []
    assert hardware.cpu_info(tmp_path / "missing")["bf16_flags"] == []


@pytest.mark.parametrize("env, want", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    ({"ONEDNN_MAX_CPU_ISA": "avx512_core"}, []),
    ({"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, ["avx512_bf16"]),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, ["amx_bf16", "avx512_bf16"]),
    ({"DNNL_MAX_CPU_ISA": "avx2"}, []),                        # oneDNN's older name
    ({"ONEDNN_MAX_CPU_ISA": "ALL", "DNNL_MAX_CPU_ISA": "AVX2"}, ["amx_bf16", "avx512_bf16"]),  # the first set wins
    # Names a library does not know cap nothing there: a typo, spaces, or the other library's name.
    ({"ONEDNN_MAX_CPU_ISA": "AVX-2"}, ["amx_bf16", "avx512_bf16"]),
    ({"ONEDNN_MAX_CPU_ISA": " AVX2"}, ["amx_bf16", "avx512_bf16"]),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512"}, ["amx_bf16", "avx512_bf16"]),
    ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX512_CORE"}, ["amx_bf16", "avx512_bf16"]),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX2"}, []),
    ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX512_BF16"}, ["avx512_bf16"]),
])
def test_bf16_flags_are_those_the_users_instruction_set_caps_leave(tmp_path, monkeypatch, env, want):
    for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "XLA_FLAGS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    info = tmp_path / "cpuinfo"
    info.write_text(XEON)
    assert hardware.cpu_info(info)["bf16_flags"] == want


@pytest.mark.parametrize("cpu, cap, policy, onednn, want", [
    (XEON, "AVX2", "mixed_bfloat16", "on", "AVX2"),  # TensorFlow sees AVX-512 and hands oneDNN bf16 it cannot run
    (XEON, "avx2_vnni", "mixed_bfloat16", "on", "AVX2_VNNI"),
    (XEON, "AVX512_CORE", "mixed_bfloat16", "on", None),  # emulated there, but it runs
    (XEON_FP16, "AVX512_CORE_BF16", "mixed_float16", "on", "AVX512_CORE_BF16"),
    (XEON_FP16, "AVX512_CORE_FP16", "mixed_float16", "on", None),
    (XEON, "AVX2", "float32", "on", None),
    (XEON, "AVX2", "mixed_bfloat16", "off", None),  # oneDNN off: TensorFlow's own kernels
    (ZEN3, "AVX2", "mixed_bfloat16", "on", None),   # no AVX-512: TensorFlow keeps bf16 away from oneDNN
    (XEON, None, "mixed_bfloat16", "on", None),
    (XEON_FP16, "AVX2", "mixed_float16", "on", "AVX2"),
    (XEON, "AVX2", "mixed_float16", "on", None),  # no avx512_fp16: TensorFlow keeps float16 away from oneDNN
])
def test_the_onednn_caps_that_crash_half_precision_are_named(tmp_path, monkeypatch, cpu, cap, policy, onednn, want):
    for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(key, raising=False)
    if cap:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    info = tmp_path / "cpuinfo"
    info.write_text(cpu)
    assert hardware.onednn_crash_cap(hardware.cpu_info(info), policy, onednn) == want


def test_peak_counts_lanes_fma_pipes_cores_and_clock(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(XEON)
    # 2 cores x (2 FMA pipes x 16 lanes x 2) x 2.1 GHz
    assert hardware.peak_gflops(hardware.cpu_info(info), cores=2)["peak_gflops"] == pytest.approx(268.8)
    info.write_text(ZEN3)
    # AVX2: 8 lanes; 2 x 32 x 2.45 GHz
    assert hardware.peak_gflops(hardware.cpu_info(info), cores=2)["peak_gflops"] == pytest.approx(156.8)
    # An AMD CPU with AVX-512 flags (Zen 4) still has 256-bit pipes.
    info.write_text(ZEN3.replace("avx2 fma", "avx2 fma avx512f"))
    assert hardware.peak_gflops(hardware.cpu_info(info), cores=2)["flop_per_cycle"] == 32


def _onednn_in_fresh_python(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != hardware.ONEDNN_ENV}
    if env_value is not None:
        env[hardware.ONEDNN_ENV] = env_value
    code = "import ganlab, tensorflow; from ganlab.core import hardware; print(hardware.onednn_state())"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "KERAS_BACKEND": "tensorflow"},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.skipif(not hardware.is_x86(), reason="oneDNN is turned on for x86 CPUs only")
def test_importing_ganlab_turns_onednn_on_and_a_users_zero_keeps_it_off():
    assert _onednn_in_fresh_python(None) == "on"
    assert _onednn_in_fresh_python("0") == "off"


def test_onednn_state_is_na_before_tensorflow_loads(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert hardware.onednn_state() == "n/a"


def test_flops_of_the_book_mlp_and_the_blog_dcgan_are_counted_from_layers():
    from ganlab.nets import models

    g, d = models.build("mlp", 100)
    assert hardware.forward_flop(g) == 2 * (100 * 128 + 128 * 784)
    assert hardware.forward_flop(d) == 2 * (784 * 128 + 128 * 1)
    # batch x (4 G + 9 D): about 0.35 GFLOP per iteration at batch 128
    assert hardware.iteration_gflop(g, d, 128) == pytest.approx(128 * (4 * 226_304 + 9 * 200_960) / 1e9)
    fused, blog = models.dcgan_generator(100), models.dcgan_generator(100, fused=False)
    # UpConv2D does 25 of the blog pair's 64 multiply-adds per 2x2 block; the rest is the same.
    up = [(7, 128, 128), (14, 128, 64)]  # (input side, in channels, out channels) of each up-block
    saved = sum(2 * h * h * (64 - 25) * cin * cout for h, cin, cout in up)
    assert hardware.forward_flop(blog) - hardware.forward_flop(fused) == saved
