"""Pictures shared by the stages: sample grids and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run under DVC and CI with no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ganlab.core.files import atomic_path  # noqa: E402


def tile(images: np.ndarray, rows: int, cols: int | None = None, pad: int = 2, scale: int = 3) -> np.ndarray:
    """Tile (N, 28, 28, 1) images in [-1, 1] into one [0, 1] picture, upscaled `scale` times."""
    cols = cols or rows
    images = np.clip((np.asarray(images, np.float32)[..., 0] + 1) / 2, 0, 1)
    h, w = images.shape[1:3]
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return np.kron(out, np.ones((scale, scale), np.float32))


def save_image(picture: np.ndarray, path: Path) -> Path:
    """Write a [0, 1] greyscale picture as PNG, atomically."""
    with atomic_path(path) as tmp:
        plt.imsave(tmp, picture, cmap="gray", vmin=0, vmax=1, format="png")
    return path


def save_grid(images: np.ndarray, rows: int, path: Path, cols: int | None = None) -> Path:
    """Save `rows` x `cols` images in [-1, 1] as one PNG grid."""
    return save_image(tile(images, rows, cols), path)


def history_figures(history: pd.DataFrame) -> dict[str, plt.Figure]:
    """The book's two figures: losses, and D's accuracy on real and fake, against iteration."""
    figs = {}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for col, label in (("d_loss", "Discriminator loss"), ("g_loss", "Generator loss")):
        ax.plot(history["iteration"], history[col], label=label)
    ax.set(xlabel="Iteration", ylabel="Loss", title="Training loss")
    ax.legend()
    fig.tight_layout()
    figs["loss"] = fig
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for col, label in (("d_acc", "D accuracy"), ("d_acc_real", "on real"), ("d_acc_fake", "on fake")):
        ax.plot(history["iteration"], 100 * history[col], label=label)
    ax.set(xlabel="Iteration", ylabel="Accuracy (%)", title="Discriminator accuracy", ylim=(0, 101))
    ax.legend()
    fig.tight_layout()
    figs["accuracy"] = fig
    # Scored while training (ganlab.training.watch; lower is better): not in a resumed run's unscored past.
    if "frechet_distance" in history and history["frechet_distance"].notna().any():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for col, label in (("frechet_distance", "G"), ("frechet_distance_ema", "G's EMA")):
            if col in history:
                ax.plot(history["iteration"], history[col], marker="o", label=label)
        best = history.loc[history["frechet_distance"].idxmin()]
        ax.axvline(best["iteration"], color="grey", linestyle=":", label=f"best G: {int(best['iteration'])}")
        ax.set(xlabel="Iteration", ylabel="Fréchet distance", title="Sample quality over training", yscale="log")
        ax.legend()
        fig.tight_layout()
        figs["quality"] = fig
    return figs


def save_figure(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def confusion_figure(cm: dict) -> plt.Figure:
    """A labelled 2x2 heatmap of D's decisions, in the chapter's TP/FN/FP/TN terms."""
    grid = np.array([[cm["tp"], cm["fn"]], [cm["fp"], cm["tn"]]])
    names = np.array([["TP", "FN"], ["FP", "TN"]])
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    im = ax.imshow(grid, cmap="Blues", vmin=0)
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{names[i, j]}\n{v}", ha="center", va="center",
                color="white" if v > grid.max() / 2 else "black")
    ax.set_xticks([0, 1], ["judged real", "judged fake"])
    ax.set_yticks([0, 1], ["real (test)", "fake (G)"])
    ax.set_title(f"Discriminator, accuracy {cm['accuracy']:.1%}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def neighbours_picture(samples: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Two rows: generated samples on top, their nearest training images below."""
    return tile(np.concatenate([samples, neighbours]), rows=2, cols=len(samples))
