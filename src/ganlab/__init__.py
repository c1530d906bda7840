"""ganlab: train GANs on MNIST with DVC and MLflow. Stages live in `pipeline/`, logic here."""

__version__ = "0.1.0"
