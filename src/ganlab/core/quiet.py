"""TensorFlow without its start-up noise on machines that have no GPU to find.

On a CPU-only machine TensorFlow's C++ start-up prints six lines to stderr, one of them
`E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)`, which reads as a failure. Python
cannot silence C++ logging before it starts, so the import of `tensorflow` (and its device
scan) runs with stderr captured; every line that is not one of those known messages is then
printed as usual. Nothing changes where an NVIDIA driver is present, or with GANLAB_TF_LOGS=1.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|cudart_stub\.cc.*Could not find cuda drivers"
    r"|failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|oneDNN custom operations are on|TF-TRT Warning|This TensorFlow binary is optimized to use available CPU"
    r"|rebuild TensorFlow with the appropriate compiler flags"
)


def gpu_expected() -> bool:
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidia0")


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture the process's stderr (file descriptor 2); replay it without the known noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not NOISE.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr():
            self.loader.exec_module(module)
            module.config.list_physical_devices()  # the device scan is where cuInit complains


class _QuietFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: let the ordinary finders locate it
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiet the first import of tensorflow, unless a GPU is expected or the user asked for its logs."""
    if "tensorflow" in sys.modules or gpu_expected() or os.environ.get("GANLAB_TF_LOGS"):
        return
    sys.meta_path.insert(0, _QuietFinder())
