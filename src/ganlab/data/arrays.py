"""The prepared arrays: MNIST rescaled to [-1, 1] in `data/prepared/`, written by `prepare` and read,
checked, by every later stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ganlab.core.config import PrepareConfig
from ganlab.core.files import StageError, atomic_path, read_json, sha256_bytes, write_json
from ganlab.data import sources

# Beside the arrays: their hash and counts, for the stages that read them.
DATA_INFO = "data.json"
# The cheapest repair of a damaged prepared array: DVC's cache holds the good copy.
# `--force`: DVC will not overwrite a file that differs from its record without it.
REPAIR = "restore it with `dvc checkout --force data/prepared` (or `dvc repro -f prepare` if that finds no copy)"


def save_scaled(images: np.ndarray, dest: Path, chunk: int = 10_000) -> None:
    """Write uint8 images as float32 x/127.5 - 1 of shape (N, 28, 28, 1), atomically, in chunks.

    Chunks keep peak memory at one copy of the float array, which lives on disk.
    """
    with atomic_path(dest) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(*images.shape, 1))
        for start in range(0, len(images), chunk):
            block = images[start : start + chunk].astype(np.float32)
            out[start : start + chunk, ..., 0] = block / 127.5 - 1.0
        out.flush()
        del out


def prepare(cfg: PrepareConfig, raw_dir: Path, out_dir: Path) -> dict:
    """Acquire verified MNIST, write the rescaled arrays to `out_dir`, return the manifest."""
    source, payloads = sources.acquire(cfg, raw_dir)
    arrays = {key: sources.decode_idx(data, sources.IDX_FILES[key].name) for key, data in payloads.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"source": source, "sha256": {}, "counts": {}, "class_histogram": {}}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise StageError(f"{split}: {len(images)} images but {len(labels)} labels")
        save_scaled(images, out_dir / f"{split}_x.npy")
        with atomic_path(out_dir / f"{split}_y.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, labels.astype(np.uint8), allow_pickle=False)
        manifest["counts"][split] = int(len(images))
        manifest["class_histogram"][split] = np.bincount(labels, minlength=10).tolist()
    for key, data in payloads.items():
        manifest["sha256"][sources.IDX_FILES[key].name] = sha256_bytes(data)
    # The data hash tags every MLflow run, so runs on different data never compare silently.
    manifest["data_hash"] = sha256_bytes("".join(sorted(manifest["sha256"].values())).encode())[:16]
    pixels = arrays["train_images"]
    manifest["value_range"] = [float(pixels.min()) / 127.5 - 1.0, float(pixels.max()) / 127.5 - 1.0]
    # What later stages read travels with the arrays, without the source: re-running prepare from
    # the cache instead of the package gives the same data, and must not make `train` stale.
    write_json(out_dir / DATA_INFO, {k: v for k, v in manifest.items() if k != "source"})
    return manifest


def data_info(data_dir: Path) -> dict:
    """The description of the prepared arrays in `data_dir` (hash, counts), written by `prepare`."""
    return read_json(data_dir / DATA_INFO, "the prepared data's description")


def load_split(data_dir: Path, split: str, manifest: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map `split`'s images and load its labels; StageError if they are missing or broken.

    The image count is checked against `manifest`, or else the folder's own description.
    """
    x_path, y_path = data_dir / f"{split}_x.npy", data_dir / f"{split}_y.npy"
    try:
        x = np.load(x_path, mmap_mode="r", allow_pickle=False)
        y = np.load(y_path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise StageError(f"{exc.filename} is missing; {REPAIR}") from None
    except ValueError as exc:
        raise StageError(f"{data_dir}/{split}_*.npy is corrupted ({exc}); {REPAIR}") from None
    if x.ndim != 4 or x.shape[1:] != (28, 28, 1) or len(x) != len(y):
        raise StageError(f"{x_path} has shape {x.shape} for {len(y)} labels; {REPAIR}")
    if manifest is None and (data_dir / DATA_INFO).exists():
        manifest = data_info(data_dir)
    if manifest is not None and len(x) != manifest["counts"][split]:
        raise StageError(f"{x_path} holds {len(x)} images, the manifest says {manifest['counts'][split]}; {REPAIR}")
    return x, y
