"""Benchmarks, side by side in one run: the compiled step against the book's loop, both backends, DCGAN speed, peak RSS.

Run: make bench   (or: python bench/bench.py --out bench/results.json)
Needs data/prepared (run `dvc repro prepare` first; `make bench` does). The JAX rows come from a
second process of this script (`--backend-only` under KERAS_BACKEND=jax), which imports neither
TensorFlow nor MLflow, so on a machine with JAX alone (a GPU machine without TensorFlow) it runs by itself:
    KERAS_BACKEND=jax python bench/bench.py --backend-only --out bench/results-gpu.json
"""

from __future__ import annotations

import os

# Every figure as on a first run: a JAX process (this one under --backend-only, and every process it
# starts) compiles its programs, whatever the user's compilation cache
# (ganlab.training.devices.jax_compilation_cache) holds; the train stage's it/s counts compiling.
# Before JAX is imported: it reads this variable once.
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import ganlab  # noqa: E402, F401  (first: it turns TensorFlow's oneDNN on before Keras loads TensorFlow)

# isort: split
import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import keras
import numpy as np

# bench/'s modules, beside this script
from peak import add_peak, device_peak, print_peak
from processes import serving_latency, train_stage
from steps import book_loop_its, compiled_its

from ganlab.core.config import TrainConfig
from ganlab.core.hardware import ONEDNN_ENV, ONEDNN_ISA_ENVS, XLA_ISA_FLAG, cpu_info, onednn_state
from ganlab.data.arrays import load_split
from ganlab.nets import models
from ganlab.training.devices import applied_jit_compile, select_device, settle_determinism

ROOT = Path(__file__).resolve().parents[1]


def precision_xla_matrix(x: np.ndarray, iterations: dict[str, int]) -> list[dict]:
    """Iterations/s of each model with mixed precision and XLA each off and on (for GPU machines).

    Each row names the precision and XLA setting that `select_device` really applied, so a row
    measured on a machine without a capable GPU says so rather than pretending.
    """
    rows = []
    for model, its in iterations.items():
        for mixed in ("off", "float16"):
            for jit in (False, True):
                cfg = TrainConfig(model=model, mixed_precision=mixed, jit_compile=jit)
                _, info = select_device(cfg)
                print(f"  {model} precision={info['precision']} xla={info['jit_compile']} ...", flush=True)
                rows.append({"model": model, "precision": info["precision"], "jit_compile": info["jit_compile"],
                             "device": info["device"], "its": round(compiled_its(x, cfg, its), 2)})
    # select_device set a global policy: leave float32 for the book's loop that may follow.
    keras.mixed_precision.set_global_policy("float32")
    return rows


def backend_rows(x: np.ndarray, iterations: int, dcgan_iterations: int) -> dict:
    """This process's backend: the mlp step, and the DCGAN step in float32 and (where the hardware
    has it natively) bfloat16, all at the reference batch sizes."""
    rows = {"backend": keras.backend.backend(),
            "mlp_its": round(compiled_its(x, TrainConfig(model="mlp"), iterations), 2)}
    dc = TrainConfig(model="dcgan", steps_per_execution=1, mixed_precision="off")
    rows["dcgan_float32_its"] = round(compiled_its(x, dc, dcgan_iterations), 3)
    _, info = select_device(dataclasses.replace(dc, mixed_precision="auto", backend=rows["backend"]))
    if info["device"] != "cpu":  # launch-bound on a GPU: what mixed precision gives the MLP too
        rows["mlp_bfloat16_its"] = round(
            compiled_its(x, TrainConfig(model="mlp", mixed_precision="bfloat16"), iterations), 2)
    if info["device"] != "cpu" or cpu_info()["bf16_flags"]:  # none under a cap below them (`avx2_rows`)
        rows["dcgan_bfloat16_its"] = round(
            compiled_its(x, dataclasses.replace(dc, mixed_precision="bfloat16"), dcgan_iterations), 3)
    if info["device"] != "cpu":
        # The references' steps per call (20 for the MLPs, 1 for the DCGANs) are set for a CPU; on a GPU each
        # call's Python work (reading the losses, writing the Keras variables back) may be what a step waits on.
        # (A timed length that 200 or 20 does not divide runs at fewer steps a call: `GAN.steps_per_call`.)
        rows["mlp_spe200_its"] = round(
            compiled_its(x, TrainConfig(model="mlp", steps_per_execution=200), iterations), 2)
        for precision, mixed in (("float32", "off"), ("bfloat16", "bfloat16")):
            rows[f"dcgan_{precision}_spe20_its"] = round(compiled_its(
                x, dataclasses.replace(dc, mixed_precision=mixed, steps_per_execution=20), dcgan_iterations), 3)
    keras.mixed_precision.set_global_policy("float32")
    rows["device"] = info["device"]
    if info["device"] != "cpu":  # once float32 is the policy again: the FLOPs are counted on models it builds
        rows["peak"] = device_peak(rows)
    return rows


def second_process(args, backend: str, env: dict[str, str], *extra: str) -> dict:
    """The `--backend-only` rows of a second process of this script on `backend`, with `env` over this
    process's environment: what a backend reads when it loads (its flags, oneDNN's switch) must be set
    before it does, so each setting gets a process of its own."""
    dcgan = args.dcgan_iterations if backend == "tensorflow" else args.jax_dcgan_iterations
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        subprocess.run([sys.executable, __file__, "--backend-only", "--out", str(out), "--iterations",
                        str(args.iterations), "--dcgan-iterations", str(dcgan), *extra],
                       check=True, env={**os.environ, **env, "KERAS_BACKEND": backend})
        return json.loads(out.read_text())


def xla_flags(flag: str) -> dict[str, str]:
    """XLA_FLAGS with `flag` added to the user's own."""
    return {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()}


def jax_rows(args, two_devices: bool = False) -> dict:
    """`backend_rows` on JAX, from a second process of this script; with `two_devices`, `replica_rows`
    in a process whose CPU JAX shows as two devices."""
    if two_devices:
        return second_process(args, "jax", xla_flags("--xla_force_host_platform_device_count=2"), "--two-devices")
    return second_process(args, "jax", {})


def replica_rows(x: np.ndarray, iterations: int) -> dict:
    """The mlp step on JAX on one device and data-parallel over two, at the same global batch. Both
    devices share the same cores here, so the second shows what the data-parallel path costs, not a gain."""
    import jax

    rows = {"devices": len(jax.local_devices())}
    for strategy in ("one_device", "mirrored"):
        rows[f"mlp_{strategy}_its"] = round(compiled_its(x, TrainConfig(model="mlp", strategy=strategy), iterations), 2)
    rows["two_over_one"] = round(rows["mlp_mirrored_its"] / rows["mlp_one_device_its"], 3)
    return rows


def dcgan_rows(x: np.ndarray, iterations: int) -> dict:
    """The blog's DCGAN (batch 200) in float32 with the fused layers (`UpConv2D`, `FusedBatchNormalization`),
    with `UpConv2D` and Keras' BatchNormalization, and with the blog's stock layers, and in bfloat16 where
    the CPU has it natively; with the blog's 3,000-iteration time."""
    cfg = TrainConfig(model="dcgan", steps_per_execution=1, mixed_precision="off")
    with mock.patch.object(models, "FusedBatchNormalization", keras.layers.BatchNormalization):
        keras_bn = round(compiled_its(x, cfg, iterations), 3)
    rows: dict = {"float32": round(compiled_its(x, cfg, iterations), 3),
                  "float32_keras_batchnorm": keras_bn,
                  "float32_upsampling_conv": round(compiled_its(x, cfg, iterations, fused=False), 3)}
    # XLA's own CPU kernels in place of oneDNN's: one of the candidates for the step's speed. Keras runs
    # the step without XLA while op determinism is on (as here, on a CPU): no row then.
    xla = dataclasses.replace(cfg, jit_compile=True)
    rows["float32_xla"] = round(compiled_its(x, xla, iterations), 3) if applied_jit_compile(xla) else None
    rows["fused_speedup"] = round(rows["float32"] / rows["float32_upsampling_conv"], 2)
    rows["fused_batchnorm_speedup"] = round(rows["float32"] / keras_bn, 2)
    if cpu_info()["bf16_flags"]:
        rows["bfloat16"] = round(compiled_its(x, dataclasses.replace(cfg, mixed_precision="bfloat16"), iterations), 3)
        rows["bfloat16_speedup"] = round(rows["bfloat16"] / rows["float32"], 2)
    else:
        rows["bfloat16"] = None  # emulated bf16 is slower than float32: `auto` never picks it here
    keras.mixed_precision.set_global_policy("float32")
    best = max(v for k, v in rows.items() if k in ("float32", "bfloat16") and v)
    rows["blog_3000_iterations_minutes_est"] = round(3000 / best / 60, 1)
    return rows


def onednn_off_rows(args) -> dict:
    """`backend_rows` on TensorFlow with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0), from a second process."""
    return second_process(args, "tensorflow", {ONEDNN_ENV: "0"})


def avx2_rows(args) -> dict:
    """`backend_rows` on each backend in a process capped at AVX2 (so in float32): an estimate of an AVX2-only
    CPU at this clock, not a measurement of one (caches, memory and TensorFlow's own Eigen kernels stay)."""
    # oneDNN's and XLA's own caps on the instruction set: these cores run only what an AVX2 CPU has.
    env = {ONEDNN_ISA_ENVS[0]: "AVX2", ONEDNN_ENV: "1", **xla_flags(f"{XLA_ISA_FLAG}AVX2")}
    return {backend: second_process(args, backend, env) for backend in ("tensorflow", "jax")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results.json")
    ap.add_argument("--book-iterations", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument("--matrix", action="store_true",
                    help="also time mlp and dcgan with mixed precision and XLA off and on (meant for a GPU)")
    ap.add_argument("--matrix-only", action="store_true", help="time only that matrix")
    ap.add_argument("--dcgan-iterations", type=int, default=10,
                    help="DCGAN iterations a row runs (at least 3 calls; the first is not timed: bench/steps.py)")
    ap.add_argument("--matrix-iterations", type=int, nargs=2, default=(4000, 400), metavar=("MLP", "DCGAN"))
    ap.add_argument("--backend-only", action="store_true",
                    help="time only this process's backend (KERAS_BACKEND): mlp, and dcgan in float32 and bf16")
    ap.add_argument("--jax-dcgan-iterations", type=int, default=2,
                    help="DCGAN iterations a row runs on JAX (its CPU convolutions are slow)")
    ap.add_argument("--dcgan-only", action="store_true",
                    help="time only the DCGAN rows (both layer forms, float32 and native bf16); takes minutes")
    ap.add_argument("--serving-only", action="store_true",
                    help="time only `make serve` of --serving-model (after make run) and add it to --out")
    ap.add_argument("--serving-model", default="models:/ganlab-generator@champion")
    ap.add_argument("--two-devices", action="store_true", help=argparse.SUPPRESS)  # with --backend-only
    ap.add_argument("--jax-devices-only", action="store_true",
                    help="time only the JAX mlp step on one and two (forced CPU) devices and add it to --out")
    args = ap.parse_args()
    if args.backend_only and not (ROOT / "data/prepared").exists():
        # A machine with JAX alone has no DVC to prepare MNIST: the step's speed does not depend on pixels.
        x, data = np.random.default_rng(0).uniform(-1, 1, (60_000, 28, 28, 1)).astype(np.float32), "synthetic"
    else:
        x, data = np.asarray(load_split(ROOT / "data/prepared", "train")[0]), "mnist"
    base = TrainConfig(model="mlp")
    settle_determinism(base)  # the steps run as the train stage runs them (one op at a time on a CPU)
    cpu = cpu_info()
    results: dict = {"machine": {**cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
                                 "keras": keras.__version__, "backend": keras.backend.backend(),
                                 "onednn": onednn_state(), "date": time.strftime("%Y-%m-%d"),
                                 "command": " ".join(["python", "bench/bench.py", *sys.argv[1:]])}, "data": data}
    if args.serving_only or args.jax_devices_only:  # added to the file's other rows, which keep their own machine
        old = json.loads(args.out.read_text()) if args.out.exists() else {"machine": results["machine"]}
        row = ({"serving": serving_latency(args.serving_model)} if args.serving_only
               else {"jax_two_devices": {**jax_rows(args, two_devices=True), "machine": results["machine"]}})
        write(args.out, {**old, **row})
        return
    if args.backend_only:
        if keras.backend.backend() == "jax":
            import jax

            results["machine"]["jax"] = jax.__version__
        results.update(replica_rows(x, args.iterations) if args.two_devices
                       else backend_rows(x, args.iterations, args.dcgan_iterations))
        write(args.out, results)
        return
    import tensorflow as tf

    results["machine"].update(tensorflow=tf.__version__, gpus=len(tf.config.list_physical_devices("GPU")))
    if args.matrix or args.matrix_only:
        print("precision x XLA matrix ...", flush=True)
        mlp_its, dcgan_its = args.matrix_iterations
        results["matrix"] = precision_xla_matrix(x, {"mlp": mlp_its, "dcgan": dcgan_its})
        if args.matrix_only:
            write(args.out, results)
            return
    if args.dcgan_only:
        finish(args.out, {**results, "dcgan": dcgan_rows(x, args.dcgan_iterations)}, cpu)
        return
    print("book loop ...", flush=True)
    results["book_loop_its"] = round(book_loop_its(x, args.book_iterations), 2)
    print("compiled step ...", flush=True)
    results["compiled_its"] = round(compiled_its(x, base, args.iterations), 2)
    results["compiled_its_spe1"] = round(
        compiled_its(x, dataclasses.replace(base, steps_per_execution=1), args.iterations // 2), 2)
    results["speedup_vs_book"] = round(results["compiled_its"] / results["book_loop_its"], 1)
    results["default_run_train_minutes_est"] = round(20_000 / results["compiled_its"] / 60, 2)
    print("dcgan ...", flush=True)
    results["dcgan"] = dcgan_rows(x, args.dcgan_iterations)
    results["dcgan_its"] = results["dcgan"]["float32"]
    results["mlp_bn_its"] = round(compiled_its(x, TrainConfig(model="mlp_bn"), 1000), 2)
    print("jax ...", flush=True)
    results["jax"] = jax_rows(args)
    results["jax_mlp_speedup_vs_tensorflow"] = round(results["jax"]["mlp_its"] / results["compiled_its"], 2)
    results["jax_mlp_speedup_vs_book"] = round(results["jax"]["mlp_its"] / results["book_loop_its"], 1)
    print("jax on two devices ...", flush=True)
    results["jax_two_devices"] = jax_rows(args, two_devices=True)
    print("tensorflow with oneDNN off ...", flush=True)
    results["tensorflow_onednn_off"] = onednn_off_rows(args)
    results["onednn_speedup"] = {
        "mlp": round(results["compiled_its"] / results["tensorflow_onednn_off"]["mlp_its"], 2),
        "dcgan_float32": round(results["dcgan"]["float32"] / results["tensorflow_onednn_off"]["dcgan_float32_its"], 2)}
    if "avx512f" in cpu["flags"] and not results["machine"]["gpus"]:  # elsewhere the cap changes nothing
        print("both backends capped at AVX2 ...", flush=True)
        results["avx2_cap"] = avx2_rows(args)
    print("train stage on each backend ...", flush=True)
    stage = {backend: train_stage(4000, backend) for backend in ("tensorflow", "jax")}
    results["train_stage_4000_iterations"] = stage
    jax_its = stage["jax"]["iterations_per_s"]
    results["train_stage_jax_speedup"] = round(jax_its / stage["tensorflow"]["iterations_per_s"], 2)
    results["train_stage_jax_speedup_vs_book"] = round(jax_its / results["book_loop_its"], 1)
    results["train_stage_peak_rss_mb"] = stage["tensorflow"]["peak_rss_mb"]
    finish(args.out, results, cpu)


def finish(out: Path, results: dict, cpu: dict) -> None:
    """Add each row's fraction of the CPU's float32 peak, write `out` and print the table."""
    peak = add_peak(results, cpu)
    write(out, results)
    print_peak(results["peak"]["rows"], peak)


def write(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
