"""The DCGAN's TensorFlow step called three ways, call by call: how fast, and how many cores it kept busy.

Run: python bench/tf_calls.py [--calls 12] [--iterations 4]
Needs data/prepared (`dvc repro prepare`). One GAN (batch 200, float32, one step a call), compiled once,
then timed as `fit()` runs it (a new tf.data iterator each call), as Keras' train function over one
iterator kept for every call, and over a new iterator each call, the three taking turns call by call.
Prints each call's it/s and cores busy (the process's CPU time over the call's wall time);
docs/benchmarks.md says what they showed.
"""

from __future__ import annotations

import ganlab  # noqa: F401  (first: it turns TensorFlow's oneDNN on before Keras loads TensorFlow)

# isort: split
import argparse
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from ganlab.core.config import TrainConfig
from ganlab.data.arrays import load_split
from ganlab.training.devices import select_device
from ganlab.training.train import make_gan, resolved

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=4, help="iterations per call")
    args = ap.parse_args()
    x = np.asarray(load_split(ROOT / "data/prepared", "train")[0])
    cfg = resolved(TrainConfig(model="dcgan", backend="tensorflow", steps_per_execution=1, mixed_precision="off"))
    strategy, _ = select_device(cfg)
    gan = make_gan(cfg, strategy, True)
    gan.set_data(x)
    gan.run(1, 1, [])  # traces and compiles
    dummy = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(tf.zeros((1,))).repeat())
    kept = iter(dummy)

    def over(iterator) -> None:
        for _ in range(args.iterations):
            logs = gan.train_function(iterator)
        [v.numpy() for v in logs.values()]  # the work is done once its results are read

    ways = {"fit()": lambda: gan.run(1, args.iterations, []),
            "train function, one iterator": lambda: over(kept),
            "train function, a new iterator a call": lambda: over(iter(dummy))}
    calls: dict[str, list[str]] = {name: [] for name in ways}
    for _ in range(args.calls):  # the ways take turns, so each sees the same moments of a shared machine
        for name, call in ways.items():
            cpu0, t0 = sum(os.times()[:2]), time.perf_counter()
            call()
            wall = time.perf_counter() - t0
            calls[name].append(f"{args.iterations / wall:.2f} ({(sum(os.times()[:2]) - cpu0) / wall:.2f})")
    print(f"{os.cpu_count()} CPUs; {args.iterations} iterations a call; each call: it/s (cores busy)")
    for name, row in calls.items():
        print(f"{name:38s} {' '.join(row)}")


if __name__ == "__main__":
    main()
