"""Shared entry-point plumbing: logging, and one clear line instead of a traceback."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable

from ganlab.core.config import ConfigError
from ganlab.core.files import StageError


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning known failures into one line on stderr and an exit code.

    Set GANLAB_DEBUG=1 to get the full traceback as well.
    """
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(message)s")
    logging.getLogger("ganlab").setLevel(logging.INFO)
    # TensorFlow's C++ start-up chatter hides the lines users need.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        main()
    except (ConfigError, StageError) as exc:
        _fail(name, str(exc), 2)
    except KeyboardInterrupt:
        kept = "the last checkpoint is kept" if name == "train" else "no partial output is kept"
        _fail(name, f"interrupted; {kept}, re-run `dvc repro` to resume", 130)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            _fail(name, f"disk full while writing {exc.filename or 'outputs'}; free space and re-run `dvc repro`", 28)
        raise


def _fail(name: str, message: str, code: int) -> None:
    if os.environ.get("GANLAB_DEBUG"):
        import traceback

        traceback.print_exc()
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(code)
