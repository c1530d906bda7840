"""One sweep over several machines: `make sweep SHARE=k/n REMOTE=origin` on two clones of one Git remote,
both logging to one `make server`, and a third clone that pulls every experiment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ganlab.core.files import StageError
from ganlab.tools import share

from .scratch import answers, free_port, make_in, make_project, make_server, own_cache, sh

pytestmark = pytest.mark.xdist_group("share")

GRID = ["train.model=mlp,mlp_bn", "train.d_schedule=two_step,combined", "train.seed=1,2,3"]


def test_the_shares_split_the_grid_in_dvcs_order_each_point_once():
    shares = [share.share(GRID, k, 5) for k in range(1, 6)]
    names = [name for part in shares for name, _ in part]
    assert len(names) == len(set(names)) == 12
    everything = sorted(tuple(point) for part in shares for _, point in part)
    assert everything == sorted(tuple(p) for p in share.grid(GRID))
    first = share.grid(GRID)[0]  # DVC's order: the last override varies fastest
    assert first == ["train.model=mlp", "train.d_schedule=two_step", "train.seed=1"]
    assert share.share(GRID, 1, 5)[0] == (share.share(GRID, 1, 1)[0][0], first)
    assert [n.rsplit("-", 1)[1] for n, _ in shares[1]] == ["2", "7", "12"]
    # The same grid gets the same names on every machine; another grid, others.
    assert share.share(GRID, 2, 5) == share.share(list(GRID), 2, 5)
    assert share.share(GRID[:2], 1, 1)[0][0].rsplit("-", 1)[0] != names[0].rsplit("-", 1)[0]


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0"])
def test_a_share_that_is_not_k_of_n_is_one_line(text):
    with pytest.raises(StageError, match=f"SHARE={text} ") as err:
        share.parse_share(text)
    assert "\n" not in str(err.value)


def test_a_grid_that_does_not_parse_is_one_line():
    with pytest.raises(StageError, match="does not parse") as err:
        share.grid(["train.seed=[1"])
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_sweep_split_over_two_clones_lands_in_one_server_and_one_git_remote(tmp_path):
    import mlflow

    base = tmp_path / "base"
    base.mkdir()
    env = make_project(base)
    remote, store = tmp_path / "remote.git", tmp_path / "dvc-store"
    sh(["git", "init", "-q", "--bare", str(remote)], tmp_path, env)
    sh(["dvc", "remote", "add", "-d", "shared", str(store)], base, env)
    sh(["git", "commit", "-qam", "a DVC remote for the sweep's outputs"], base, env)
    sh(["git", "remote", "add", "origin", str(remote)], base, env)
    sh(["git", "push", "-q", "origin", "HEAD"], base, env)
    # The stages the sweep does not vary, once, into the DVC cache the machines share here (as a team's
    # shared cache): each machine restores them from DVC's run-cache instead of training the same classifier.
    sh(["dvc", "repro", "classifier"], base, env)

    port = free_port()
    server = subprocess.Popen(make_server(port), cwd=base, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert answers(f"http://127.0.0.1:{port}/health", server, 90), "mlflow server did not start"
        uri = f"http://127.0.0.1:{port}"
        sweep = "-S train.seed=1,2"
        machines = []
        for k in (1, 2):  # two machines, each on its own clone of the remote, at the same time
            clone = tmp_path / f"m{k}"
            sh(["git", "clone", "-q", str(remote), str(clone)], tmp_path, env)
            proc = subprocess.Popen(make_in("sweep", SHARE=f"{k}/2", REMOTE="origin", SWEEP=sweep, JOBS="1"),
                                    cwd=clone, env={**env, "MLFLOW_TRACKING_URI": uri},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            machines.append((clone, proc))
        for _, proc in machines:
            out = proc.communicate(timeout=900)[0]
            assert proc.returncode == 0, out[-5000:]
        names = share.share(["train.seed=1,2"], 1, 1)
        for (clone, _), (name, point) in zip(machines, names):
            # Each machine ran its own point only.
            assert sh(["dvc", "exp", "list", "--name-only"], clone, env).stdout.split() == [name]
            assert point == [f"train.seed={clone.name[1]}"]

        third = tmp_path / "m3"
        sh(["git", "clone", "-q", str(remote), str(third)], tmp_path, env)
        env = own_cache(env, tmp_path / "dvc-global")  # what m3 has, it pulled
        sh(["dvc", "exp", "pull", "origin", *(name for name, _ in names)], third, env)
        table = sh(["dvc", "exp", "show", "--csv"], third, env).stdout
        rows = {line.split(",")[0]: line for line in table.splitlines()}
        for name, _ in names:
            assert name in rows, table
        header = table.splitlines()[0].split(",")
        fd = header.index("quality.frechet_distance")
        assert all(float(rows[name].split(",")[fd]) > 0 for name, _ in names), table

        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(search_all_experiments=True)
        assert len(runs) == 2, runs[["tags.mlflow.runName", "tags.dvc_experiment"]]  # one each, none doubled
        assert sorted(runs["tags.dvc_experiment"]) == [name for name, _ in names]
        assert sorted(runs["params.train.seed"]) == ["1", "2"] and set(runs["status"]) == {"FINISHED"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_share_cli_refuses_an_empty_sweep_in_one_line():
    out = subprocess.run([sys.executable, "-m", "ganlab.tools.share", "queue", "1/2"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "share: error: no sweep given: pass the grid as -S key=a,b (make sweep SWEEP=\"-S ...\")"]
