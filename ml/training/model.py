"""The failure model's architecture: raw sensor windows in, the probability of a failure within the horizon out.

Scaling lives inside the model (a Normalization layer with the training data's mean and std), so every consumer
of the artifact (the predictor, TF Serving, another language) feeds raw sensor values in metadata's feature order.
Only training builds a model; every other program loads the artifact's SavedModel signature (ml/artifact.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from ml.artifact import INPUT_NAME, OUTPUT_NAME


def build_model(
    window: int,
    mean: Sequence[float],
    std: Sequence[float],
    units: int = 32,
    dropout: float = 0.2,
    learning_rate: float = 2e-3,
) -> keras.Model:
    """One LSTM layer over a window of W readings x F features; the last state decides."""
    n_features = len(mean)
    inputs = keras.Input(shape=(window, n_features), name=INPUT_NAME, dtype="float32")
    scaled = keras.layers.Normalization(
        axis=-1, mean=np.asarray(mean, "float32"), variance=np.square(np.asarray(std, "float32")), name="scaling"
    )(inputs)
    trend = keras.layers.LSTM(units, name="lstm")(scaled)
    # The last reading also goes straight to the output: the LSTM adds the window's history to what the latest
    # values already say, instead of having to relearn them through its gates.
    latest = keras.layers.Flatten(name="last_reading")(keras.layers.Cropping1D((window - 1, 0))(scaled))
    hidden = keras.layers.Dropout(dropout)(keras.layers.Concatenate()([trend, latest]))
    outputs = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME)(hidden)
    model = keras.Model(inputs, outputs, name="failure_lstm")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(curve="PR", name="pr_auc"), keras.metrics.AUC(name="roc_auc")],
    )
    return model
