"""Training runs: determinism, resume after interruption, divergence, short intervals, EMA, 2 devices."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from ganlab.core.files import StageError
from ganlab.training import train as T
from ganlab.training.callbacks import Diverged, RunCallback
from ganlab.training.devices import select_device

from .conftest import TINY, changed, stop_at, weights
from .scratch import ROOT


def test_deterministic_off_is_recorded(images, tmp_path):
    result = run(dataclasses.replace(TINY, iterations=10, deterministic=False), images, tmp_path, "nondet")
    assert result.state["device"]["deterministic"] is False


def run(cfg, images, tmp_path, name, **kw):
    return T.train(T.resolved(cfg), images, "h", tmp_path / name / "samples", tmp_path / name / "ckpt", **kw)


def test_same_seed_same_losses_and_resume_reaches_same_end(images, tmp_path):
    ref = run(TINY, images, tmp_path, "ref")
    again = run(TINY, images, tmp_path, "again")
    pd_equal = ref.history.equals(again.history)
    assert pd_equal, "same params and seed gave different losses"
    assert ref.state["device"]["deterministic"] is True  # null: on for a CPU
    assert len(ref.history) == 4 and list(ref.history.iteration) == [10, 20, 30, 40]
    assert sorted(p.name for p in (tmp_path / "ref" / "samples").iterdir())[-1] == "iter_000040.png"

    class FirstGrid(RunCallback):
        seen: list = []

        def on_first_grid(self, grid):
            self.seen.append(grid.name)

    with pytest.raises(KeyboardInterrupt):
        run(TINY, images, tmp_path, "cut", callbacks=(stop_at(25), FirstGrid()))
    assert FirstGrid.seen == ["iter_000000.png"], "a fresh run's grid before its first step was not passed on"
    import json
    saved = json.loads((tmp_path / "cut" / "ckpt" / "state.json").read_text())
    assert saved["iteration"] == 25, "the interrupt did not save a checkpoint at the exact iteration"
    resumed = run(TINY, images, tmp_path, "cut", callbacks=(FirstGrid(),))
    assert FirstGrid.seen == ["iter_000000.png"], "a resumed run drew a grid at iteration 0 again"
    assert resumed.resumed_from == 25 and resumed.metrics["resumed"]
    for a, b in zip(weights(ref.gan.generator), weights(resumed.gan.generator)):
        np.testing.assert_array_equal(a, b)
    assert list(resumed.history.iteration) == [10, 20, 30, 40]


def test_a_sigterm_whose_raise_was_lost_still_stops_the_run_at_the_next_call(images, tmp_path):
    import json

    import keras

    from ganlab.training.callbacks import StopCheck

    class LostRaise(keras.callbacks.Callback):
        """The SIGTERM handler ran at iteration 15, and its KeyboardInterrupt was discarded."""

        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.iteration) == 15:
                StopCheck.requested = True

    try:
        with pytest.raises(KeyboardInterrupt):
            run(TINY, images, tmp_path, "lost", callbacks=(LostRaise(),))
        assert not StopCheck.requested, "the flag outlived the stop it asked for"
    finally:
        StopCheck.requested = False
    saved = json.loads((tmp_path / "lost" / "ckpt" / "state.json").read_text())
    assert saved["iteration"] == 20, "the run did not stop at the end of the next call (5 iterations a call)"
    assert run(TINY, images, tmp_path, "after").metrics["iterations"] == 40, "a later run was stopped too"


def test_a_resumed_run_takes_back_the_grids_its_outputs_lost(images, tmp_path):
    import shutil

    with pytest.raises(KeyboardInterrupt):
        run(TINY, images, tmp_path, "cut", callbacks=(stop_at(25),))
    shutil.rmtree(tmp_path / "cut" / "samples")  # what DVC does to a stage's outputs before re-running it
    run(TINY, images, tmp_path, "cut")
    grids = sorted(p.name for p in (tmp_path / "cut" / "samples").iterdir())
    assert grids == [f"iter_{i:06d}.png" for i in (0, 10, 20, 30, 40)]


@pytest.mark.slow
@pytest.mark.parametrize("model, iterations, batch", [("mlp", 400, 128), ("dcgan", 4, 128)])
def test_two_processes_same_seed_same_weights(model, iterations, batch, tmp_path):
    # Full-size data and default widths: sigmoid_cross_entropy_with_logits' gradient made two processes
    # of the MLP drift apart within a few hundred iterations here, but never on small sets; two of the
    # DCGAN parted within 4 iterations when TensorFlow ran its ops side by side (half its width did not).
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from ganlab.training import train as T
        from ganlab.core.config import TrainConfig
        x = np.random.default_rng(0).uniform(-1, 1, (60000, 28, 28, 1)).astype(np.float32)
        cfg = TrainConfig(model="{model}", iterations={iterations}, batch_size={batch}, sample_interval=50,
                          checkpoint_interval=None, mixed_precision="off", resume=False)
        res = T.train(T.resolved(cfg), x, "h", Path(sys.argv[1]) / "s", Path(sys.argv[1]) / "c")
        print("digest", T.weights_digest(res.gan), res.state["device"]["deterministic"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / name)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    (digest, on), other = (out.split("digest ")[-1].split() for out, _ in outs)
    assert on == "True", "train.deterministic: null was not on for a CPU"
    assert len(digest) == 16 and [digest, on] == other, "same seed, different weights"


@pytest.mark.slow
def test_determinism_after_tensorflows_runtime_started_is_recorded_off_or_refused():
    # The test process sets the thread count before its runtime starts (conftest): a new process shows
    # what a caller that started the runtime first gets.
    script = textwrap.dedent("""
        import tensorflow as tf
        from ganlab.core.config import TrainConfig
        from ganlab.core.files import StageError
        from ganlab.training import devices
        tf.constant(1.0) + 1  # starts the runtime, ops side by side
        print("null", devices._deterministic(TrainConfig(), on_gpu=False))
        try:
            devices._deterministic(TrainConfig(deterministic=True), on_gpu=False)
        except StageError as exc:
            print("true", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "null False" and "may not give the same weights" in out.stderr
    assert lines[1].startswith("true train.deterministic is true, but TensorFlow's runtime started") and len(lines) == 2


@pytest.mark.parametrize("iterations, rows", [(25, [10, 20, 25]), (7, [7])])
def test_last_interval_may_be_short(iterations, rows, images, tmp_path):
    # `dvc exp run -S train.iterations=50` must work with the default sample_interval of 1000.
    res = run(dataclasses.replace(TINY, iterations=iterations, checkpoint_interval=20), images, tmp_path, "short")
    assert res.metrics["iterations"] == iterations and int(res.gan.d_optimizer.iterations) == 2 * iterations
    assert list(res.history.iteration) == rows
    assert (tmp_path / "short" / "samples" / f"iter_{iterations:06d}.png").exists()


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(images, tmp_path):
    cfg = dataclasses.replace(TINY, iterations=20)
    run(cfg, images, tmp_path, "nan")  # a good run up to 20
    bad = images.copy()
    bad[:] = np.nan
    with pytest.raises(Diverged) as err:
        run(dataclasses.replace(cfg, iterations=40), bad, tmp_path, "nan")
    msg = str(err.value)
    assert "iteration 30" in msg and "iteration 20" in msg and "\n" not in msg
    import json
    state = json.loads((tmp_path / "nan" / "ckpt" / "state.json").read_text())
    assert state["iteration"] == 20


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from pathlib import Path
        from ganlab.training import train as T
        from ganlab.core.config import TrainConfig
        cfg = TrainConfig(iterations=10, sample_interval=5, checkpoint_interval=5, batch_size=16,
                          steps_per_execution=5, strategy="mirrored", width=0.25)
        x = np.random.default_rng(0).uniform(-1, 1, (64, 28, 28, 1)).astype(np.float32)
        res = T.train(T.resolved(cfg), x, "h", Path(r"{tmp_path}") / "s", Path(r"{tmp_path}") / "c")
        assert res.state["device"]["replicas"] == 2, res.state["device"]
        assert res.metrics["iterations"] == 10
        # Every replica holds the same weights after training: the all-reduce kept them in sync.
        for v in res.gan.generator.weights + res.gan.discriminator.weights:
            copies = [np.array(c) for c in v.value.values]
            assert len(copies) == 2 and np.array_equal(copies[0], copies[1]), v.path
        print("OK", res.state["device"]["strategy"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK MirroredStrategy" in out.stdout


def test_batch_larger_than_the_data_is_one_line(images, tmp_path):
    with pytest.raises(StageError, match="train.batch_size 128 is larger than the 64 training images"):
        run(dataclasses.replace(TINY, batch_size=128), images, tmp_path, "big")


def test_ema_follows_g_and_resumes_exactly(images, tmp_path):
    cfg = dataclasses.replace(TINY, iterations=20, ema=0.9)
    one_step = dataclasses.replace(cfg, steps_per_execution=1)  # one fit() step is one iteration
    gan = T.make_gan(T.resolved(one_step), select_device(one_step)[0])
    gan.set_data(images)
    before = weights(gan.generator_ema)
    assert not changed(before, weights(gan.generator)), "the average must start from G"
    gan.fit(tf.data.Dataset.from_tensors([0.0]).repeat(), epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    for avg, old, new, var in zip(weights(gan.generator_ema), before, weights(gan.generator), gan.generator.weights):
        want = 0.9 * old + 0.1 * new if var.trainable else new
        np.testing.assert_allclose(avg, want, rtol=1e-5, atol=1e-7)

    ref = run(cfg, images, tmp_path, "ref")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, images, tmp_path, "cut", callbacks=(stop_at(15),))
    resumed = run(cfg, images, tmp_path, "cut")
    assert resumed.resumed_from == 15
    for a, b in zip(weights(ref.gan.generator_ema), weights(resumed.gan.generator_ema)):
        np.testing.assert_array_equal(a, b)
    assert changed(weights(ref.gan.generator_ema), weights(ref.gan.generator))


def test_a_conditional_gan_trains_on_images_with_their_digits(images, tmp_path):
    cfg = dataclasses.replace(TINY, model="cdcgan", iterations=4, sample_interval=2, checkpoint_interval=2,
                              steps_per_execution=1)
    labels = np.arange(len(images)) % 10
    with pytest.raises(StageError, match="needs a digit label for every image"):
        run(cfg, images, tmp_path, "none")
    res = run(cfg, images, tmp_path, "cond", labels=labels)
    assert res.metrics["iterations"] == 4 and np.isfinite(res.history[["d_loss", "g_loss"]].to_numpy()).all()
    assert res.gan.conditional and (tmp_path / "cond/samples/iter_000004.png").exists()


@pytest.mark.parametrize("key, was", [("precision", "mixed_bfloat16"), ("device", "NVIDIA H100")])
def test_a_checkpoint_trained_in_another_precision_or_device_is_refused_and_kept(key, was, images, tmp_path):
    import json

    cfg = dataclasses.replace(TINY, iterations=20)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, images, tmp_path, "cut", callbacks=(stop_at(10),))
    path = tmp_path / "cut" / "ckpt" / "state.json"
    state = json.loads(path.read_text())
    now = state["device"][key]
    state["device"][key] = was  # as if `auto` had resolved otherwise on the machine that wrote it
    path.write_text(json.dumps(state))
    with pytest.raises(StageError) as err:
        run(cfg, images, tmp_path, "cut")
    assert f"{key} {was}" in str(err.value) and f"resolves to {now}" in str(err.value)
    assert "\n" not in str(err.value)
    assert json.loads(path.read_text())["iteration"] == 10 and list((tmp_path / "cut" / "ckpt").glob("*.npz"))


def test_loss_steps_windows_cross_intervals_and_a_resume_mid_window_writes_what_an_unbroken_run_does():
    """Intervals of 10, calls of 5, a row every 15 (so windows cross intervals), 47 iterations (a short
    last row), each iteration's losses equal to its number: every row is the exact mean of its window."""
    import copy
    from types import SimpleNamespace

    from ganlab.training.callbacks import STEP_COLUMNS, LossSteps

    class Model:  # what LossSteps reads of the GAN
        it, steps_per_execution = 0, 5
        iteration = property(lambda self: SimpleNamespace(numpy=lambda: self.it))

    def drive(cb, model, stop=None):
        while model.it < 47:
            end = min(model.it - model.it % 10 + 10, 47)  # this interval's end
            first = model.it
            cb.on_epoch_begin(0)
            while model.it < end:
                model.steps_per_execution = min(5, end - model.it)
                model.it += model.steps_per_execution
                mean = (first + 1 + model.it) / 2  # the running mean of 1..n over this interval
                logs = dict.fromkeys(STEP_COLUMNS[1:], mean)
                cb.on_train_batch_end(0, logs)
                if model.it == stop:
                    cb.hold()
                    return
            cb.on_epoch_end(0, logs)

    def run_from(state, start, stop=None):
        model = Model()
        model.it = start
        cb = LossSteps(15, 47, start, state)
        cb.set_model(model)
        drive(cb, model, stop)
        return state

    whole = run_from({"loss_steps": []}, 0)["loss_steps"]
    assert [r["iteration"] for r in whole] == [15, 30, 45, 47]
    edges = [0, 15, 30, 45, 47]
    for row, a, b in zip(whole, edges, edges[1:]):
        assert row["d_loss"] == pytest.approx((a + 1 + b) / 2), (row, a, b)
    cut = run_from({"loss_steps": []}, 0, stop=25)  # stopped mid-interval and mid-window
    saved = copy.deepcopy(cut)  # what the checkpoint keeps
    saved["loss_steps"] = [r for r in saved["loss_steps"] if r["iteration"] <= 25]
    resumed = run_from(saved, 25)["loss_steps"]
    table = [[r[k] for k in STEP_COLUMNS] for r in whole]
    np.testing.assert_allclose([[r[k] for k in STEP_COLUMNS] for r in resumed], table)


def test_the_losses_at_a_finer_step_average_back_to_each_interval_and_survive_a_resume(images, tmp_path):
    from ganlab.training.callbacks import loss_step

    assert loss_step(20_000, 20) == 200 and loss_step(3_000, 1) == 30 and loss_step(40, 5) == 5
    whole = run(TINY, images, tmp_path, "whole")
    fine = pd.DataFrame(whole.state["loss_steps"])
    assert list(fine.iteration) == [5, 10, 15, 20, 25, 30, 35, 40]
    # Two windows of 5 make each interval of 10: their mean is the interval's mean loss.
    pairs = fine[["d_loss", "g_loss", "d_acc"]].to_numpy().reshape(4, 2, 3).mean(1)
    np.testing.assert_allclose(pairs, whole.history[["d_loss", "g_loss", "d_acc"]].to_numpy(), rtol=1e-5)
    with pytest.raises(KeyboardInterrupt):
        run(TINY, images, tmp_path, "cut", callbacks=(stop_at(25),))
    resumed = run(TINY, images, tmp_path, "cut")
    assert [r["iteration"] for r in resumed.state["loss_steps"]] == [5, 10, 15, 20, 25, 30, 35, 40]
