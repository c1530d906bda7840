"""Each benchmark row against the hardware's peak: the work of one iteration counted from the layers, the
GFLOP/s achieved, and their fraction of the CPU's float32 peak, cores x SIMD lanes x FMA pipes x clock
(ganlab.core.hardware), or on a GPU of a large matmul of the row's precision timed on it."""

from __future__ import annotations

import ganlab  # noqa: F401  (first: it turns TensorFlow's oneDNN on before Keras loads TensorFlow)

# isort: split
import functools
import time

import keras
import numpy as np

from ganlab.core.hardware import iteration_gflop, peak_gflops
from ganlab.nets import models
from ganlab.nets.specs import SPECS


def matmul_gflops(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """GFLOP/s of an n x n matmul on this backend: what its kernels reach on this device at best."""
    a = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n)), dtype=dtype)
    read = lambda m: keras.ops.convert_to_numpy(keras.ops.cast(m[0, 0], "float32"))  # one number back, not n x n
    read(keras.ops.matmul(a, a))  # warm-up, the read-back's own program included
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = keras.ops.matmul(a, a)
    read(out)  # done once the last product is
    return round(2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9, 1)


COUNTED = "from the layers: batch x (4 G + 9 D) forward FLOPs"


@functools.cache  # one build per model and layer form, not one per row of the table
def gflop(model: str, fused: bool = True) -> float:
    """One iteration of `model` at its reference batch, counted from the layers (ganlab.core.hardware)."""
    g, d = models.build(model, 100, fused=fused)
    return iteration_gflop(g, d, SPECS[model].batch_size)


def peak_table(results: dict, peak: dict) -> list[dict]:
    """Each timed row of `results` as achieved GFLOP/s and a fraction of the CPU's float32 peak."""
    tf_onednn = results["machine"].get("onednn", "?")
    rows = [("book loop (Keras 2 style)", "mlp", "tensorflow", "float32", tf_onednn, results.get("book_loop_its")),
            ("compiled step", "mlp", "tensorflow", "float32", tf_onednn, results.get("compiled_its")),
            ("compiled step", "mlp_bn", "tensorflow", "float32", tf_onednn, results.get("mlp_bn_its"))]
    dc = results.get("dcgan", {})
    rows += [("compiled step", "dcgan", "tensorflow", "float32", tf_onednn, dc.get("float32")),
             ("Keras' BatchNormalization", "dcgan", "tensorflow", "float32", tf_onednn,
              dc.get("float32_keras_batchnorm")),
             ("blog's stock layers", "dcgan", "tensorflow", "float32", tf_onednn,
              dc.get("float32_upsampling_conv")),
             ("compiled step", "dcgan", "tensorflow", "bfloat16", tf_onednn, dc.get("bfloat16")),
             ("compiled step, XLA", "dcgan", "tensorflow", "float32", tf_onednn, dc.get("float32_xla"))]
    for key, onednn in (("jax", "n/a"), ("tensorflow_onednn_off", "off")):
        other = results.get(key, {})
        name = "jax" if key == "jax" else "tensorflow"
        rows += [("compiled step", "mlp", name, "float32", onednn, other.get("mlp_its")),
                 ("compiled step", "dcgan", name, "float32", onednn, other.get("dcgan_float32_its")),
                 ("compiled step", "dcgan", name, "bfloat16", onednn, other.get("dcgan_bfloat16_its"))]
    rows = [(*row, peak) for row in rows]
    avx2 = peak.get("avx2")
    for name, capped in results.get("avx2_cap", {}).items():  # against the AVX2 peak of these cores
        onednn = capped["machine"]["onednn"]
        rows += [("capped at AVX2", "mlp", name, "float32", onednn, capped.get("mlp_its"), avx2),
                 ("capped at AVX2", "dcgan", name, "float32", onednn, capped.get("dcgan_float32_its"), avx2)]
    table = []
    for what, model, backend, precision, onednn, its, row_peak in rows:
        if not its:
            continue
        work = gflop(model, fused=not what.startswith("blog"))
        # No clock in /proc/cpuinfo (not Linux, some ARM machines): no peak, so no fraction of it.
        fraction = round(work * its / row_peak["peak_gflops"], 3) if row_peak["peak_gflops"] else None
        table.append({"what": what, "model": model, "backend": backend, "precision": precision, "onednn": onednn,
                      "its": its, "gflop_per_iteration": round(work, 3), "gflops": round(work * its, 1),
                      "peak_gflops": row_peak["peak_gflops"], "fraction_of_peak": fraction})
    return table


def print_peak(table: list[dict], peak: dict) -> None:
    print(f"\nfloat32 peak {peak['peak_gflops']} GFLOP/s = {peak['how']}")
    if "avx2" in peak:
        print(f"rows capped at AVX2: against {peak['avx2']['peak_gflops']} GFLOP/s = {peak['avx2']['how']}")
    print(f"{'row':27} {'model':7} {'backend':10} {'precision':9} {'oneDNN':6} {'it/s':>8} {'GFLOP/it':>9} "
          f"{'GFLOP/s':>8} {'of peak':>8}")
    for r in table:
        print(f"{r['what']:27} {r['model']:7} {r['backend']:10} {r['precision']:9} {r['onednn']:6} {r['its']:8.3f} "
              f"{r['gflop_per_iteration']:9.3f} {r['gflops']:8.1f} "
              + (f"{r['fraction_of_peak']:8.1%}" if r["fraction_of_peak"] is not None else "       ?"))


def avx2_flags(cpu: dict) -> list[str]:
    """`cpu`'s flags without AVX-512: what these cores show when held to AVX2."""
    return [f for f in cpu.get("flags", []) if not f.startswith("avx512")]


def add_peak(results: dict, cpu: dict) -> dict:
    """Put under `results["peak"]` each timed row's fraction of the CPU's float32 peak; return that peak."""
    peak = peak_gflops(cpu)
    if "avx2_cap" in results:
        peak["avx2"] = peak_gflops({**cpu, "flags": avx2_flags(cpu)})
    results["matmul_2048_gflops"] = matmul_gflops()
    results["peak"] = {**peak, "gflop_counted": COUNTED, "rows": peak_table(results, peak)}
    return peak


def device_peak(rows: dict) -> dict:
    """On a GPU, each timed row of `backend_rows` against the rate an 8192 x 8192 matmul of its precision
    reaches through this backend on this device (measured, not a datasheet's figure)."""
    ceiling = {p: matmul_gflops(8192, 20, p) for p in ("float32", "bfloat16")}
    table = []
    for key, its in rows.items():  # "mlp_its", "dcgan_bfloat16_spe20_its", ...: the model, then the precision
        model = max((name for name in SPECS if key.startswith(f"{name}_")), key=len, default=None)
        if key.endswith("_its") and model and its:
            work, precision = gflop(model), "bfloat16" if "_bfloat16" in key else "float32"
            table.append({"row": key, "gflop_per_iteration": round(work, 3), "gflops": round(work * its, 1),
                          "fraction_of_matmul": round(work * its / ceiling[precision], 4)})
    return {"matmul_8192_gflops": ceiling, "gflop_counted": COUNTED, "rows": table}
