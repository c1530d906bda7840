"""ganlab: train GANs on MNIST with DVC and MLflow. Stages live in `pipeline/`, logic here."""

from ganlab import quiet

__version__ = "0.1.0"

# Before anything imports TensorFlow: its CPU-only start-up lines are dropped (ganlab.quiet says why).
quiet.install()
