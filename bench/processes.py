"""What whole processes cost, the way `make bench` times them: the real `train` stage, and `make serve`
answering requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def train_stage(iterations: int, backend: str) -> dict:
    """Run the real `train` stage (default mlp params, fewer iterations) on `backend`; return its
    iterations/s as the stage reports it (grids, checkpoints and MLflow included), time and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["train"].update(iterations=iterations, sample_interval=1000, checkpoint_interval=1000,
                               backend=backend)
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(ROOT / "pipeline/train.py"), "--params", f"{tmp}/params.yaml",
                                 "--data", str(ROOT / "data/prepared"), "--out", f"{tmp}/out",
                                 "--checkpoints", f"{tmp}/ckpt", "--metrics", f"{tmp}/m.json",
                                 "--plots", f"{tmp}/plots"], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max over all children
        if status:
            raise SystemExit(f"bench: the {backend} train stage failed:\n{err.decode()[-3000:]}")
        its = json.loads((Path(tmp) / "m.json").read_text())["iterations_per_s"]
    return {"iterations_per_s": its, "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def serving_latency(model: str, requests: int = 50, batch: int = 64) -> dict:
    """`make serve` on `model` (after `make run`: the champion): latency of POST /invocations with `batch`
    latent vectors (JSON both ways, as a client sends them), over `requests` requests after 5 warm-up ones."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["make", "serve", f"SERVE_PORT={port}", f"MODEL={model}"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = json.dumps({"inputs": np.random.default_rng(0).standard_normal((batch, 100)).tolist()}).encode()
    try:
        deadline = time.time() + 180
        while proc.poll() is None and time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            return {"error": "make serve did not start (is there a champion? run make run first)"}
        times = []
        for i in range(5 + requests):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            if i >= 5:
                times.append(time.perf_counter() - t0)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    ms = np.asarray(times) * 1000
    return {"model": model, "batch": batch, "requests": requests, "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p90_ms": round(float(np.percentile(ms, 90)), 1),
            "images_per_s": round(batch * len(ms) / (ms.sum() / 1000), 1)}
