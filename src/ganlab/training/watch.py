"""Sample quality while G trains: G (and its EMA) scored by the MNIST classifier at every sample interval.

GAN losses do not say when the samples got good, so the train stage scores G at the end of each
interval, as large GAN codebases score every snapshot: Fréchet distance, classifier score and modes
covered, on `train.quality_samples` samples against the test set. With fewer samples than evaluate's
10,000 the Fréchet distance reads higher (its bias falls as 1/n): these figures compare iterations of
one run, and evaluate's figures compare runs.

The best interval's G (and EMA) is kept beside the checkpoints, so `train.keep: best` can make it the
output; `best_ema` chooses the interval by the EMA's Fréchet distance, the generator the docs advise.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import numpy as np

from ganlab.core.config import TrainConfig
from ganlab.data.arrays import load_split
from ganlab.evaluation.classifier import FEATURES
from ganlab.evaluation.features import embedder
from ganlab.evaluation.metrics import classifier_score, frechet_distance, modes_covered
from ganlab.nets.saving import load_model
from ganlab.training.callbacks import RunCallback
from ganlab.training.checkpoints import save_variables

log = logging.getLogger(__name__)

# History columns, for G and (with `_ema`) its moving average; the best interval is the lowest FD.
SCORES = ("frechet_distance", "classifier_score", "modes_covered")
BEST = "frechet_distance"


class QualityWatch(RunCallback):
    """Adds G's scores to each interval's history row (so MLflow, history.csv and the checkpoint get
    them), and keeps the weights of the best-scoring G in `folder`."""

    def __init__(self, classifier: keras.Model | Path, test_images: np.ndarray | Path, n: int, seed: int,
                 folder: Path, checkpoint_interval: int, by_ema: bool = False):
        """`classifier` as a model or its `.keras` file, `test_images` as an array or the prepared data's
        folder; files are read at the run's start, once the device is chosen (multi-worker TensorFlow
        must start its runtime before anything runs a model). `by_ema`: the best interval is the one
        with the lowest Fréchet distance of G's EMA, not of G."""
        super().__init__()
        self.classifier, self.test_images = classifier, test_images
        self.checkpoint_interval = checkpoint_interval
        self.n, self.seed, self.folder = n, seed, folder
        self.embed = None  # (features, probabilities) of images, once the classifier is read
        self.ref: np.ndarray | None = None
        self.z: np.ndarray | None = None  # drawn at the run's start, when z's width is known
        self.by = f"{BEST}_ema" if by_ema else BEST  # the history column the best is chosen by
        self.best: dict | None = None  # {"iteration", "value"}
        # The best as of the last checkpoint: its file stays until a later checkpoint names another, so
        # a run resumed from that checkpoint finds it.
        self.checkpointed_best: int | None = None
        self.seconds = 0.0

    def _load(self) -> None:
        clf = load_model(self.classifier) if isinstance(self.classifier, Path) else self.classifier
        test = load_split(self.test_images, "test")[0] if isinstance(self.test_images, Path) else self.test_images
        self.embed = embedder(clf, FEATURES)
        self.ref, _ = self.embed(test)

    def on_run_start(self, state: dict) -> dict:
        """Take up the best interval of the history a resumed run restored (the weights file kept then).
        The model is set before this is called (`ganlab.training.train`)."""
        gan = self.model
        if self.embed is None:
            self._load()
        self.z = np.random.default_rng(self.seed).standard_normal((self.n, gan.z_dim)).astype(np.float32)
        start = int(gan.iteration.numpy())
        rows = sorted((r for r in state.get("history", []) if self.by in r and r["iteration"] <= start),
                      key=lambda r: r[self.by])
        # The best scored interval whose weights are on disk: a run stopped while it scored an interval
        # may have checkpointed that interval's score without its file.
        row = next((r for r in rows if self._path(r["iteration"]).exists()), None)
        # Scored rows without a file: `train.keep` changed between best and best_ema (the files are named by
        # column), or the one scored row's file was not written before the stop.
        if rows and row is None:
            log.warning("no best-interval file for %s in %s: the best is chosen among the intervals from %d on",
                        self.by, self.folder, start)
        self.best = row and {"iteration": row["iteration"], "value": row[self.by]}
        self.checkpointed_best = self.best and self.best["iteration"]
        for path in self.folder.glob(f"best-{self.by}-*.npz"):  # a later best, from the part of the run lost
            if not self.best or path != self._path(self.best["iteration"]):
                path.unlink()
        return state

    def _path(self, iteration: int) -> Path:
        # Named by the column that chose it: a run resumed with the other `keep` does not take it up.
        return self.folder / f"best-{self.by}-{iteration:06d}.npz"

    def score(self, generator_fn) -> dict:
        images = np.concatenate([keras.ops.convert_to_numpy(generator_fn(self.z[s : s + 1000]))
                                 for s in range(0, self.n, 1000)])
        feats, probs = self.embed(images)
        return {"frechet_distance": round(frechet_distance(feats, self.ref), 4),
                "classifier_score": round(classifier_score(probs), 4),
                "modes_covered": modes_covered(probs)}

    def on_interval(self, row: dict, grid: Path) -> None:
        t0 = time.perf_counter()
        gan = self.model
        row.update(self.score(gan.generate))
        if gan.generator_ema is not None:
            ema = self.score(lambda z: gan.generate(z, generator=gan.generator_ema))
            row.update({f"{k}_ema": v for k, v in ema.items()})
        if self.best is None or row[self.by] < self.best["value"]:
            self._keep(row["iteration"], row[self.by])
        if row["iteration"] % self.checkpoint_interval == 0:  # the checkpoint is saved right after this
            self.checkpointed_best = self.best["iteration"]
        self.seconds += time.perf_counter() - t0

    def _keep(self, iteration: int, value: float) -> None:
        path = self._path(iteration)
        save_variables(path, self._parts())
        self.best = {"iteration": iteration, "value": value}
        for old in self.folder.glob(f"best-{self.by}-*.npz"):
            if old not in (path, self.checkpointed_best and self._path(self.checkpointed_best)):
                old.unlink()

    def restore_best(self) -> int | None:
        """Load the best interval's G (and EMA) into the GAN; return that iteration (None: no scores)."""
        if self.best is None:
            return None
        with np.load(self._path(self.best["iteration"])) as saved:
            for part, variables in self._parts().items():
                for k, var in enumerate(variables):
                    var.assign(saved[f"{part}/{k}"])
        return self.best["iteration"]

    def _parts(self) -> dict[str, list]:
        gan = self.model
        parts = {"generator": gan.generator.weights}
        if gan.generator_ema is not None:
            parts["generator_ema"] = gan.generator_ema.weights
        return parts

    def summary(self, last_iteration: int) -> dict:
        """The metrics train.json gets: best interval, its FD (the EMA's when `best_by_ema`), and the
        time scoring took."""
        if self.best is None:
            return {}
        return {"best_iteration": self.best["iteration"], "best_frechet_distance": self.best["value"],
                "best_by_ema": self.by != BEST,
                "best_is_last": self.best["iteration"] == last_iteration,
                "quality_seconds": round(self.seconds, 2)}



def quality_watch(classifier: Path | None, data: Path, cfg: TrainConfig, folder: Path) -> tuple[QualityWatch, ...]:
    """The train stage's watch for the resolved `cfg`: the classifier stage's model against the test
    images in `data`, the best G (by its EMA's scores with `keep: best_ema`) kept in `folder`; none
    without a classifier or with quality_samples 0."""
    if classifier is None or not cfg.quality_samples:
        return ()
    return (QualityWatch(classifier, data, cfg.quality_samples, cfg.seed, folder, cfg.checkpoint_interval,
                         by_ema=cfg.keep == "best_ema"),)
