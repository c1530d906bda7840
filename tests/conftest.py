"""Shared fixtures: tiny fake MNIST in IDX form, and a loopback HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_mnist(monkeypatch):
    """Small deterministic IDX payloads, with IDX_FILES patched to expect exactly them."""
    from ganlab import data

    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(60) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(20) % 10).astype(np.uint8),
    }
    payloads = {k: data.encode_idx(v) for k, v in arrays.items()}
    specs = {}
    for key, spec in data.IDX_FILES.items():
        raw = payloads[key]
        gz = gzip.compress(raw, mtime=0)
        specs[key] = data.IdxFile(spec.name, len(raw), hashlib.sha256(raw).hexdigest(), hashlib.md5(gz).hexdigest())
    monkeypatch.setattr(data, "IDX_FILES", specs)
    return arrays, payloads


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        path = Path(self.directory) / name
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A truncated transfer: promise the full length, send half.
        self.wfile.write(body[: len(body) // 2] if name in self.truncate else body)


@pytest.fixture
def http_dir(tmp_path):
    """Serve a fresh folder on 127.0.0.1; yields (folder, base_url, truncate set)."""
    root = tmp_path / "www"
    root.mkdir()
    truncate: set[str] = set()
    handler = type("H", (_Handler,), {"truncate": truncate})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(root), **k)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/", truncate
    server.shutdown()
    server.server_close()
