"""Tests for MNIST acquisition: every source, every failure, and the real package data."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

from ganlab.core.config import PrepareConfig
from ganlab.core.files import StageError
from ganlab.data import arrays, sources

from .scratch import ROOT

NO_NET = PrepareConfig(mirrors=(), npz_urls=(), timeout_s=2, retries=1)


def serve_idx(root, payloads, skip=(), corrupt=()):
    for key, raw in payloads.items():
        name = sources.IDX_FILES[key].name
        if key in skip:
            continue
        if key in corrupt:
            raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
        (root / f"{name}.gz").write_bytes(gzip.compress(raw, mtime=0))


def test_idx_round_trip():
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    assert np.array_equal(sources.decode_idx(sources.encode_idx(arr)), arr)
    with pytest.raises(sources.SourceError, match="header says"):
        sources.decode_idx(sources.encode_idx(arr)[:-5])


def test_download_then_cache(fake_mnist, http_dir, tmp_path):
    idx_arrays, payloads = fake_mnist
    root, url, _ = http_dir
    serve_idx(root, payloads)
    cfg = dataclasses.replace(NO_NET, mirrors=(url,), source="auto")
    raw = tmp_path / "raw"
    source, got = sources.acquire(cfg, raw)
    assert source == "download" and got == payloads
    assert sorted(p.name for p in raw.iterdir()) == sorted(s.name for s in sources.IDX_FILES.values())
    # The second run is served from the verified cache, with the mirror gone.
    source, got = sources.acquire(dataclasses.replace(cfg, mirrors=()), raw)
    assert source == "cache" and got == payloads


@pytest.mark.parametrize("fault", ["404", "truncated", "checksum", "down"])
def test_bad_mirror_moves_on_to_next(fault, fake_mnist, http_dir, tmp_path):
    _, payloads = fake_mnist
    root, url, truncate = http_dir
    good = root / "good"
    good.mkdir()
    serve_idx(good, payloads)
    bad_url = url
    if fault == "404":
        serve_idx(root, payloads, skip=("test_labels",))
    elif fault == "truncated":
        serve_idx(root, payloads)
        truncate.add("t10k-images-idx3-ubyte.gz")
    elif fault == "checksum":
        serve_idx(root, payloads, corrupt=("train_labels",))
    else:
        bad_url = "http://127.0.0.1:9/"  # discard port: nothing listens
    cfg = dataclasses.replace(NO_NET, source="download", mirrors=(bad_url, url + "good/"))
    raw = tmp_path / "raw"
    source, got = sources.acquire(cfg, raw)
    assert source == "download" and got == payloads


def test_all_mirrors_bad_gives_one_clear_line(fake_mnist, http_dir, tmp_path):
    _, payloads = fake_mnist
    root, url, _ = http_dir
    serve_idx(root, payloads, corrupt=("train_images",))
    cfg = dataclasses.replace(NO_NET, source="download", mirrors=(url,))
    with pytest.raises(StageError) as err:
        sources.acquire(cfg, tmp_path / "raw")
    msg = str(err.value)
    assert "\n" not in msg and "MD5" in msg and sources.IDX_FILES["train_images"].gz_md5 in msg
    assert "prepare.source" in msg
    # Nothing unverified is left where a later run would trust it.
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_bad_cache_falls_back_and_repairs(damage, fake_mnist, http_dir, tmp_path):
    _, payloads = fake_mnist
    root, url, _ = http_dir
    raw = tmp_path / "raw"
    raw.mkdir()
    for key, blob in payloads.items():
        (raw / sources.IDX_FILES[key].name).write_bytes(blob)
    victim = raw / sources.IDX_FILES["test_images"].name
    if damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(sources.SourceError, match="t10k-images"):
        sources.from_cache(raw)
    serve_idx(root, payloads)
    source, _ = sources.acquire(dataclasses.replace(NO_NET, mirrors=(url,)), raw)
    assert source == "download"
    assert sources.from_cache(raw) == payloads  # repaired


def test_explicit_cache_source_stops_with_hash_in_message(fake_mnist, tmp_path):
    _, payloads = fake_mnist
    raw = tmp_path / "raw"
    raw.mkdir()
    for key, blob in payloads.items():
        (raw / sources.IDX_FILES[key].name).write_bytes(blob)
    (raw / sources.IDX_FILES["train_labels"].name).write_bytes(b"\0\0\x08\x01garbage")
    with pytest.raises(StageError) as err:
        sources.acquire(dataclasses.replace(NO_NET, source="cache"), raw)
    assert sources.IDX_FILES["train_labels"].sha256 in str(err.value)
    assert "delete it" in str(err.value)


def test_npz_source(fake_mnist, http_dir, tmp_path, monkeypatch):
    idx_arrays, payloads = fake_mnist
    root, url, _ = http_dir
    import io

    buf = io.BytesIO()
    np.savez(buf, x_train=idx_arrays["train_images"], y_train=idx_arrays["train_labels"],
             x_test=idx_arrays["test_images"], y_test=idx_arrays["test_labels"])
    (root / "mnist.npz").write_bytes(buf.getvalue())
    cfg = dataclasses.replace(NO_NET, source="download", npz_urls=(url + "mnist.npz",))
    with pytest.raises(StageError, match="SHA-256"):
        sources.acquire(cfg, tmp_path / "raw")
    monkeypatch.setattr(sources, "NPZ_SHA256", __import__("hashlib").sha256(buf.getvalue()).hexdigest())
    source, got = sources.acquire(cfg, tmp_path / "raw")
    assert source == "download" and got == payloads


def test_package_refuses_unverified_pickle(tmp_path):
    bogus = tmp_path / "mnist.pkl.gz"
    bogus.write_bytes(gzip.compress(b"not a pickle"))
    with pytest.raises(sources.SourceError, match="SHA-256"):
        sources.from_package(bogus)


def test_prepare_writes_scaled_arrays(fake_mnist, http_dir, tmp_path):
    idx_arrays, payloads = fake_mnist
    root, url, _ = http_dir
    serve_idx(root, payloads)
    out = tmp_path / "prepared"
    manifest = arrays.prepare(dataclasses.replace(NO_NET, mirrors=(url,)), tmp_path / "raw", out)
    x, y = arrays.load_split(out, "train", manifest)
    assert isinstance(x, np.memmap) and x.shape == (60, 28, 28, 1) and x.dtype == np.float32
    assert np.allclose(x[..., 0], idx_arrays["train_images"] / 127.5 - 1, atol=1e-6)
    assert -1 <= x.min() and x.max() <= 1
    assert manifest["counts"] == {"train": 60, "test": 20}
    assert manifest["class_histogram"]["train"] == [6] * 10
    assert not list(out.glob("*.partial"))


def test_truncated_prepared_array_is_refused(fake_mnist, http_dir, tmp_path):
    _, payloads = fake_mnist
    root, url, _ = http_dir
    serve_idx(root, payloads)
    out = tmp_path / "prepared"
    manifest = arrays.prepare(dataclasses.replace(NO_NET, mirrors=(url,)), tmp_path / "raw", out)
    path = out / "test_x.npy"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(StageError, match=r"corrupted .*; restore it with `dvc checkout --force data/prepared`"):
        arrays.load_split(out, "test", manifest)


def test_package_reproduces_official_payloads():
    payloads = sources.from_package()  # raises unless all four SHA-256 match the official IDX files
    labels = sources.decode_idx(payloads["train_labels"])
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_labels = sources.decode_idx(payloads["test_labels"])
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_disk_full_part_way_leaves_nothing_half_written(fake_mnist, http_dir, tmp_path, monkeypatch, capsys):
    """The real prepare CLI, with the disk filling up while the second array is written."""
    import errno
    import runpy
    import sys

    import yaml

    _, payloads = fake_mnist
    root, url, _ = http_dir
    serve_idx(root, payloads)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"prepare": {"source": "download", "mirrors": [url], "retries": 0}}))
    real_memmap = np.lib.format.open_memmap

    def filling_up(path, *args, **kwargs):
        if "test_x" in str(path):
            Path(path).write_bytes(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_memmap(path, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", filling_up)
    out, manifest = tmp_path / "prepared", tmp_path / "metrics" / "prepare.json"
    monkeypatch.setattr(sys, "argv", ["prepare.py", "--params", str(params), "--raw", str(tmp_path / "raw"),
                                      "--out", str(out), "--manifest", str(manifest)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "pipeline" / "prepare.py"), run_name="__main__")
    assert exit_.value.code == 28
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("prepare: error: disk full while writing") and "free space" in err[-1]
    # Nothing a later stage could trust: no test array, no temp files, no manifest.
    assert sorted(p.name for p in out.iterdir()) == ["train_x.npy", "train_y.npy"]
    assert not manifest.exists()
    with pytest.raises(StageError, match="missing"):
        arrays.load_split(out, "test")


def test_a_mirror_that_never_answers_costs_one_timeout_then_the_next_source(fake_mnist, http_dir, tmp_path,
                                                                            monkeypatch):
    import socket
    import urllib.request

    _, payloads = fake_mnist
    root, url, _ = http_dir
    serve_idx(root, payloads)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections; nobody ever answers
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    calls = []
    real_urlopen = urllib.request.urlopen

    def counting(target, *a, **kw):
        calls.append(target)
        return real_urlopen(target, *a, **kw)

    monkeypatch.setattr(urllib.request, "urlopen", counting)
    cfg = dataclasses.replace(NO_NET, source="download", mirrors=(silent_url, url), timeout_s=0.5, retries=3)
    try:
        source, got = sources.acquire(cfg, tmp_path / "raw")
    finally:
        silent.close()
    assert source == "download" and got == payloads
    assert sum(c.startswith(silent_url) for c in calls) == 1, calls  # not one wait per retry
