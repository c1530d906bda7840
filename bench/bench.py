"""Benchmarks, side by side in one run: the compiled step against the book's loop, DCGAN speed, peak RSS.

Run: make bench   (or: python bench/bench.py --out bench/results.json)
Needs data/prepared (run `dvc repro prepare` first; `make bench` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from ganlab import models
from ganlab.config import TrainConfig
from ganlab.data import load_split
from ganlab.devices import cpu_info, select_device
from ganlab.train import make_gan

ROOT = Path(__file__).resolve().parents[1]


def book_loop_its(x: np.ndarray, iterations: int, batch: int = 128, z_dim: int = 100) -> float:
    """The book's loop re-created in Keras 3: predict + three train_on_batch calls per iteration.

    `discriminator.trainable` is toggled around the calls, as the blog does, so that D really learns
    (it is read when each model's train function is first traced).
    """
    g, d = models.build("mlp", z_dim)
    d_model = keras.Sequential([d, keras.layers.Activation("sigmoid")])
    d_model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(), metrics=["accuracy"])
    d_model.trainable = False
    gan = keras.Sequential([keras.Input((z_dim,)), g, d_model])
    gan.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam())
    real, fake = np.ones((batch, 1)), np.zeros((batch, 1))
    rng = np.random.default_rng(0)

    def one():
        imgs = x[np.sort(rng.integers(0, len(x), batch))]
        gen = g.predict(rng.normal(0, 1, (batch, z_dim)), verbose=0)
        d_model.trainable = True
        d_model.train_on_batch(imgs, real)
        d_model.train_on_batch(gen, fake)
        d_model.trainable = False
        gan.train_on_batch(rng.normal(0, 1, (batch, z_dim)), real)

    for _ in range(5):  # trace everything before timing
        one()
    t0 = time.perf_counter()
    for _ in range(iterations):
        one()
    return iterations / (time.perf_counter() - t0)


def compiled_its(x: np.ndarray, cfg: TrainConfig, iterations: int) -> float:
    """Iterations/s of GAN.fit() (the pipeline's compiled step), after one warm-up call."""
    strategy, _ = select_device(cfg)
    gan = make_gan(cfg, strategy)
    gan.set_data(x)
    data = tf.data.Dataset.from_tensors(tf.zeros((1,))).repeat()
    warm = gan.steps_per_execution * 2
    gan.fit(data, epochs=1, steps_per_epoch=warm, verbose=0, shuffle=False)
    t0 = time.perf_counter()
    gan.fit(data, epochs=1, steps_per_epoch=iterations, verbose=0, shuffle=False)
    return iterations / (time.perf_counter() - t0)


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
                print(f"  {model} precision={info['precision']} xla={jit} ...", flush=True)
                rows.append({"model": model, "precision": info["precision"], "jit_compile": jit,
                             "device": info["device"], "its": round(compiled_its(x, cfg, its), 2)})
    # select_device set a global policy: leave float32 for the book's loop that may follow.
    keras.mixed_precision.set_global_policy("float32")
    return rows


def train_stage_peak_rss(iterations: int) -> tuple[float, float]:
    """Run the real `train` stage (default mlp params, fewer iterations); return (peak RSS MB, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["train"].update(iterations=iterations, sample_interval=1000, checkpoint_interval=1000)
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "pipeline/train.py"), "--params", f"{tmp}/params.yaml",
                        "--data", str(ROOT / "data/prepared"),
                        "--out", f"{tmp}/out", "--checkpoints", f"{tmp}/ckpt", "--metrics", f"{tmp}/m.json",
                        "--plots", f"{tmp}/plots"], check=True, env=env, cwd=tmp, capture_output=True)
        seconds = time.perf_counter() - t0
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, seconds
def dcgan_rows(x: np.ndarray, iterations: int) -> dict:
    """The blog's DCGAN (batch 200) in float32 with the fused UpConv2D and with the blog's UpSampling +
    Conv2D layers, and in bfloat16 where the CPU has it natively; with the blog's 3,000-iteration time."""
    cfg = TrainConfig(model="dcgan", steps_per_execution=1, mixed_precision="off")
    rows: dict = {"float32": round(compiled_its(x, cfg, iterations), 3)}
    blog_layers = dataclasses.replace(models.REGISTRY["dcgan"],
                                      generator=lambda z_dim, width=1.0: models.dcgan_generator(z_dim, width, False))
    saved = models.REGISTRY["dcgan"]
    models.REGISTRY["dcgan"] = blog_layers
    try:
        rows["float32_upsampling_conv"] = round(compiled_its(x, cfg, iterations), 3)
    finally:
        models.REGISTRY["dcgan"] = saved
    rows["fused_speedup"] = round(rows["float32"] / rows["float32_upsampling_conv"], 2)
    if cpu_info()["bf16_flags"]:
        rows["bfloat16"] = round(compiled_its(x, dataclasses.replace(cfg, mixed_precision="bfloat16"), iterations), 3)
        rows["bfloat16_speedup"] = round(rows["bfloat16"] / rows["float32"], 2)
    else:
        rows["bfloat16"] = None  # emulated bf16 is slower than float32: `auto` never picks it here
    keras.mixed_precision.set_global_policy("float32")
    best = max(v for k, v in rows.items() if k in ("float32", "bfloat16") and v)
    rows["blog_3000_iterations_minutes_est"] = round(3000 / best / 60, 1)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results.json")
    ap.add_argument("--book-iterations", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument("--matrix", action="store_true",
                    help="also time mlp and dcgan with mixed precision and XLA off and on (meant for a GPU)")
    ap.add_argument("--matrix-only", action="store_true", help="time only that matrix")
    ap.add_argument("--dcgan-iterations", type=int, default=10, help="timed DCGAN iterations per setting")
    ap.add_argument("--matrix-iterations", type=int, nargs=2, default=(4000, 400), metavar=("MLP", "DCGAN"))
    args = ap.parse_args()
    x, _ = load_split(ROOT / "data/prepared", "train")
    x = np.asarray(x)
    base = TrainConfig(model="mlp")
    results: dict = {"machine": {**cpu_info(), "cpus": os.cpu_count(), "python": platform.python_version(),
                                 "tensorflow": tf.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))}}
    if args.matrix or args.matrix_only:
        print("precision x XLA matrix ...", flush=True)
        mlp_its, dcgan_its = args.matrix_iterations
        results["matrix"] = precision_xla_matrix(x, {"mlp": mlp_its, "dcgan": dcgan_its})
        if args.matrix_only:
            write(args.out, results)
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
    print("train stage peak RSS ...", flush=True)
    rss, secs = train_stage_peak_rss(2000)
    results["train_stage_peak_rss_mb"] = round(rss, 1)
    results["train_stage_2000_iterations_s"] = round(secs, 1)
    write(args.out, results)


def write(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
