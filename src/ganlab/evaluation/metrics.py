"""Quality numbers, plain numpy on arrays: D's confusion matrix, and sample quality in a classifier's
feature space.

None of the sources has them. They compare generated images with the test set in the features of
the MNIST classifier: Fréchet distance, classifier score, modes covered, KL to uniform, improved
precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020). The same
numbers for real training images give the "perfect" reference (`ganlab.evaluation.judge`).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def confusion(d_real: np.ndarray, d_fake: np.ndarray, threshold: float = 0.5) -> dict:
    """D's confusion matrix in the chapter's terms ("positive" = real), from D(x) probabilities.

    TP: real judged real (D(x) >= 0.5); FN: real judged fake; TN: fake judged fake; FP: fake judged real.
    """
    d_real, d_fake = np.ravel(d_real), np.ravel(d_fake)
    tp = int((d_real >= threshold).sum())
    fn = int(len(d_real) - tp)
    fp = int((d_fake >= threshold).sum())
    tn = int(len(d_fake) - fp)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "mean_d_real": float(d_real.mean()),
        "mean_d_fake": float(d_fake.mean()),
    }


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets `a` and `b` (rows are samples)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # handled just below
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Near-singular covariances: nudge the diagonal, as the reference FID code does.
        eps = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)))


def classifier_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))): the Inception Score with the MNIST classifier; at most 10."""
    py = probs.mean(0, keepdims=True)
    kl = (probs * (np.log(probs + eps) - np.log(py + eps))).sum(1)
    return float(np.exp(kl.mean()))


def class_histogram(probs: np.ndarray) -> np.ndarray:
    return np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)


def modes_covered(probs: np.ndarray, min_share: float = 0.01) -> int:
    """Digit classes that get at least `min_share` of the samples."""
    return int((class_histogram(probs) >= min_share).sum())


def kl_to_uniform(probs: np.ndarray, eps: float = 1e-12) -> float:
    """KL(predicted-class histogram || uniform): 0 when every digit is equally common."""
    h = class_histogram(probs)
    return float((h * (np.log(h + eps) - np.log(1 / len(h)))).sum())


def unsure_share(probs: np.ndarray, confident: float = 0.9) -> float:
    """The share of images the classifier names with less than `confident` probability: the blends of two
    digits and the scrawls that pull the classifier score down."""
    return float((probs.max(1) < confident).mean())


def _sq_dists(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances between the rows of `a` and of `b`, shape (len(a), len(b));
    `b_norms`: the rows of `b`'s squared norms, when `b` is met chunk after chunk of `a`."""
    # |a|^2 + |b|^2 - 2 a.b, added into the product in place: the matmul is then nearly all the time,
    # where three temporaries of the product's size would add about a third to it.
    d2 = a @ b.T
    d2 *= -2
    d2 += (a**2).sum(1)[:, None]
    d2 += ((b**2).sum(1) if b_norms is None else b_norms)[None, :]
    return d2


def kth_radius(x: np.ndarray, k: int, chunk: int = 1000) -> np.ndarray:
    """Distance from each row of `x` to its k-th nearest other row."""
    radii, norms = np.empty(len(x)), (x**2).sum(1)
    for s in range(0, len(x), chunk):
        d2 = _sq_dists(x[s : s + chunk], x, norms)
        # Column 0 after partition is the point itself (distance 0); the k-th neighbour is at index k.
        radii[s : s + chunk] = np.sqrt(np.maximum(np.partition(d2, k, axis=1)[:, k], 0))
    return radii


def manifold(real: np.ndarray, fake: np.ndarray, k: int = 3, real_radii: np.ndarray | None = None,
             chunk: int = 1000) -> dict:
    """Where the fakes sit against the real feature manifold, each sample's k-NN ball standing for it.

    Improved precision (fakes inside some real ball) and recall (reals inside some fake ball), after
    Kynkäänniemi et al. 2019, and density and coverage, after Naeem et al. 2020: density counts the
    real balls around each fake (divided by k: about 1 for fakes like the reals), coverage the reals
    whose own ball holds a fake. Precision trusts the largest balls, those of outlying reals: grey or
    blank images, or one image drawn again and again, land inside one and score precision 1.0, while
    their coverage stays near 0. `real_radii` (from `kth_radius(real, k)`) saves recomputing them
    when several sets are scored against one reference.
    """
    real_radii = kth_radius(real, k, chunk) if real_radii is None else real_radii
    fake_radii = kth_radius(fake, k, chunk)
    balls_around = np.empty(len(fake))  # real balls holding each fake
    covered = np.zeros(len(real), bool)  # reals whose own ball holds a fake
    recalled = np.zeros(len(real), bool)  # reals inside some fake's ball
    real_norms = (real**2).sum(1)
    for s in range(0, len(fake), chunk):
        d2 = _sq_dists(fake[s : s + chunk], real, real_norms)  # (fakes, reals)
        in_real_ball = d2 <= real_radii[None, :] ** 2
        balls_around[s : s + chunk] = in_real_ball.sum(1)
        covered |= in_real_ball.any(0)
        recalled |= (d2 <= fake_radii[s : s + chunk, None] ** 2).any(0)
    return {"precision": float((balls_around > 0).mean()), "recall": float(recalled.mean()),
            "density": float(balls_around.sum() / (k * len(fake))), "coverage": float(covered.mean())}


def quality(emb: tuple, ref: tuple, k: int, ref_radii: np.ndarray | None = None) -> dict:
    """All quality numbers of a sample against a reference set, each given as `features.embedder` returns
    (`ref_radii`: the reference's k-NN radii in the conv features, when already known).

    Fréchet distance uses the 128-d penultimate features. The k-NN scores use the 1,600-d conv
    features: in the penultimate space, uniform noise lands inside a few large real k-NN balls
    (precision 0.99 measured on the default run), in the conv space it scores far lower.
    """
    feats, conv, probs = emb
    ref_feats, ref_conv, _ = ref
    return {
        "frechet_distance": frechet_distance(feats, ref_feats),
        "classifier_score": classifier_score(probs),
        "modes_covered": modes_covered(probs),
        "kl_to_uniform": kl_to_uniform(probs),
        "unsure_share": unsure_share(probs),
        **manifold(ref_conv, conv, k, ref_radii),
    }


def pixel_gap(fakes: np.ndarray, reals: np.ndarray, border: int = 3) -> dict:
    """Where G's mean image departs from the real one: the per-pixel mean of the fakes minus that of the
    real images, its largest departure and where, and the mean departure in each corner (a `border`
    square) against the middle. A padding artefact shows as one corner far above the others."""
    gap = np.asarray(fakes, np.float64).mean(0)[..., 0] - np.asarray(reals, np.float64).mean(0)[..., 0]
    r, c = np.unravel_index(np.abs(gap).argmax(), gap.shape)
    b = border
    corners = {"top_left": gap[:b, :b], "top_right": gap[:b, -b:], "bottom_left": gap[-b:, :b],
               "bottom_right": gap[-b:, -b:]}
    return {"max_abs": round(float(abs(gap[r, c])), 5), "at_row": int(r), "at_col": int(c),
            "mean_abs": round(float(np.abs(gap).mean()), 5),
            **{f"{k}_mean_abs": round(float(np.abs(v).mean()), 5) for k, v in corners.items()},
            "middle_mean_abs": round(float(np.abs(gap[b:-b, b:-b]).mean()), 5)}


def interpolate(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> np.ndarray:
    """Points on the straight line from z_a to z_b (inclusive), shape (steps, z_dim)."""
    t = np.linspace(0, 1, steps)[:, None]
    return ((1 - t) * z_a[None] + t * z_b[None]).astype(np.float32)


def nearest_neighbours(samples: np.ndarray, train: np.ndarray, chunk: int = 10_000) -> np.ndarray:
    """Index of the closest training image (pixel L2) to each sample, to spot memorisation."""
    s = samples.reshape(len(samples), -1).astype(np.float32)
    best = np.full(len(s), np.inf)
    idx = np.zeros(len(s), dtype=np.int64)
    for start in range(0, len(train), chunk):
        t = np.asarray(train[start : start + chunk], np.float32).reshape(-1, s.shape[1])
        d2 = _sq_dists(s, t)
        j = d2.argmin(1)
        better = d2[np.arange(len(s)), j] < best
        best[better] = d2[np.arange(len(s)), j][better]
        idx[better] = start + j[better]
    return idx


def label_agreement(asked: np.ndarray, read: np.ndarray) -> dict:
    """Share of generated images that the classifier reads as the digit asked for, overall and per digit."""
    asked, read = np.ravel(asked), np.ravel(read)
    return {"overall": round(float((asked == read).mean()), 5),
            "per_digit": {str(d): round(float((read[asked == d] == d).mean()), 5) for d in range(10)
                          if (asked == d).any()}}


def code_digits(codes: np.ndarray, probs: np.ndarray, modes: int) -> dict:
    """Which digit each of the `modes` values of G's latent code draws, as the classifier reads its fakes:
    per value the most common digit, the share of the value's fakes read as it, and their `unsure_share`
    (a value no fake drew: digit -1, both shares 0); overall the share of fakes read as their value's digit
    (`purity`) and how many distinct digits the values draw."""
    codes, read = np.ravel(codes), probs.argmax(1)
    digit, share, unsure, hits = {}, {}, {}, 0
    for value in range(modes):
        mine, key = codes == value, str(value)
        if not mine.any():
            digit[key], share[key], unsure[key] = -1, 0.0, 0.0
            continue
        counts = np.bincount(read[mine], minlength=probs.shape[1])
        digit[key], share[key] = int(counts.argmax()), round(float(counts.max() / mine.sum()), 5)
        unsure[key] = round(unsure_share(probs[mine]), 5)
        hits += int(counts.max())
    return {"purity": round(hits / len(codes), 5), "distinct_digits": len(set(digit.values()) - {-1}),
            "digit": digit, "share": share, "unsure": unsure}
