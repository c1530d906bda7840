"""A small CNN MNIST classifier: the measuring stick for sample quality (features and p(y|x))."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ganlab.core.config import ClassifierConfig
from ganlab.nets.inference import predict

FEATURES = "features"
CONV_FEATURES = "conv_features"


def build_classifier() -> keras.Model:
    """Conv32-Pool-Conv64-Pool-Dense128 (the feature layer)-Dense10 softmax; ~99.2% on MNIST."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(name=CONV_FEATURES),
            layers.Dropout(0.3),
            layers.Dense(128, activation="relu", name=FEATURES),
            layers.Dropout(0.3),
            layers.Dense(10, activation="softmax", dtype="float32"),
        ],
        name="classifier",
    )


def train_classifier(cfg: ClassifierConfig, x_train, y_train, x_test, y_test) -> tuple[keras.Model, dict]:
    """Train on the prepared train set; return (model, {"test_accuracy", "test_loss", ...})."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_classifier()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    n = min(cfg.n_train, len(x_train))
    model.fit(np.asarray(x_train[:n]), np.asarray(y_train[:n]), batch_size=cfg.batch_size, epochs=cfg.epochs,
              verbose=2, shuffle=True)
    loss, acc = model.evaluate(np.asarray(x_test), np.asarray(y_test), batch_size=1000, verbose=0)
    return model, {"test_accuracy": round(float(acc), 5), "test_loss": round(float(loss), 5), "train_images": n}


def feature_model(model: keras.Model, *names: str) -> keras.Model:
    """`model` (the classifier, built or loaded) as a model that returns the outputs of the layers `names`,
    then its probabilities, from one pass through its layers."""
    # Not keras.Model(model.inputs, [model.get_layer(name).output, ...]): on a classifier loaded from its
    # file, that graph runs the layers again for each output (three passes for three outputs, 2.7x the
    # time of one, same numbers; docs/benchmarks.md).
    x = inputs = keras.Input(model.inputs[0].shape[1:])
    outputs = {}
    for layer in model.layers:
        x = outputs[layer.name] = layer(x)
    return keras.Model(inputs, [outputs[name] for name in names] + [x])


def embedder(model: keras.Model):
    """A function of images returning (penultimate features, flattened conv features, softmax probabilities)."""
    features = feature_model(model, FEATURES, CONV_FEATURES)

    def embed(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats, conv_feats, probs = predict(features, np.asarray(images, np.float32))
        # The conv features stay float32: their k-NN distances (`metrics.manifold`) are most of `evaluate`'s
        # time, and a float32 product runs at twice float64's rate.
        return feats.astype(np.float64), conv_feats, probs.astype(np.float64)

    return embed
