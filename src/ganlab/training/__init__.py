"""The train stage: both backends' steps, devices, callbacks, checkpoints and quality over training."""
