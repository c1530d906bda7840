"""Quality over training: G and its EMA scored at every interval, the best G kept through a resume."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from ganlab.evaluation.classifier import build_classifier
from ganlab.training.callbacks import HISTORY_COLUMNS
from ganlab.training.watch import QualityWatch

from .test_train import TINY, run, stop_at

CFG = dataclasses.replace(TINY, ema=0.9)


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)  # untrained: any fixed feature map will do for the mechanics
    return build_classifier()


def watch(classifier, images, folder, by_ema=False):
    return QualityWatch(classifier, images, n=200, seed=0, folder=folder, checkpoint_interval=10, by_ema=by_ema)


@pytest.mark.parametrize("by_ema", [False, True])
def test_each_interval_is_scored_and_the_best_g_is_kept_and_restored(classifier, images, tmp_path, by_ema):
    w = watch(classifier, images, tmp_path / "ref" / "ckpt", by_ema)
    res = run(CFG, images, tmp_path, "ref", callbacks=(w,))
    hist = res.history
    for col in ("frechet_distance", "classifier_score", "modes_covered", "frechet_distance_ema"):
        assert hist[col].notna().all() and len(hist) == 4, col
    # The best by G's distance (`train.keep: best`), or by its EMA's (`best_ema`).
    by = "frechet_distance_ema" if by_ema else "frechet_distance"
    best = hist.loc[hist[by].idxmin()]
    summary = w.summary(40)
    assert summary["best_iteration"] == best["iteration"] and summary["best_by_ema"] == by_ema
    assert summary["best_frechet_distance"] == best[by]
    assert summary["best_is_last"] == (best["iteration"] == 40) and summary["quality_seconds"] > 0
    # The best's weights, and at most the best as of the checkpoint before (a resume from it needs it).
    kept = {p.name for p in (tmp_path / "ref" / "ckpt").glob("best-*.npz")}
    assert f"best-{by}-{int(best['iteration']):06d}.npz" in kept and len(kept) <= 2
    # The G (and EMA) put back score as they did at their interval (the same z, the same classifier).
    assert w.restore_best() == best["iteration"]
    assert w.score(res.gan.generate)["frechet_distance"] == pytest.approx(best["frechet_distance"], rel=1e-4)
    if by_ema:
        got = w.score(lambda z: res.gan.generate(z, generator=res.gan.generator_ema))["frechet_distance"]
        assert got == pytest.approx(best["frechet_distance_ema"], rel=1e-4)


def test_a_resumed_run_scores_as_an_unbroken_one_and_keeps_the_same_best(classifier, images, tmp_path):
    ref = run(CFG, images, tmp_path, "ref", callbacks=(watch(classifier, images, tmp_path / "ref" / "ckpt"),))
    with pytest.raises(KeyboardInterrupt):
        run(CFG, images, tmp_path, "cut", callbacks=(watch(classifier, images, tmp_path / "cut" / "ckpt"), stop_at(25)))
    w = watch(classifier, images, tmp_path / "cut" / "ckpt")
    resumed = run(CFG, images, tmp_path, "cut", callbacks=(w,))
    assert resumed.resumed_from == 25
    cols = ["iteration", "frechet_distance", "frechet_distance_ema", "modes_covered"]
    np.testing.assert_allclose(resumed.history[cols].to_numpy(), ref.history[cols].to_numpy(), rtol=1e-6)
    best = ref.history.loc[ref.history["frechet_distance"].idxmin(), "iteration"]
    assert w.summary(40)["best_iteration"] == best
    assert (tmp_path / "cut" / "ckpt" / f"best-frechet_distance-{int(best):06d}.npz").exists()


def test_a_run_resumed_with_the_other_keep_chooses_among_the_intervals_it_scores(classifier, images, tmp_path,
                                                                                 caplog):
    with pytest.raises(KeyboardInterrupt):  # G's best kept up to 25 (`train.keep: best`) ...
        run(CFG, images, tmp_path, "cut", callbacks=(watch(classifier, images, tmp_path / "cut" / "ckpt"), stop_at(25)))
    w = watch(classifier, images, tmp_path / "cut" / "ckpt", by_ema=True)  # ... resumed as best_ema
    res = run(CFG, images, tmp_path, "cut", callbacks=(w,))
    assert "no best-interval file for frechet_distance_ema" in caplog.text
    later = res.history[res.history.iteration > 25]
    assert w.summary(40)["best_iteration"] == later.loc[later["frechet_distance_ema"].idxmin(), "iteration"]


def test_training_without_a_watch_writes_losses_only(images, tmp_path):
    res = run(dataclasses.replace(TINY, iterations=10), images, tmp_path, "plain")
    assert list(res.history.columns) == HISTORY_COLUMNS


def test_a_run_resumed_with_a_watch_keeps_its_unscored_past_and_scores_the_rest(classifier, images, tmp_path):
    from ganlab.report.plots import history_figures

    with pytest.raises(KeyboardInterrupt):
        run(CFG, images, tmp_path, "cut", callbacks=(stop_at(25),))  # no watch: rows 10 and 20 unscored
    w = watch(classifier, images, tmp_path / "cut" / "ckpt")
    res = run(CFG, images, tmp_path, "cut", callbacks=(w,))
    assert list(res.history.iteration) == [10, 20, 30, 40]
    assert res.history["frechet_distance"].isna().tolist() == [True, True, False, False]
    assert w.summary(40)["best_iteration"] in (30, 40) and "quality" in history_figures(res.history)
