"""Judging a generator: draws fakes, asks D and the classifier about them, and draws the pictures.

The numbers themselves are `ganlab.evaluation.metrics`; this module feeds them models and images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ganlab.core.config import EvaluateConfig
from ganlab.evaluation import classifier as clf
from ganlab.evaluation.features import embedder
from ganlab.evaluation.metrics import (
    code_digits,
    confusion,
    interpolate,
    kth_radius,
    label_agreement,
    nearest_neighbours,
    pixel_gap,
    quality,
)
from ganlab.nets.inference import predict
from ganlab.nets.models import code_values, d_input, draw, grid_digits, is_conditional, latent_mode, with_code
from ganlab.report.plots import confusion_figure, neighbours_picture, save_figure, save_grid, save_image, tile


def _sigmoid(logits) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(logits, np.float64)))


def quality_report(model, fakes: np.ndarray, reals: np.ndarray, test: np.ndarray, k: int, seed: int = 0,
                   more: dict[str, np.ndarray] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Quality of generated images, of real train images ("perfect") and of uniform noise ("hopeless"),
    and of any `more` named image sets (another generator's), each measured against `test` in the
    classifier's feature space, which is embedded once for all of them. Return (the figures of each
    set, the classifier's probabilities for each set), so that no set is read twice.
    """
    embed = embedder(model, clf.FEATURES, clf.CONV_FEATURES)
    ref = embed(test)
    radii = kth_radius(ref[1], k)
    noise = np.random.default_rng(seed).uniform(-1, 1, fakes.shape).astype(np.float32)
    out, probs = {}, {}
    sets = {"generated": fakes, "real_reference": reals, "noise_reference": noise, **(more or {})}
    for name, images in sets.items():
        emb = embed(images)
        probs[name] = emb[2]
        out[name] = {key: round(val, 5) if isinstance(val, float) else val
                     for key, val in quality(emb, ref, k, radii).items()}
    return out, probs


def judge(generator, discriminator, classifier, x_train: np.ndarray, x_test: np.ndarray, cfg: EvaluateConfig,
          z_dim: int, ema=None, y_test: np.ndarray | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """D's confusion matrix on real test images against as many fresh fakes, and the quality of those
    fakes next to real train images (the reference) and noise; return (metrics, D(real), D(fake)).
    With `ema` (the moving average of G), its fakes from the same z are scored too, as `quality_ema`.
    A G that reads a code (`train.latent_modes`) is scored on `code` too: which digit each value draws.
    A conditional G is asked for the digits 0-9 in turn, and scored on `label_agreement` too; its D
    judges real test images with their labels `y_test`, and fakes with the digits they were asked for.

    The metrics dict is the one DVC's metrics file and MLflow both get.
    """
    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.n_samples, len(x_test), len(x_train))
    real = np.asarray(x_test[:n])  # never seen in training
    z = rng.standard_normal((n, z_dim)).astype(np.float32)
    conditional = is_conditional(generator)
    digits = grid_digits(n) if conditional else None
    fakes = draw(generator, z, digits)
    more = {"ema": draw(ema, z, digits)} if ema is not None else None

    def d_of(images, labels):
        x = d_input(images, np.asarray(labels, np.int32).reshape(-1, 1) if conditional else None)
        return _sigmoid(predict(discriminator, x))

    d_real = d_of(real, None if y_test is None else y_test[:n])
    d_fake = d_of(fakes, digits)
    ref_idx = np.sort(rng.choice(len(x_train), n, replace=False))
    q, probs = quality_report(classifier, fakes, np.asarray(x_train[ref_idx]), real, cfg.pr_k, cfg.seed, more)
    metrics = {"confusion": confusion(d_real, d_fake), "quality": q["generated"], "reference": q["real_reference"],
               "noise": q["noise_reference"], "pixel_gap": pixel_gap(fakes, real)}
    if ema is not None:
        metrics["quality_ema"] = q["ema"]
        metrics["pixel_gap_ema"] = pixel_gap(more["ema"], real)
    # The code's values by the rule G's own layers apply, so that each fake is grouped by what G read.
    if modes := code_values(generator):
        codes = np.asarray(latent_mode(z, modes))
        metrics["code"] = code_digits(codes, probs["generated"], modes)
        if ema is not None:
            metrics["code_ema"] = code_digits(codes, probs["ema"], modes)
    if conditional:
        metrics["label_agreement"] = label_agreement(digits, probs["generated"].argmax(1))
        if ema is not None:
            metrics["label_agreement_ema"] = label_agreement(digits, probs["ema"].argmax(1))
    return metrics, d_real, d_fake


def confusion_rows(d_real: np.ndarray, d_fake: np.ndarray) -> pd.DataFrame:
    """One row per judged image (actual, predicted), the form DVC's confusion template draws."""
    return pd.DataFrame({
        "actual": ["real"] * len(d_real) + ["fake"] * len(d_fake),
        "predicted": np.where(np.concatenate([np.ravel(d_real), np.ravel(d_fake)]) >= 0.5, "real", "fake"),
    })


def pictures(generator, x_train: np.ndarray, cm: dict, cfg: EvaluateConfig, z_dim: int, out: Path) -> list[Path]:
    """Grids (4x4, 5x5, 10x10), latent interpolations, nearest training images and the confusion
    heatmap (and a row per digit or per code value, for a G that reads one), all from fixed z so that
    runs compare picture for picture; return the files."""
    out.mkdir(parents=True, exist_ok=True)
    z_fixed = np.random.default_rng(0).standard_normal((100, z_dim)).astype(np.float32)
    grids = draw(generator, z_fixed)
    files = [save_grid(grids, rows, out / f"grid_{rows}x{rows}.png") for rows in (4, 5, 10)]
    conditional = is_conditional(generator)
    if conditional:  # one row per digit, the same ten z in each row
        files.append(save_grid(draw(generator, np.tile(z_fixed[:10], (10, 1)), np.repeat(np.arange(10), 10)), 10,
                               out / "digits.png"))
    # The same ten z in every row, only the code set in turn: a row's differences are the code's doing.
    if modes := code_values(generator):
        rows = [with_code(z_fixed[:10], modes, value) for value in range(modes)]
        files.append(save_grid(draw(generator, np.concatenate(rows)), modes, out / "codes.png", 10))
    z_pairs = np.random.default_rng(1).standard_normal((cfg.n_interpolations, 2, z_dim)).astype(np.float32)
    # A conditional G keeps one digit along each line (line i: digit i mod 10).
    strip = np.concatenate([draw(generator, interpolate(a, b, 10), np.full(10, i % 10) if conditional else None)
                            for i, (a, b) in enumerate(z_pairs)])
    files.append(save_image(tile(strip, cfg.n_interpolations, 10), out / "interpolation.png"))
    sample = grids[: cfg.n_neighbours]
    nearest = np.stack([x_train[i] for i in nearest_neighbours(sample, x_train)])
    files.append(save_image(neighbours_picture(sample, nearest), out / "neighbours.png"))
    files.append(save_figure(confusion_figure(cm), out / "confusion.png"))
    return files
