"""What the classifier sees in a set of images: its features and probabilities, the inputs of every
quality figure (`evaluate`, and the train stage's watch). Apart from `classifier`, so that the stage that
trains the classifier does not depend on how its features are read."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from ganlab.evaluation.classifier import CONV_FEATURES
from ganlab.nets.inference import predict


def feature_model(model: keras.Model, *names: str) -> keras.Model:
    """`model` (the classifier, a chain of layers, built or loaded) as a model that returns the outputs of
    the layers `names`, then its probabilities, from one pass through its layers."""
    # Not keras.Model(model.inputs, [model.get_layer(name).output, ...]): on a classifier loaded from its
    # file, that graph runs the layers again for each output (three passes for three outputs, 2.7x the
    # time of one, the same numbers; docs/benchmarks.md).
    x = inputs = keras.Input(model.inputs[0].shape[1:])
    outputs = {}
    for layer in model.layers:
        x = outputs[layer.name] = layer(x)
    return keras.Model(inputs, [outputs[name] for name in names] + [x])


def embedder(model: keras.Model, *names: str) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """A function of images returning the outputs of the classifier's layers `names`, then its probabilities:
    float64 for the Fréchet distance and the scores, but the conv features, which stay float32: their k-NN
    distances (`metrics.manifold`) were most of `evaluate`'s time, and a float32 product does twice the
    multiply-adds a cycle that a float64 one does."""
    features = feature_model(model, *names)
    keep = [name == CONV_FEATURES for name in names] + [False]

    def embed(images: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = keras.tree.flatten(predict(features, np.asarray(images, np.float32)))  # one or several
        return tuple(out if kept else out.astype(np.float64) for out, kept in zip(outputs, keep, strict=True))

    return embed
