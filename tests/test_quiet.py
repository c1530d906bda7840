"""TensorFlow's start-up noise is dropped on a CPU-only machine; real errors still reach stderr."""

import os
import subprocess
import sys

import pytest

from ganlab.core import quiet

from .scratch import ROOT


def test_known_noise_is_dropped_and_everything_else_kept(capfd):
    with quiet.filtered_stderr():
        os.write(2, b"E0000 00:00:1 4990 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n")
        os.write(2, b"E0000 something real went wrong\n")
        print("a Python warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert "cuInit" not in err and "cudart" not in err
    assert "something real went wrong" in err and "a Python warning" in err


@pytest.mark.skipif(quiet.gpu_expected(), reason="a GPU machine keeps TensorFlow's logs")
def test_a_stage_import_prints_nothing_on_a_cpu_machine():
    env = {k: v for k, v in os.environ.items() if k not in ("GANLAB_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-c", "import ganlab.training.train, tensorflow as tf; tf.constant(1)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    loud = subprocess.run([sys.executable, "-c", "import ganlab.training.train"], cwd=ROOT, capture_output=True,
                          text=True,
                          env={**env, "GANLAB_TF_LOGS": "1"}, timeout=120)
    assert "cuInit" in loud.stderr or "cuda" in loud.stderr.lower()  # the escape hatch shows them again
