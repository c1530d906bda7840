"""End to end: the real `dvc repro` on tiny params, in a scratch copy of the repo, tracked in MLflow."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml

from .scratch import ROOT, own_cache, sh, start_train, wait_for

# `make test` runs on parallel workers: one worker runs these and test_serving.py, which share the
# test run's `project` and `repro`, so those are built once.
pytestmark = pytest.mark.xdist_group("project")


def test_dag_order(project):
    dest, env = project
    dag = sh(["dvc", "dag", "--dot"], dest, env).stdout
    edges = set(re.findall(r'"(\w+)" -> "(\w+)"', dag))
    for edge in (("validate", "prepare"), ("prepare", "train"), ("train", "evaluate"), ("classifier", "evaluate"),
                 ("evaluate", "report")):
        assert edge in edges, dag


def test_repro_writes_every_output_and_is_idempotent(project, repro):
    dest, env = project
    assert "report:" in repro.stdout and "make ui" in repro.stdout
    for rel in ("metrics/prepare.json", "metrics/train.json", "metrics/evaluate.json", "metrics/classifier.json",
                "outputs/train/generator.keras", "outputs/train/samples/iter_000040.png", "plots/train/history.csv",
                "outputs/evaluate/grid_10x10.png", "plots/evaluate/confusion.csv", "reports/report.md"):
        assert (dest / rel).exists(), rel
    # The loss curve has a point every 10 iterations (40 in all, whole calls of 10), not one per interval of 20.
    fine = (dest / "plots/train/losses.csv").read_text().splitlines()
    assert fine[0] == "iteration,d_loss,g_loss,d_acc"
    assert [r.split(",")[0] for r in fine[1:]] == ["10", "20", "30", "40"]
    # Real data scores better than the generator, and the generator better than noise, on every metric.
    m = yaml.safe_load((dest / "metrics/evaluate.json").read_text())
    real, gen, noise = m["reference"], m["quality"], m["noise"]
    # Only 40 iterations and a 1-epoch classifier here: real data must still beat both others.
    assert real["frechet_distance"] < min(gen["frechet_distance"], noise["frechet_distance"])
    assert real["classifier_score"] > noise["classifier_score"] and real["recall"] > noise["recall"]
    # The train stage (mlp on JAX) kept its compiled programs, short ones too, for the next run.
    kept = list((Path(env["XDG_CACHE_HOME"]) / "ganlab" / "jax").glob("*/*-cache"))
    assert len(kept) >= 20, kept
    again = sh(["dvc", "repro"], dest, env)
    assert "Data and pipelines are up to date" in again.stdout + again.stderr
    shown = sh(["dvc", "metrics", "show"], dest, env).stdout
    assert "quality.frechet_distance" in shown and "iterations_per_s" in shown


def test_rerunning_prepare_leaves_train_up_to_date(project, repro):
    dest, env = project
    # The README's advice for a damaged array; the source becomes `cache`, the data stays the same.
    sh(["dvc", "repro", "-f", "prepare"], dest, env)
    status = sh(["dvc", "status"], dest, env).stdout
    for stage in ("train", "classifier", "evaluate"):
        assert f"{stage}:" not in status, status


def test_a_bad_param_is_refused_before_any_output_is_deleted(project, repro):
    dest, env = project
    good = (dest / "params.yaml").read_text()
    before = {p: p.read_bytes() for p in (dest / "metrics/train.json", dest / "plots/train/history.csv")}
    params = yaml.safe_load(good)
    params["train"]["modle"] = "dcgan"
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        bad = subprocess.run(["dvc", "repro"], cwd=dest, env=env, capture_output=True, text=True)
    finally:
        (dest / "params.yaml").write_text(good)
    assert bad.returncode != 0
    assert "validate: error: params.yaml: unknown key train.modle; did you mean train.model?" in bad.stderr
    assert {p: p.read_bytes() for p in before} == before and (dest / "outputs/train/generator.keras").exists()


def test_report_html_is_self_contained_and_images_decode(project, repro):
    dest, _ = project
    page = (dest / "reports" / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) >= 6
    for data in images:
        picture = plt.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert picture.size > 0
    assert "src='http" not in page and "Runs in this experiment" in page


def test_mlflow_run_has_everything(project, repro):
    import mlflow
    from mlflow.tracking import MlflowClient

    dest, env = project
    mlflow.set_tracking_uri(f"sqlite:///{dest / 'mlflow.db'}")
    run_id = yaml.safe_load((dest / "outputs/train/mlflow_run.json").read_text())["run_id"]
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.model"] == "mlp" and run.data.params["train.resolved.batch_size"] == "128"
    assert {"git_commit", "git_dirty", "data_hash", "model", "device"} <= set(run.data.tags)
    # A fresh clone's run: what DVC and the stages wrote (dvc.lock, metrics/) is not a change of the code.
    assert run.data.tags["git_dirty"] == "false", run.data.tags.get("git_changed")
    # auto on a CPU: JAX for the book's MLP; what was resolved is logged beside the raw value.
    assert run.data.params["train.backend"] == "auto" and run.data.params["train.resolved.backend"] == "jax"
    assert run.data.tags["backend"] == "jax" and run.data.tags["deterministic"] == "True"
    history = client.get_metric_history(run_id, "g_loss")
    assert [m.step for m in history] == [20, 40]
    assert [m.step for m in client.get_metric_history(run_id, "fine_g_loss")] == [10, 20, 30, 40]
    assert "eval_quality.frechet_distance" in run.data.metrics and "train_iterations_per_s" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run_id)}
    assert {"images", "plots", "evaluate", "report"} <= arts
    # Sample grids are keyed images, one per interval with its iteration as the step (the UI's slider),
    # and G's before its first step at step 0, where the UI's image card opens.
    images = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    steps = sorted(int(re.search(r"samples\+step\+(\d+)\+", p).group(1)) for p in images)
    assert steps == [0, 20, 40], images
    # auto resolved to JAX; the start time tells a re-run from the first
    assert re.fullmatch(r"mlp-40it-two_step-seed42-jax \d\d-\d\d \d\d:\d\d", run.info.run_name), run.info.run_name
    assert yaml.safe_load((dest / "metrics/train.json").read_text())["mlflow_run_id"] == run_id
    models = {m.name for m in mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                          output_format="list")}
    assert {"generator", "discriminator"} <= models
    generator = mlflow.keras.load_model(f"runs:/{run_id}/generator")
    import numpy as np
    assert generator.predict(np.zeros((2, 100), np.float32), verbose=0).shape == (2, 28, 28, 1)
    version = client.get_model_version_by_alias("ganlab-generator", "champion")
    assert version.run_id == run_id


def test_the_repair_a_damaged_output_names_works_as_written(project, repro):
    dest, env = project
    model = dest / "outputs/train/generator.keras"
    good = model.read_bytes()
    model.write_bytes(b"not a model" * 300)
    cmd = yaml.safe_load((dest / "dvc.yaml").read_text())["stages"]["evaluate"]["cmd"]
    out = sh(["sh", "-c", cmd], dest, env, check=False)  # as DVC runs it: through the shell
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0 and "outputs/train/generator.keras cannot be loaded" in last, out.stderr[-2000:]
    repair = re.search(r"restore it with `([^`]+)`", last).group(1)
    sh(repair.split(), dest, env)
    assert model.read_bytes() == good


def test_deleted_outputs_are_restored_from_the_run_cache_not_retrained(project, repro):
    dest, env = project
    good = (dest / "outputs/train/generator.keras").read_bytes()
    shutil.rmtree(dest / "outputs/train")
    out = sh(["dvc", "repro"], dest, env)
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out.stdout, out.stdout[-3000:]
    assert "Running stage 'train'" not in out.stdout
    assert (dest / "outputs/train/generator.keras").read_bytes() == good


def test_sample_cli_draws_from_registered_champion(project, repro, tmp_path):
    dest, env = project
    out = tmp_path / "grid.png"
    sh([sys.executable, "-m", "ganlab.tools.sample", "--model", "models:/ganlab-generator@champion", "--n", "16",
        "--out", str(out)], dest, env)
    assert plt.imread(out).shape[0] > 28


def test_push_then_pull_gives_a_second_clone_the_results_without_training(project, repro, tmp_path):
    dest, env = project
    remote = tmp_path / "remote"  # a local folder; S3 or GCS is the same commands with another URL
    sh(["dvc", "remote", "add", "-d", "store", str(remote)], dest, env)
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "commit", "-qm", "results"], dest, env)
    sh(["dvc", "push"], dest, env)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(dest), str(clone)], tmp_path, env)
    env = own_cache(env, tmp_path / "dvc-global")
    sh(["dvc", "pull"], clone, env)
    for rel in ("data/prepared/train_x.npy", "outputs/train/generator.keras", "outputs/evaluate/grid_10x10.png",
                "reports/report.html"):
        assert (clone / rel).read_bytes() == (dest / rel).read_bytes(), rel
    again = sh(["dvc", "repro"], clone, env)
    assert "Data and pipelines are up to date" in again.stdout + again.stderr and "Running stage" not in again.stdout


def test_bad_params_fail_before_work_with_one_line(project):
    dest, env = project
    bad = dest / "bad.yaml"
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"]["modle"] = "mlp"
    bad.write_text(yaml.safe_dump(params))
    out = sh([sys.executable, "pipeline/train.py", "--params", str(bad), "--data", "x",
              "--out", "x", "--checkpoints", "x", "--metrics", "x", "--plots", "x"], dest, env, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "train: error: params.yaml: unknown key train.modle; did you mean train.model?")
    assert "Traceback" not in out.stderr


def test_sigterm_saves_checkpoint_marks_run_killed_and_resume_finishes(project, repro):
    import json
    import signal

    import mlflow
    from mlflow.tracking import MlflowClient

    dest, env = project
    # On TensorFlow: a JAX run handles SIGTERM late (docs/design.md, checkpoints); Ctrl-C is prompt on both.
    proc, cmd = start_train(dest, env, "sig", iterations=3000, sample_interval=20, checkpoint_interval=20,
                            steps_per_execution=10, backend="tensorflow")
    state = dest / "sig/ckpt/state.json"
    wait_for(state, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("train: error: interrupted; the last checkpoint is kept")
    stopped_at = json.loads(state.read_text())["iteration"]
    assert 0 < stopped_at < 3000
    assert not (dest / "sig/out/generator.keras").exists()  # nothing half-done for evaluate to trust
    mlflow.set_tracking_uri(f"sqlite:///{dest / 'mlflow.db'}")
    run_id = json.loads((dest / "sig/out/mlflow_run.json").read_text())["run_id"]
    assert MlflowClient().get_run(run_id).info.status == "KILLED"

    params = yaml.safe_load((dest / "sig.yaml").read_text())
    params["train"]["iterations"] = stopped_at + 40 - stopped_at % 20  # keep the resumed part short
    (dest / "sig.yaml").write_text(yaml.safe_dump(params))
    sh(cmd, dest, env)
    done = json.loads((dest / "sig/train.json").read_text())
    assert done["resumed"] and done["iterations"] == params["train"]["iterations"]
    run = MlflowClient().get_run(json.loads((dest / "sig/out/mlflow_run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags.get("resumed") == "true"
    assert not state.exists(), "a finished run left a checkpoint that the next re-run would 'resume'"


def test_dvc_repro_killed_then_run_again_resumes_with_every_grid(project, repro):
    import json
    import os
    import signal

    dest, env = project
    params = yaml.safe_load((dest / "params.yaml").read_text())
    # Long enough not to finish first. On TensorFlow: a JAX run acts on signals late (docs/design.md).
    params["train"].update(iterations=200_000, sample_interval=20, checkpoint_interval=20, backend="tensorflow")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    first = subprocess.Popen(["dvc", "repro", "train"], cwd=dest, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    state = dest / "checkpoints/train/state.json"
    wait_for(state, first)
    # A scheduler stops the stage's process with SIGTERM; dvc sees the stage fail and lets go of its lock.
    for pid in descendants(first.pid):
        if "pipeline/train.py" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore"):
            os.kill(pid, signal.SIGTERM)
    first.wait(timeout=120)
    stopped_at = json.loads(state.read_text())["iteration"]
    assert 0 < stopped_at < 200_000
    params["train"]["iterations"] = stopped_at - stopped_at % 20 + 40
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["dvc", "repro", "train"], dest, env)
    done = json.loads((dest / "metrics/train.json").read_text())
    assert done["resumed"] and done["iterations"] == params["train"]["iterations"]
    grids = sorted(int(p.stem[5:]) for p in (dest / "outputs/train/samples").glob("iter_*.png"))
    assert grids == list(range(0, params["train"]["iterations"] + 1, 20)), grids


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def test_second_repro_at_once_is_refused_and_first_is_unharmed(project, repro):
    import json
    import time

    dest, env = project
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"].update(iterations=1500, sample_interval=500, checkpoint_interval=500)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = (dest / "first.log").open("w")
    first = subprocess.Popen(["dvc", "repro", "train"], cwd=dest, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while "Running stage 'train'" not in (dest / "first.log").read_text() and time.time() < deadline:
        time.sleep(0.2)
    second = sh(["dvc", "repro"], dest, env, check=False)
    # DVC locks the paths of a running stage: the second run stops at once and names the blocker.
    assert second.returncode != 0 and "is busy, it is being blocked by" in second.stderr, second.stderr
    assert first.wait(timeout=300) == 0, (dest / "first.log").read_text()[-3000:]
    assert json.loads((dest / "metrics/train.json").read_text())["iterations"] == 1500
    assert "up to date" in sh(["dvc", "status", "train"], dest, env).stdout


@pytest.mark.parametrize("made_in, kept", [("elsewhere", False), ("here", True)])
def test_make_rebuilds_a_venv_made_in_another_folder(tmp_path, made_in, kept):
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    where = tmp_path / ".venv" if made_in == "here" else "/some/other/project/.venv"
    (venv / "activate").write_text(f'VIRTUAL_ENV="{where}"\n')
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    out = subprocess.run(["make", "help"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert (venv / "activate").exists() == kept
    assert ("made in another folder" in out.stdout + out.stderr) != kept


def test_plots_page_works_offline(project, repro, tmp_path):
    """`dvc plots show` with the page `make setup` made: Vega inline, nothing loaded from a CDN."""
    from ganlab.tools import plotspage

    template = ROOT / ".dvc/plots/offline.html"
    if shutil.which("npm") is None and not template.exists():
        pytest.skip("npm is not installed here, so make setup could not build the offline page")
    assert template.exists(), "make setup did not build .dvc/plots/offline.html"
    dest, env = project
    sh(["dvc", "plots", "show", "--html-template", str(template), "-o", str(tmp_path / "plots")], dest, env)
    page = (tmp_path / "plots/index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "the page loads a script from elsewhere"
    assert "https://cdn.jsdelivr.net" not in page
    for name in plotspage.PACKAGES:
        assert f"/* {name} */" in page
    # Three top-level plots (loss at its finer step, accuracy, quality over training) and the confusion matrix; no
    # default chart of every history column.
    assert len(re.findall(r"vegaEmbed\('#", page)) == 4, re.findall(r"vegaEmbed\('#\w+", page)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:  # Debian's `chromium`, where installed: the charts really draw, with no network at all
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "plots/index.html").as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        assert dom.count('class="marks"') == 4, "Vega drew fewer than the four charts"
