"""Training past one device: the train CLI as two workers on 127.0.0.1, on each backend.

The data-parallel step on two devices of one process is tested in tests/on_jax/test_replicas.py (JAX)
and tests/test_train.py (TensorFlow's MirroredStrategy over two logical CPUs).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from .scratch import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_workers_on_loopback_stay_in_sync_and_only_the_chief_writes(backend, tmp_path):
    """The real train CLI as two workers: MultiWorkerMirroredStrategy configured by TF_CONFIG on TensorFlow,
    jax.distributed (two processes, CPU collectives over Gloo) configured by keras.distribution's variables."""
    import json
    import os

    import mlflow
    import yaml

    from ganlab.data.arrays import save_scaled

    from .scratch import free_port

    data = tmp_path / "data"
    data.mkdir()
    save_scaled(np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8), data / "train_x.npy")
    np.save(data / "train_y.npy", np.arange(64, dtype=np.uint8) % 10)
    (data / "data.json").write_text(json.dumps({"data_hash": "h", "counts": {"train": 64}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {
        "strategy": "multi_worker", "iterations": 10, "sample_interval": 5, "checkpoint_interval": 5,
        "batch_size": 16, "width": 0.25, "steps_per_execution": 5, "backend": backend, "ema": 0.9}}))
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    if backend == "tensorflow":  # TensorFlow keeps G's EMA on one device only
        params = yaml.safe_load((tmp_path / "params.yaml").read_text())
        params["train"]["ema"] = 0  # off
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    store = f"sqlite:///{tmp_path}/mlflow.db"
    procs = []
    for index in (0, 1):
        cwd = tmp_path / f"w{index}"  # each worker in its own folder, as on two machines
        cwd.mkdir()
        env = {**os.environ, "MLFLOW_TRACKING_URI": store}
        env.pop("KERAS_BACKEND", None)  # params.yaml chooses
        if backend == "tensorflow":
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        else:
            env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=",".join(cluster["worker"]),
                       KERAS_DISTRIBUTION_NUM_PROCESSES="2", KERAS_DISTRIBUTION_PROCESS_ID=str(index))
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "pipeline/train.py"), "--params", str(tmp_path / "params.yaml"),
             "--data", str(data), "--out", "out",
             "--checkpoints", "ckpt", "--metrics", "train.json", "--plots", "plots"],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    digests = [out.split("weights digest ")[-1].strip() for out, _ in outs]
    assert len(digests[0]) == 16 and digests[0] == digests[1], "the workers' weights differ"

    chief, worker = tmp_path / "w0", tmp_path / "w1"
    assert json.loads((chief / "train.json").read_text())["iterations"] == 10
    assert (chief / "out/generator.keras").exists()
    assert not (chief / "ckpt").exists(), "a finished run left its checkpoint to be resumed"
    assert list(worker.rglob("*")) == [], "a non-chief worker wrote outputs"
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(search_all_experiments=True)
    want = "MultiWorkerMirroredStrategy" if backend == "tensorflow" else "DataParallel"
    assert len(runs) == 1 and runs["tags.strategy"][0] == want and runs["tags.backend"][0] == backend
    assert runs["tags.replicas"][0] == "2" and runs["tags.workers"][0] == "2"
