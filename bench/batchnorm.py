"""The DCGAN's TensorFlow step with `FusedBatchNormalization` and with Keras' BatchNormalization, side by side.

Run: python bench/batchnorm.py [--calls 16] [--precision off|bfloat16] [--out bench/batchnorm.json]
Needs data/prepared (`dvc repro prepare`). One process builds both GANs (batch 200, one step a call, as
the train stage trains a DCGAN), compiles each, then times short `fit()` calls of each in turn, so both
see the same moments of a shared machine. Each call also records how many cores the process kept busy
(its CPU time over the call's wall time): on 2 cores, TensorFlow runs some calls on both and some on
about one, and single timings then differ by up to 2x for reasons that are not the layers. The CPU time
an iteration costs stays put whichever way a call runs, so the comparison is made on it (medians), and
on the best call of each.
"""

from __future__ import annotations

import ganlab  # noqa: F401  (first: it turns TensorFlow's oneDNN on before Keras loads TensorFlow)

# isort: split
import argparse
import json
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import keras
import numpy as np

from ganlab.core.config import TrainConfig
from ganlab.core.hardware import cpu_info, onednn_state
from ganlab.data.arrays import load_split
from ganlab.nets import models
from ganlab.training.devices import select_device
from ganlab.training.train import make_gan, resolved

ROOT = Path(__file__).resolve().parents[1]


def timed_calls(gans: dict, calls: int, iterations: int) -> dict:
    """Per GAN, each call's iterations/s and busy cores, the GANs taking turns."""
    rows: dict = {name: {"its": [], "cores_busy": [], "cpu_s_per_iteration": []} for name in gans}
    for _ in range(calls):
        for name, gan in gans.items():
            cpu0, t0 = sum(os.times()[:2]), time.perf_counter()
            gan.run(1, iterations, [])
            wall = time.perf_counter() - t0
            rows[name]["its"].append(round(iterations / wall, 3))
            cpu = sum(os.times()[:2]) - cpu0
            rows[name]["cores_busy"].append(round(cpu / wall, 2))
            rows[name]["cpu_s_per_iteration"].append(round(cpu / iterations, 3))
    for row in rows.values():
        row.update(best_its=max(row["its"]), median_cpu_s=round(statistics.median(row["cpu_s_per_iteration"]), 3))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=2, help="iterations per call")
    ap.add_argument("--precision", default="off", choices=("off", "bfloat16"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/batchnorm.json")
    args = ap.parse_args()
    x = np.asarray(load_split(ROOT / "data/prepared", "train")[0])
    cfg = resolved(TrainConfig(model="dcgan", backend="tensorflow", steps_per_execution=1,
                               mixed_precision=args.precision))
    strategy, info = select_device(cfg)
    gans = {}
    for name, layer in (("fused", models.FusedBatchNormalization), ("keras", keras.layers.BatchNormalization)):
        with mock.patch.object(models, "FusedBatchNormalization", layer):
            gans[name] = make_gan(cfg, strategy, True)
        gans[name].set_data(x)
        gans[name].run(1, 1, [])  # traces and compiles
    rows = timed_calls(gans, args.calls, args.iterations)
    cpu = cpu_info()
    result = {"machine": {"cpu": cpu["cpu"], "flags": cpu["flags"], "cpus": os.cpu_count(), "onednn": onednn_state(),
                          "precision": info["precision"], "date": time.strftime("%Y-%m-%d"),
                          "command": "python bench/batchnorm.py " + " ".join(
                              f"--{k} {v}" for k, v in vars(args).items() if k != "out")},
              **rows, "cpu_time_ratio": round(rows["keras"]["median_cpu_s"] / rows["fused"]["median_cpu_s"], 2),
              "best_call_ratio": round(rows["fused"]["best_its"] / rows["keras"]["best_its"], 2)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:6s} {row['median_cpu_s']:.3f} CPU s an iteration (median), best call {row['best_its']:.3f} it/s; "
              f"calls {row['its']} it/s; cores busy {row['cores_busy']}")
    print(f"fused over Keras' BatchNormalization: {result['cpu_time_ratio']}x less CPU time an iteration, "
          f"{result['best_call_ratio']}x the best call's speed")


if __name__ == "__main__":
    main()
