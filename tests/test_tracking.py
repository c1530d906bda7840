"""MLflow plumbing: secrets stay out, a down server is one line, failures never cost a model."""

import socket

import pytest

from ganlab import tracking
from ganlab.files import StageError
from ganlab.runlog import RunLog, check_server


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


def test_failed_logging_is_recorded_not_raised(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    run = RunLog("0" * 32)
    assert run.call("metrics", mlflow.log_metric, "x", 1.0) is None
    run.report_failures(tmp_path / "not_logged.json")
    assert "metrics" in (tmp_path / "not_logged.json").read_text()


def test_flatten_metrics():
    assert tracking.flatten_metrics({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
