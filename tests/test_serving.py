"""`make serve`: the registered champion answers POST /invocations, refuses bad requests with 4xx and lives on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from .conftest import VENV_BIN, free_port, sh

CHAMPION = "models:/ganlab-generator@champion"


def post(port: int, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def server(project, repro):
    dest, env = project
    port = free_port()
    proc = subprocess.Popen(["make", "serve", f"SERVE_PORT={port}", f"VENV={VENV_BIN.parent}"], cwd=dest, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"make serve did not come up: {proc.stderr.read()[-3000:] if proc.poll() is not None else ''}")
    yield port
    os.killpg(proc.pid, signal.SIGTERM)  # make, mlflow and uvicorn share the session started for them
    proc.wait(timeout=30)


def test_served_images_are_those_of_the_sample_cli(project, server, tmp_path):
    dest, env = project
    sh([sys.executable, "-m", "ganlab.sample", "--model", CHAMPION, "--n", "16", "--seed", "3",
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
    ("a batch of 100,000", json.dumps({"inputs": [[0.0] * 100] * 100_000})),
])
def test_a_bad_request_is_a_4xx_and_the_server_lives_on(server, case, body):
    status, answer = post(server, body.encode())
    assert 400 <= status < 500, (case, status, str(answer)[:500])
    status, answer = post(server, json.dumps({"inputs": [[0.0] * 100]}).encode())
    assert status == 200, f"the server stopped answering after {case}"


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
