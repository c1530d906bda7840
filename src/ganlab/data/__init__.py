"""MNIST: where it comes from (checked by SHA-256) and the prepared arrays every later stage reads."""
