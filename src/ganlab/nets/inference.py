"""Running a Keras model on numpy arrays, a batch at a time, on either backend."""

from __future__ import annotations

import operator

import keras
import numpy as np


def predict(model: keras.Model, inputs, batch: int = 1000):
    """`model`'s outputs (numpy) for `inputs` (an array or a dict of arrays), `batch` rows a call.

    The same numbers as `model.predict`, which on TensorFlow runs each call through a new tf.data
    pipeline: about 40 ms a call, and now and then a call on half the cores (docs/benchmarks.md)."""
    rows = len(keras.tree.flatten(inputs)[0])
    if not rows:
        raise ValueError(f"predict: no rows to give {model.name}; pass at least one")
    parts = [model.predict_on_batch(keras.tree.map_structure(operator.itemgetter(slice(s, s + batch)), inputs))
             for s in range(0, rows, batch)]
    return keras.tree.map_structure(lambda *chunks: np.concatenate(chunks), *parts)
