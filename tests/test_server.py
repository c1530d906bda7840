"""A real tracking server: `make server` on a free loopback port, the pipeline against it, and outages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .scratch import answers, free_port, make_project, make_server, sh, start_train, wait_for

# `make test` runs on parallel workers: one worker runs all of these, so this module's server and
# repro are built once.
pytestmark = pytest.mark.xdist_group("served")

PASSWORD, TOKEN = "pw-s3cret-9f2", "tok-s3cret-77a"


class Server:
    """`make server` in the project folder (SQLite store, served artifacts), started and stopped."""

    def __init__(self, project: Path, env: dict, port: int):
        self.project, self.env, self.port = project, env, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            make_server(self.port), cwd=self.project, env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not answers(f"http://127.0.0.1:{self.port}/health", self.proc, 90):
            raise AssertionError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server vanishes, as on a crash
            self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    dest = tmp_path_factory.mktemp("served")
    port = free_port()
    # A password in the URI and a token in the environment: neither may leak anywhere.
    env = make_project(dest, f"http://alice:{PASSWORD}@127.0.0.1:{port}", MLFLOW_TRACKING_TOKEN=TOKEN)
    server = Server(dest, env, port)
    server.start()
    yield dest, env, server
    server.stop()


@pytest.fixture(scope="module")
def repro(served):
    dest, env, _ = served
    return sh(["dvc", "repro"], dest, env)


def client_for(env: dict):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return mlflow, MlflowClient()


def test_make_server_stores_in_project_folders(served, repro):
    dest, _, _ = served
    assert (dest / "mlflow.db").exists()
    assert any((dest / "mlartifacts").rglob("report.html")), "artifacts are served from the project's folder"


def group_commands(leader: int) -> list[str]:
    """The command lines of the processes whose SID is `leader`: the server and all it started."""
    commands = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getsid(int(proc.name)) == leader:
                commands.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # ProcessLookupError: ended meanwhile
            continue
    return commands


def test_make_server_runs_no_job_consumers(served):
    """MLflow's server jobs are off unless asked for: no huey consumer beside the server's workers."""
    _, _, server = served
    commands = group_commands(server.proc.pid)
    assert any("mlflow" in c and "server" in c for c in commands), commands
    assert not [c for c in commands if "huey" in c], commands


def test_pipeline_against_server_logs_everything(served, repro, tmp_path):
    dest, env, _ = served
    mlflow, client = client_for(env)
    info = json.loads((dest / "outputs/train/mlflow_run.json").read_text())
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.iterations"] == "40" and run.data.params["train.model"] == "mlp"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "d_acc_real")] == [20, 40]
    assert "eval_quality.frechet_distance" in run.data.metrics
    assert image_steps(client, run.info.run_id) == [0, 20, 40]  # G before its first step, then each interval
    for folder, name in (("plots", "loss.png"), ("evaluate", "grid_10x10.png"), ("report", "report.html")):
        assert f"{folder}/{name}" in {a.path for a in client.list_artifacts(run.info.run_id, folder)}
    page = Path(client.download_artifacts(run.info.run_id, "report/report.md", str(tmp_path))).read_text()
    assert run.info.run_id in page
    models = {m.name: m for m in mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                             output_format="list")}
    assert {"generator", "discriminator"} <= set(models)
    generator = mlflow.keras.load_model(info["generator_uri"])
    images = generator.predict(np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32), verbose=0)
    assert images.shape == (3, 28, 28, 1) and np.abs(images).max() <= 1.0
    assert client.get_model_version_by_alias("ganlab-generator", "champion").run_id == run.info.run_id


def test_no_secret_reaches_params_tags_logs_or_report(served, repro, tmp_path):
    dest, env, _ = served
    _, client = client_for(env)
    run = client.get_run(json.loads((dest / "outputs/train/mlflow_run.json").read_text())["run_id"])
    logged = json.dumps([run.data.params, run.data.tags, run.info.artifact_uri])
    texts = [logged, repro.stdout, repro.stderr]
    for rel in ("reports", "outputs", "metrics"):
        texts += [p.read_text(errors="ignore") for p in (dest / rel).rglob("*")
                  if p.suffix in (".md", ".html", ".json")]
    report = client.download_artifacts(run.info.run_id, "report", str(tmp_path))
    texts += [p.read_text() for p in Path(report).iterdir()]
    assert len(texts) > 8
    for text in texts:
        assert PASSWORD not in text and TOKEN not in text
    assert "alice:***@" in (dest / "outputs/train/mlflow_run.json").read_text()


def image_steps(client, run_id: str) -> list[int]:
    """The steps of the run's keyed sample images (MLflow names them samples+step+N+...)."""
    paths = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    return sorted(int(re.search(r"samples\+step\+(\d+)\+", p).group(1)) for p in paths)


def test_server_lost_mid_run_keeps_everything_and_resend_uploads_it(served, repro):
    dest, env, server = served
    # Ten intervals: the first goes live, the other nine meet the lost server (each one's retries cost time).
    proc, _ = start_train(dest, env, "lost", iterations=1000, sample_interval=100, checkpoint_interval=500)
    wait_for(dest / "lost/out/samples/iter_000100.png", proc)
    server.stop()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    # Training finished and everything is kept locally.
    assert json.loads((dest / "lost/train.json").read_text())["iterations"] == 1000
    assert (dest / "lost/out/generator.keras").exists() and (dest / "lost/out/discriminator.keras").exists()
    run_id = json.loads((dest / "lost/out/mlflow_run.json").read_text())["run_id"]
    pending = dest / "mlflow-pending" / f"train-{run_id}.json"
    ops = json.loads(pending.read_text())["pending"]
    assert {"metrics", "artifact", "model", "status"} <= {op["op"] for op in ops}
    assert "make resend" in err and str(pending) in err
    assert PASSWORD not in err + out and TOKEN not in err + out

    server.start()
    sent = sh([sys.executable, "-m", "ganlab.tools.resend"], dest, env)
    assert "1 of 1 queued files sent" in sent.stdout and not pending.exists()
    _, client = client_for(env)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # Each interval exactly once: the live part before the outage, then the resent rest.
    steps = [m.step for m in client.get_metric_history(run_id, "g_loss")]
    assert sorted(steps) == list(range(100, 1001, 100))
    assert run.data.metrics["train_iterations"] == 1000
    assert image_steps(client, run_id) == list(range(0, 1001, 100))
    import mlflow

    names = {m.name for m in mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list")}
    assert names == {"generator", "discriminator", "generator_service"}  # the served pyfunc is replayed too
