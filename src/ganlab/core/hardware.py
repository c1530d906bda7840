"""What this CPU is and what it can do: model, flags, float32 peak, and TensorFlow's oneDNN switch.

Imports neither Keras nor TensorFlow: `enable_onednn` must run before TensorFlow is first imported,
since TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it loads its kernels.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_ISA_ENVS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN reads the first one set
XLA_ISA_FLAG = "--xla_cpu_max_isa="
# The instruction-set caps each library knows (oneDNN's from ONEDNN_ISA_ENVS, XLA's from XLA_ISA_FLAG), by
# how far up they let kernels go: 0 below AVX-512, 1 AVX-512, 2 its bf16, 3 its fp16, 4 AMX. A name the
# library does not know caps nothing, there as here.
ISA_LEVELS = {
    "onednn": {"SSE41": 0, "AVX": 0, "AVX2": 0, "AVX2_VNNI": 0, "AVX2_VNNI_2": 0, "AVX512_CORE": 1,
               "AVX512_CORE_VNNI": 1, "AVX512_CORE_BF16": 2, "AVX512_CORE_FP16": 3, "AVX10_1_512": 3,
               "AVX10_2_512": 3, "AVX512_CORE_AMX": 4, "AVX10_1_512_AMX": 4, "AVX512_CORE_AMX_FP16": 4,
               "AVX10_1_512_AMX_FP16": 4, "AVX10_2_512_AMX_2": 4},
    "xla": {"SSE4_2": 0, "AVX": 0, "AVX2": 0, "AVX512": 1, "AVX512_VNNI": 1, "AVX512_BF16": 2, "AMX": 4,
            "AMX_FP16": 4},
}
# The CPU flags of native bf16, with the level a cap must leave for `auto` to count them.
BF16_FLAGS = {"amx_bf16": 4, "avx512_bf16": 2}
# TensorFlow hands a policy's half-precision work to oneDNN on CPUs with the flag, reading the CPU and not
# the cap; under a cap below the level, oneDNN has no kernel for it and the process dies (a segmentation
# fault, seen on an AVX-512 Xeon: bfloat16 under AVX2 and AVX2_VNNI, float16 under AVX512_CORE and
# AVX512_CORE_BF16; bfloat16 ran emulated under AVX512_CORE, float16 under AVX512_CORE_FP16). TensorFlow
# also hands both to oneDNN on CPUs with `avx_ne_convert`, without AVX-512: not seen here, not listed.
ONEDNN_HALF = {"mixed_bfloat16": ("avx512f", 1), "mixed_float16": ("avx512_fp16", 3)}


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name, family/model numbers, clock (MHz) and flags, from /proc/cpuinfo (Linux), and
    the bf16 flags its kernels may use under the user's instruction-set caps (`isa_caps`)."""
    info: dict[str, Any] = {"cpu": platform.processor() or "unknown", "vendor": "", "family": 0, "model": 0,
                            "mhz": 0.0, "flags": []}
    keys = {"model name": ("cpu", str), "vendor_id": ("vendor", str), "cpu family": ("family", int),
            "model": ("model", int), "cpu MHz": ("mhz", float)}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in keys and value.strip():
                name, cast = keys[key]
                info[name] = cast(value.strip())
            elif key == "flags":
                info["flags"] = sorted(set(value.split()))
                break  # the first processor describes them all
    except (OSError, ValueError):  # not Linux: no flags to read, so nothing claimed
        pass
    info["isa_caps"] = isa_caps()
    info["bf16_flags"] = [f for f, level in BF16_FLAGS.items() if f in info["flags"]
                          and all(ISA_LEVELS[lib][cap] >= level for lib, cap in info["isa_caps"].items())]
    return info


def isa_caps(environ=os.environ) -> dict[str, str]:
    """The instruction-set caps the user set, as the libraries read them (upper-cased, the names each knows):
    oneDNN's (TensorFlow's kernels) and XLA's (JAX's)."""
    onednn = next((environ[v] for v in ONEDNN_ISA_ENVS if environ.get(v)), "")
    xla = [flag[len(XLA_ISA_FLAG):] for flag in environ.get("XLA_FLAGS", "").split() if flag.startswith(XLA_ISA_FLAG)]
    caps = {"onednn": onednn.upper(), "xla": xla[-1].upper() if xla else ""}
    return {lib: cap for lib, cap in caps.items() if cap in ISA_LEVELS[lib]}


def onednn_crash_cap(info: dict[str, Any], policy: str, onednn: str) -> str | None:
    """The oneDNN cap under which TensorFlow would crash on `policy`'s half-precision work on this CPU
    (ONEDNN_HALF), else None. `onednn`: whether TensorFlow runs its oneDNN kernels (`onednn_state`)."""
    flag, level = ONEDNN_HALF.get(policy, ("", 0))
    cap = info["isa_caps"].get("onednn")
    return cap if cap and onednn != "off" and flag in info["flags"] and ISA_LEVELS["onednn"][cap] < level else None


def peak_gflops(info: dict[str, Any], cores: int | None = None) -> dict[str, Any]:
    """The CPU's float32 peak: cores x FLOP per cycle per core x clock, with how it was worked out.

    FLOP per cycle is 2 FMA pipes x SIMD lanes x 2 (an FMA is two FLOPs). The lanes come from the
    flags: 16 with avx512f, 8 with avx2+fma. AMD's Zen 4 runs AVX-512 on its two 256-bit pipes, so
    an AMD CPU up to family 25 (Zen 3 and 4) counts 8 lanes whatever its flags (Zen 5 has 512-bit
    pipes). The clock is /proc/cpuinfo's `cpu MHz`, which on a VM is the nominal (base) clock: boost
    can put the real peak above this figure.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    flags = set(info["flags"])
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    if info.get("vendor") == "AuthenticAMD" and info.get("family", 0) <= 25:
        lanes = min(lanes, 8)
    flop_per_cycle = 2 * lanes * 2
    peak = cores * flop_per_cycle * info["mhz"] / 1000
    return {"peak_gflops": round(peak, 1), "cores": cores, "flop_per_cycle": flop_per_cycle, "mhz": info["mhz"],
            "how": f"{cores} cores x {flop_per_cycle} FLOP/cycle (2 FMA pipes x {lanes} float32 lanes x 2) "
                   f"x {info['mhz']:.0f} MHz (/proc/cpuinfo)"}


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def enable_onednn() -> None:
    """Turn TensorFlow's oneDNN kernels on for x86 CPUs, unless the user set TF_ENABLE_ONEDNN_OPTS.

    TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on AVX2 CPUs it
    leaves them off, and every stage runs about 2x slower (docs/benchmarks.md). Call before TensorFlow
    is imported; a later call changes nothing TensorFlow has already read.
    """
    if is_x86():
        os.environ.setdefault(ONEDNN_ENV, "1")


def onednn_state() -> str:
    """Whether TensorFlow runs its oneDNN kernels in this process: "on", "off", or "n/a" (not loaded)."""
    import sys

    if sys.modules.get("tensorflow") is None:  # not loaded, or made unimportable (a JAX train stage)
        return "n/a"
    try:
        from tensorflow.python.util import _pywrap_util_port

        return "on" if _pywrap_util_port.IsMklEnabled() else "off"
    except (ImportError, AttributeError):  # a TensorFlow without the probe
        return "on" if os.environ.get(ONEDNN_ENV) == "1" else "unknown"


def forward_flop(model) -> int:
    """FLOPs of one image through `model`'s Dense and convolution layers, counted from their shapes
    (a multiply-add is two; element-wise ops, BatchNorm and activations are left out: they are a few %)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Dense", "Conv2D", "UpConv2D"):
            continue
        cin, cout = int(layer.input.shape[-1]), int(layer.output.shape[-1])
        if kind == "Dense":
            positions = math.prod(int(n) for n in layer.input.shape[1:-1])
            total += 2 * positions * cin * cout
        elif kind == "UpConv2D":  # a stride-2 transposed convolution: 25 taps per input pixel
            h, w = layer.input.shape[1:3]
            total += 2 * h * w * 25 * cin * cout
        else:
            h, w = layer.output.shape[1:3]
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * cin * cout
    return total


def iteration_gflop(generator, discriminator, batch: int) -> float:
    """GFLOPs of one training iteration: D's two steps (G forward for the fakes, D forward and backward
    on the real and the fake batch) and G's step (G and D forward and backward), with a backward pass
    counted as twice its forward: batch x (4 G + 9 D)."""
    return batch * (4 * forward_flop(generator) + 9 * forward_flop(discriminator)) / 1e9

