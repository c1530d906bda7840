"""ganlab: train GANs on MNIST with DVC and MLflow. Stages live in `pipeline/`, logic here."""

from ganlab.core import hardware, quiet

__version__ = "0.1.0"

# Before anything imports TensorFlow: its CPU-only start-up lines are dropped (ganlab.core.quiet says why).
quiet.install()
# Also before TensorFlow: its fast oneDNN kernels on every x86 CPU, not only on AVX-512 ones.
hardware.enable_onednn()
