"""MLflow plumbing: secrets stay out, a down server is one line, failures never cost a model."""

import json
import os
import socket
from pathlib import Path

import pytest

from ganlab.core.files import StageError
from ganlab.tools.resend import resend
from ganlab.tracking import store as tracking
from ganlab.tracking.runlog import RunLog, execute
from ganlab.tracking.store import check_server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redact_hides_password():
    uri = "postgresql://alice:s3cret@db:5432/mlflow"
    assert "s3cret" not in tracking.redact(uri) and "alice:***@db" in tracking.redact(uri)
    assert tracking.redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_env_overrides_default_store(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri().startswith("sqlite:///") and tracking.tracking_uri().endswith("mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path}/x.db"


def test_down_server_is_one_clear_line():
    uri = f"http://user:pw@127.0.0.1:{closed_port()}"
    with pytest.raises(StageError) as err:
        check_server(uri)
    msg = str(err.value)
    assert "unreachable" in msg and "\n" not in msg and ":pw@" not in msg


def test_outage_queues_writes_and_resend_replays_them(monkeypatch, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path}/store.db"
    mlflow.set_tracking_uri(store)
    run_id = MlflowClient().create_run(mlflow.set_experiment("t").experiment_id).info.run_id
    picture = tmp_path / "grid.png"
    picture.write_bytes(b"png")

    # The store goes away: nothing raises, every write is queued, and only the first one waits on the network.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(tracking.tracking_uri())
    run = RunLog(run_id)
    run.log_params({"train.seed": "1"})
    assert run.offline
    for step in (10, 20):
        run.log_metrics({"g_loss": step / 10, "note": "text is not a metric"}, step)
    run.log_artifact(picture, "samples")
    run.end("FINISHED")
    pending = run.save_pending("train", tmp_path / "pending")
    assert [op["op"] for op in json.loads(pending.read_text())["pending"]] == [
        "params", "metrics", "metrics", "artifact", "status"]

    # Still down: resend keeps the file.
    assert resend(pending) == 5 and pending.exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert resend(pending) == 0 and not pending.exists()
    client = MlflowClient(store)
    logged = client.get_run(run_id)
    assert logged.data.params == {"train.seed": "1"} and logged.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "g_loss")] == [(10, 1.0), (20, 2.0)]
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/grid.png"]


def test_a_write_replayed_after_a_lost_reply_is_not_doubled(monkeypatch, tmp_path):
    """The server can take a write and go before it replies; the queued copy is then replayed."""
    import matplotlib.pyplot as plt
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path}/store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    run_id = MlflowClient().create_run(mlflow.set_experiment("t").experiment_id).info.run_id
    plt.imsave(tmp_path / "grid.png", np.linspace(0, 1, 64).reshape(8, 8), cmap="gray")
    run = RunLog(run_id)
    submitted: list[dict] = []
    monkeypatch.setattr(run, "pending", submitted)
    monkeypatch.setattr(run, "offline", True)  # record the operations as the live stage builds them
    run.log_metrics({"g_loss": 0.5}, 100)
    run.log_image(tmp_path / "grid.png", "samples", 100)
    from ganlab.nets import models
    from ganlab.nets.saving import save_model

    generator, _ = models.build("mlp", 4, width=0.05)
    save_model(generator, tmp_path / "generator.keras")
    # MLflow infers a model's requirements by loading it in a subprocess (seconds); they are listed instead.
    inferred = []
    monkeypatch.setattr("mlflow.utils.requirements_utils._capture_imported_modules",
                        lambda *a, **k: inferred.append(a) or [])
    run.log_model(generator, "generator", tmp_path / "generator.keras")
    for op in submitted * 2:  # landed once live, then once more from the queue
        execute(run_id, op)

    client = MlflowClient(store)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "g_loss")] == [(100, 0.5)]
    images = [a.path.removeprefix("images/") for a in client.list_artifacts(run_id, "images")]
    (png,) = [name for name in images if name.endswith(".png")]
    assert png.startswith("samples+step+100+timestamp+")
    assert sorted(images) == sorted([png, png.replace(".png", "+compressed.webp")])  # the UI's thumbnail
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"
    logged = mlflow.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id],
                                         output_format="list")
    assert [m.name for m in logged] == ["generator"]
    assert not inferred
    listed = mlflow.artifacts.download_artifacts(f"{logged[0].artifact_location}/requirements.txt")
    requirements = Path(listed).read_text()
    assert {line.split("==")[0] for line in requirements.split()} >= {"mlflow", "keras", "numpy"}


def test_nothing_pending_leaves_no_file(tmp_path):
    run = RunLog("0" * 32)
    assert run.save_pending("evaluate", tmp_path) is None and not list(tmp_path.iterdir())


def test_flatten_metrics():
    from ganlab.core.config import flatten

    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_advice_points_at_the_tracking_server_when_there_is_one(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pw-x@127.0.0.1:5555")
    advice = tracking.ui_advice("7")
    assert advice == "open http://127.0.0.1:5555/#/experiments/7?workflowType=machine_learning"
    assert tracking.ui_link("7", "abc").startswith("http://127.0.0.1:5555/#/experiments/7/runs/abc?")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    want = f"run `make ui`, then open {tracking.UI}/#/experiments/7?workflowType=machine_learning"
    assert tracking.ui_advice("7") == want


@pytest.mark.slow
def test_make_ui_with_a_server_uri_names_the_server_and_starts_nothing(monkeypatch):
    import subprocess

    from .scratch import ROOT, make_in

    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"}
    out = subprocess.run(make_in("ui"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "MLflow: open http://127.0.0.1:5999" in out.stdout and "serves the UI itself" in out.stdout
    assert "make ui" not in out.stdout


def test_a_model_is_registered_once_and_crowned_only_against_figures_measured_alike(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ganlab.tracking import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    tracking.setup("reg")

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run():
        a, b, c, d = (mlflow.pyfunc.log_model(name=n, python_model=Echo()).model_uri for n in "abcd")
    first = registry.register_and_crown(a, "g", 10.0, "m1")
    assert first["champion"] and first["new"]
    again = registry.register_and_crown(a, "g", 10.0, "m1")  # a re-run of report, or a replay
    assert again["version"] == first["version"] and not again["new"] and again["champion"]
    assert len(MlflowClient().search_model_versions("name='g'")) == 1
    worse = registry.register_and_crown(b, "g", 12.0, "m1")
    assert not worse["champion"] and "does not beat" in worse["why"]
    elsewhere = registry.register_and_crown(c, "g", 1.0, "m2")  # better, but scored by another classifier
    assert not elsewhere["champion"] and "measured another way" in elsewhere["why"]
    better = registry.register_and_crown(d, "g", 9.0, "m1")
    assert better["champion"] and "beats" in better["why"]
    assert MlflowClient().get_model_version_by_alias("g", "champion").version == better["version"]
    # A champion with no record of how it was measured cannot be compared: a measured version replaces it.
    MlflowClient().delete_model_version_tag("g", better["version"], registry.MEASURE_TAG)
    retaken = registry.register_and_crown(c, "g", 5.0, "m3")
    assert retaken["champion"] and "no record" in retaken["why"]


def test_a_store_copied_from_another_folder_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import shutil

    original, copy = tmp_path / "project", tmp_path / "project-copy"
    original.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(original))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{original}/mlflow.db")
    tracking.setup("ganlab")
    tracking.check_store("ganlab")  # its own store: fine
    shutil.copytree(original, copy)  # cp -a project project-copy
    monkeypatch.setenv("DVC_ROOT", str(copy))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy}/mlflow.db")
    with pytest.raises(StageError) as err:
        tracking.check_store("ganlab")
    assert "copied from another folder" in str(err.value) and str(original) in str(err.value)
    assert "\n" not in str(err.value)
    tracking.check_store("another-name")  # a new experiment gets this folder's own location


def test_a_resumed_run_takes_the_name_and_experiment_of_the_attempt_that_finishes(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ganlab.tracking.callback import TrainTracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    device = {"device": "cpu", "precision": "float32"}
    first = TrainTracking("t", "exp-a (mlp)", {"train.seed": "1"}, {"dvc_experiment": "exp-a"}, tmp_path / "a.json")
    state = first.on_run_start({"device": device})
    first.stopped(KeyboardInterrupt())
    again = TrainTracking("t", "exp-b (mlp)", {"train.seed": "1"}, {"dvc_experiment": "exp-b"}, tmp_path / "b.json")
    again.on_run_start({**state, "resumed_at": [20]})
    assert again.run.run_id == first.run.run_id  # the same run goes on
    tags = MlflowClient().get_run(first.run.run_id).data.tags
    assert tags["mlflow.runName"] == "exp-b (mlp)" and tags["dvc_experiment"] == "exp-b"
    assert tags["resumed"] == "true" and tags["resumed_at"] == "20"


def test_git_info_names_changed_files_whole_and_leaves_out_what_the_pipeline_writes(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})

    git("init", "-q")
    for rel in ("src.py", "dvc.lock", "metrics/train.json"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("a")
    git("add", "-A")
    git("commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text("b")
    (tmp_path / "metrics/train.json").write_text("b")
    assert tracking.git_info()["git_dirty"] == "false"
    (tmp_path / "src.py").write_text("b")
    info = tracking.git_info()
    assert info["git_dirty"] == "true" and info["git_changed"] == "src.py"


def test_a_run_is_named_by_model_length_schedule_seed_backend_and_its_dvc_experiment():
    from ganlab.core.config import Params, TrainConfig, parse_params
    from ganlab.nets.specs import resolve
    from ganlab.tracking.naming import logged_params, run_name

    cfg = resolve(TrainConfig(model="dcgan", seed=7), "jax")
    name = run_name(cfg, None, now=0)
    assert name.startswith("dcgan-3000it-two_step-seed7-jax ")
    assert run_name(cfg, "brisk-owl", now=0) == f"brisk-owl ({name})"
    params: Params = parse_params({"train": {"model": "dcgan"}})
    logged = logged_params(params, resolve(params.train, "tensorflow"))
    assert logged["train.iterations"] == "None" and logged["train.resolved.iterations"] == "3000"
    assert logged["train.resolved.backend"] == "tensorflow" and not any(k.startswith("evaluate.") for k in logged)
