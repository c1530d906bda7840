"""DVC's queue: a grid of experiments, two at a time, each with its own MLflow run and report."""

from __future__ import annotations

import re
import sys

import matplotlib.pyplot as plt
import pytest

from .scratch import make_project, sh

# A project of its own, so that this long test runs on another worker than test_pipeline.py's; the
# queued experiments run the whole pipeline themselves.
pytestmark = [pytest.mark.xdist_group("sweep"), pytest.mark.slow]


@pytest.fixture(scope="module")
def sweep_project(tmp_path_factory):
    dest = tmp_path_factory.mktemp("sweep")
    return dest, make_project(dest)


def experiments_ended(dest, env: dict, n: int) -> bool:
    """`n` experiments committed (refs/exps/<baseline>/<name>), or one failed (refs/exps/celery/failed)."""
    out = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], dest, env).stdout
    refs = [ref.split("/") for ref in out.split()]
    done = [r for r in refs if len(r) == 5 and len(r[2]) == 2]  # the baseline's first two hex digits
    return len(done) >= n or ["refs", "exps", "celery", "failed"] in refs


def test_queued_grid_runs_two_at_a_time_each_with_its_own_mlflow_run(sweep_project):
    import time

    import mlflow

    dest, env = sweep_project
    # Two models through DVC's own queue, one on each backend; the (conditional) DCGAN costs seconds per
    # iteration on 2 CPU cores (on TensorFlow: JAX's CPU convolutions are slower still).
    # A quarter of each layer's width: the queue's work is the point here, not the models'.
    common = ["-S", "train.experiment=sweep", "-S", "train.iterations=4", "-S", "train.batch_size=32",
              "-S", "train.sample_interval=2", "-S", "train.checkpoint_interval=2", "-S", "train.width=0.25"]
    # The stages the grid does not vary, once: both experiments then restore them from DVC's run-cache
    # instead of training the same classifier side by side.
    sh(["dvc", "repro", "classifier"], dest, env)
    sh(["dvc", "exp", "run", "--queue", "-S", "train.model=cdcgan", *common], dest, env)
    sh(["dvc", "exp", "run", "--queue", "-S", "train.model=mlp_bn", "-S", "train.backend=jax", *common], dest, env)
    assert sh(["dvc", "queue", "status"], dest, env).stdout.count("Queued") == 2
    sh(["dvc", "queue", "start", "-j", "2"], dest, env)
    deadline = time.time() + 600
    # Wait on Git's refs, where each experiment lands (or the failed queue): a `dvc queue status` costs
    # about 1 s of CPU, taken from the two experiments running beside it. Then ask DVC how they ended.
    while time.time() < deadline and not experiments_ended(dest, env, 2):
        time.sleep(2)
    while True:  # at least once, so that a queue that never landed anything still shows its state
        status = sh(["dvc", "queue", "status"], dest, env).stdout
        if ("Queued" not in status and "Running" not in status) or time.time() > deadline:
            break
        time.sleep(1)
    assert status.count("Success") == 2, status + sh(["dvc", "queue", "logs", "--help"], dest, env).stdout
    table = sh(["dvc", "exp", "show", "--csv"], dest, env).stdout
    assert "cdcgan" in table and "mlp_bn" in table and "quality.frechet_distance" in table
    assert "label_agreement.overall" in table  # the conditional model's own score

    mlflow.set_tracking_uri(f"sqlite:///{dest / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["sweep"])
    assert sorted(runs["params.train.model"]) == ["cdcgan", "mlp_bn"] and set(runs["status"]) == {"FINISHED"}
    # The JAX run trained on JAX, and was evaluated, reported and logged like the other.
    assert dict(zip(runs["params.train.model"], runs["tags.backend"])) == {"cdcgan": "tensorflow", "mlp_bn": "jax"}
    # Deterministic on both (null: on for a CPU): on TensorFlow, set before the stage's runtime started.
    assert set(runs["tags.deterministic"]) == {"True"}
    assert "jax" in table and "tensorflow" in table
    # Each MLflow run names its DVC experiment (tag and run name), and each experiment its MLflow run.
    assert runs["tags.dvc_experiment"].notna().all() and runs["tags.dvc_baseline_rev"].notna().all()
    named = zip(runs["tags.mlflow.runName"], runs["tags.dvc_experiment"])
    assert all(name.startswith(f"{exp} (") for name, exp in named)
    assert set(runs["run_id"]) <= set(re.findall(r"[0-9a-f]{32}", table)), "dvc exp show lacks mlflow_run_id"
    assert runs["metrics.eval_quality.frechet_distance"].notna().all()
    # The experiment was created inside DVC's temporary workspace, which is gone: the store and the
    # artifacts are still the project's.
    for run_id, uri in runs[["run_id", "artifact_uri"]].itertuples(index=False):
        assert uri.startswith((dest / "mlruns").as_uri()), uri
        assert mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="report")
    # Two workers: the two runs overlapped in time.
    (s1, e1), (s2, e2) = runs[["start_time", "end_time"]].itertuples(index=False)
    assert s1 < e2 and s2 < e1, runs[["start_time", "end_time"]]
    cmp = sh([sys.executable, "-m", "ganlab.tools.compare", "--experiment", "sweep",
              "--out", str(dest / "compare.png")], dest, env).stdout
    assert "cdcgan" in cmp and "mlp_bn" in cmp and (dest / "compare.png").exists()

    # The conditional G is registered apart (its own champion), and draws the digit it is asked for.
    conditional = "models:/ganlab-generator-conditional@champion"
    sh([sys.executable, "-m", "ganlab.tools.sample", "--model", conditional, "--digit", "all", "--out", "all.png"],
       dest, env)
    grid = plt.imread(dest / "all.png")
    assert grid.shape[0] == grid.shape[1] >= 280, grid.shape  # 10 x 10 digits
    # Without --model, --digit draws from the conditional champion.
    sh([sys.executable, "-m", "ganlab.tools.sample", "--digit", "7", "--n", "4", "--npy", "7.npy"], dest, env)
    import numpy as np
    assert np.load(dest / "7.npy").shape == (4, 28, 28, 1)
    for bad, says in (([conditional, "--digit", "12"], "--digit 12 is not a digit"),
                      (["models:/ganlab-generator@champion", "--digit", "3"], "is not conditional")):
        out = sh([sys.executable, "-m", "ganlab.tools.sample", "--model", *bad], dest, env, check=False)
        assert out.returncode != 0 and says in out.stderr.strip().splitlines()[-1], out.stderr[-1000:]
