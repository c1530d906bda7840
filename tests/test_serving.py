"""`make serve`: the registered champion answers POST /invocations, refuses bad requests with 4xx and lives on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from .scratch import answers, free_port, make_in, sh

# `make test` runs on parallel workers: one worker runs these and test_pipeline.py, which share the
# test run's `project` and `repro`, so those are built once.
pytestmark = pytest.mark.xdist_group("project")

CHAMPION = "models:/ganlab-generator@champion"


def post(port: int, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def serve(dest, env, model: str = CHAMPION):
    """`make serve` for `model` in the project at `dest`; yields its port, then stops it by its PID."""
    port = free_port()
    proc = subprocess.Popen(make_in("serve", SERVE_PORT=str(port), MODEL=model),
                            cwd=dest, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    if not answers(f"http://127.0.0.1:{port}/ping", proc, 180):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"make serve did not come up: {proc.stderr.read()[-3000:] if proc.poll() is not None else ''}")
    yield port
    os.killpg(proc.pid, signal.SIGTERM)  # make, mlflow and uvicorn share the process group started for them
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(project, repro):
    yield from serve(*project)


def test_served_images_are_those_of_the_sample_cli(project, server, tmp_path):
    dest, env = project
    sh([sys.executable, "-m", "ganlab.tools.sample", "--model", CHAMPION, "--n", "16", "--seed", "3",
        "--out", str(tmp_path / "grid.png"), "--npy", str(tmp_path / "cli.npy")], dest, env)
    z = np.random.default_rng(3).standard_normal((16, 100)).astype(np.float32)  # the CLI's z for --seed 3
    status, answer = post(server, json.dumps({"inputs": z.tolist()}).encode())
    assert status == 200, answer
    images = np.asarray(answer["predictions"], np.float32)
    assert images.shape == (16, 28, 28, 1) and images.min() >= -1 and images.max() <= 1
    np.testing.assert_allclose(images, np.load(tmp_path / "cli.npy"), atol=1e-5)


@pytest.mark.parametrize("case, body", [
    ("z of the wrong width", json.dumps({"inputs": [[0.0] * 99]})),
    ("a value that is not a number", json.dumps({"inputs": [["x"] * 100]})),
    ("not finite", json.dumps({"inputs": [[float("nan")] * 100]})),
    ("no inputs", json.dumps({"z": [[0.0] * 100]})),
    ("not JSON", "{inputs: [[0"),
    ("a batch of 1,025", json.dumps({"inputs": [[0.0] * 100] * 1025})),
])
def test_a_bad_request_is_a_4xx_and_the_server_lives_on(server, case, body):
    status, answer = post(server, body.encode())
    assert 400 <= status < 500, (case, status, str(answer)[:500])
    # The reason comes first, not the request's data that MLflow quotes.
    assert not answer.get("message", "x").startswith("Failed to"), answer["message"][:300]
    status, answer = post(server, json.dumps({"inputs": [[0.0] * 100]}).encode())
    assert status == 200, f"the server stopped answering after {case}"


def test_an_oversize_request_is_refused_before_its_body_is_sent(server):
    """100,000 vectors are 84 MB of JSON: the answer comes from the headers alone, within a second."""
    import http.client
    import time

    length = len(json.dumps({"inputs": [[0.0] * 100] * 100_000}))
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    t0 = time.perf_counter()
    conn.putrequest("POST", "/invocations")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()  # and not one byte of the body
    answer = conn.getresponse()
    seconds = time.perf_counter() - t0
    body = json.loads(answer.read())
    conn.close()
    assert answer.status == 413 and "at most 1024 latent vectors" in body["message"], body
    assert seconds < 1, seconds
    status, _ = post(server, json.dumps({"inputs": [[0.0] * 100]}).encode())
    assert status == 200


def test_the_served_model_loads_without_the_ganlab_package(project, repro):
    """The pyfunc carries its own code (serving.py, layers.py): blocking `ganlab` must not matter."""
    dest, env = project
    script = ("import sys; sys.modules['ganlab'] = None\n"
              "import numpy as np, mlflow.pyfunc\n"
              "mlflow.set_tracking_uri('sqlite:///mlflow.db')\n"
              f"m = mlflow.pyfunc.load_model('{CHAMPION}')\n"
              "print(m.predict(np.zeros((2, 100), np.float32)).shape)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=dest, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("(2, 28, 28, 1)")


LOG_CONDITIONAL = """
import sys, mlflow
from pathlib import Path
from ganlab.nets import models, saving
from ganlab.tracking.runlog import _log_model
mlflow.set_tracking_uri("sqlite:///mlflow.db")
g, _ = models.build("cdcgan", 100, 0.25)
saving.save_model(g, Path(sys.argv[1]))
run = mlflow.MlflowClient().create_run(mlflow.set_experiment("serving-test").experiment_id)
op = {"op": "model", "name": "generator_service", "path": sys.argv[1], "service": True, "backend": "tensorflow"}
mlflow.register_model(_log_model(run.info.run_id, op, None).model_uri, "conditional-test")
"""


@pytest.fixture(scope="module")
def conditional(project, repro, tmp_path_factory):
    """An untrained conditional G, logged and registered as the train stage does, then served."""
    dest, env = project
    path = tmp_path_factory.mktemp("cond") / "generator.keras"
    sh([sys.executable, "-c", LOG_CONDITIONAL, str(path)], dest, env)
    for port in serve(dest, env, "models:/conditional-test/1"):
        yield port, path


def test_a_conditional_generator_serves_the_digits_asked_for(conditional):
    from ganlab.nets import models, saving

    port, path = conditional
    z = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)
    status, answer = post(port, json.dumps({"inputs": {"z": z.tolist(), "digit": [7, 3, 0]}}).encode())
    assert status == 200, answer
    want = models.draw(saving.load_model(path), z, np.array([7, 3, 0]))
    np.testing.assert_allclose(np.asarray(answer["predictions"], np.float32), want, atol=1e-5)
    for case, body in (("a digit out of range", {"z": z.tolist(), "digit": [7, 10, 0]}),
                       ("a digit short", {"z": z.tolist(), "digit": [7, 3]}),
                       ("no digit", z.tolist())):
        status, answer = post(port, json.dumps({"inputs": body}).encode())
        assert 400 <= status < 500, (case, status, str(answer)[:500])
