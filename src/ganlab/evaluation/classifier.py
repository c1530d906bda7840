"""A small CNN MNIST classifier: the measuring stick for sample quality (features and p(y|x))."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ganlab.core.config import ClassifierConfig

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
