"""Scratch projects for the end-to-end tests: a copy of the working tree with small params, and the
commands, ports and waits the tests drive it with."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# One DVC cache for every scratch project of a pytest run, as a team shares one (set by a global config
# that only the scratch projects' `dvc` reads): a stage that another project already ran with the same
# command, deps and params is restored from DVC's run-cache, so `classifier` trains about once per pytest
# run instead of once per project and per queued experiment (`prepare` re-runs: its raw cache persists).
if "GANLAB_TESTS_DVC_CONFIG" not in os.environ:
    _dvc_config = tempfile.mkdtemp(prefix="dvc-global-")
    atexit.register(shutil.rmtree, _dvc_config, ignore_errors=True)
    Path(_dvc_config, "config").write_text(f"[cache]\n    dir = {Path(_dvc_config, 'cache')}\n")
    os.environ["GANLAB_TESTS_DVC_CONFIG"] = _dvc_config

VENV_BIN = Path(sys.executable).parent


def make_in(target: str, **variables: str) -> list[str]:
    """`make target` in a scratch project, on this venv. `-o` keeps make from re-running set-up there:
    its `pip install -e .` would point this venv's ganlab at the scratch copy."""
    venv = VENV_BIN.parent
    return ["make", "-o", str(venv / ".installed"), target, f"VENV={venv}", *(f"{k}={v}" for k, v in variables.items())]


def make_server(port: int) -> list[str]:
    """`make server` on `port` with one worker process, not MLflow's 4: the tests' few clients need no
    more, and each worker costs CPU to start."""
    return make_in("server", PORT=str(port), WORKERS="1")


SMALL = {
    "prepare": {"source": "package"},
    "train": {"iterations": 40, "sample_interval": 20, "checkpoint_interval": 20, "steps_per_execution": 10,
              "quality_samples": 500},
    "classifier": {"epochs": 1, "n_train": 2000},
    "evaluate": {"n_samples": 300},
}


def sh(cmd: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(dest: Path, tracking_uri: str | None = None, **env_extra: str) -> dict:
    """Copy the working tree to `dest` as a fresh git repo with SMALL params; return the env to run it with.

    With no `tracking_uri`, MLFLOW_TRACKING_URI is unset and the project's default store is used.
    """
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file() and not rel.startswith(("metrics/", "plots/")) and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    # An MLflow experiment of its own, which is one of train's params: the DVC cache the scratch projects
    # share (above) then never restores one project's train stage, whose MLflow run is elsewhere, into another.
    params["train"]["experiment"] = f"ganlab-{hashlib.md5(str(dest).encode()).hexdigest()[:6]}"
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": tracking_uri or "", "TF_CPP_MIN_LOG_LEVEL": "2",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_GLOBAL_CONFIG_DIR": os.environ["GANLAB_TESTS_DVC_CONFIG"],
           # Without it every dvc command starts a daemon that sends DVC's usage report: a process and a
           # connection beyond the loopback each time (55 in one run of the suite).
           "DVC_NO_ANALYTICS": "1", **env_extra}
    env.pop("KERAS_BACKEND", None)  # as on a user's machine: params.yaml's train.backend decides
    env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)  # `make server`'s own default
    if not tracking_uri:
        env.pop("MLFLOW_TRACKING_URI")
    if "MLFLOW_TRACKING_TOKEN" not in env_extra:
        env.pop("MLFLOW_TRACKING_TOKEN", None)
    sh(["git", "init", "-q"], dest, env)
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "commit", "-qm", "init"], dest, env)
    return env


def own_cache(env: dict, folder: Path) -> dict:
    """`env` for a clone that stands for another machine: DVC's own cache in the clone, not the one the
    scratch projects share, so that what it has came from the remote."""
    return {**env, "DVC_GLOBAL_CONFIG_DIR": str(folder)}  # an empty folder: DVC's defaults


def start_train(dest: Path, env: dict, name: str, **train) -> tuple[subprocess.Popen, list[str]]:
    """Start the train stage in the background on params.yaml with `train` overrides, all under `name/`.

    Returns the process and its command; the params it reads are `name.yaml`.
    """
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"].update(train)
    (dest / f"{name}.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "pipeline/train.py", "--params", f"{name}.yaml", "--data", "data/prepared",
           "--out", f"{name}/out", "--checkpoints", f"{name}/ckpt",
           "--metrics", f"{name}/train.json", "--plots", f"{name}/plots"]
    return subprocess.Popen(cmd, cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), cmd


def answers(url: str, proc: subprocess.Popen, seconds: float = 120) -> bool:
    """Wait until `url` answers 200 (True), or `proc` has ended or `seconds` have passed (False)."""
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until `path` exists, `proc` has ended, or `seconds` have passed."""
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
