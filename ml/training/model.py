"""The failure model's architecture: raw sensor windows in, the probability that a failure episode starts within
the next H readings out.

Scaling lives inside the model (a Normalization layer with the training data's mean and std), and so does the
calibration (`with_calibration`), so every consumer of the artifact (the predictor, TF Serving, another
language) feeds raw sensor values in metadata's feature order and gets a calibrated probability. Built-in Keras
layers only: model.keras reloads with safe_mode on. Only training builds a model; every other program loads the
artifact's SavedModel signature (ml/artifact.py).

Why this shape (offline experiments on simulator fleets, ml/README.md): an LSTM over raw levels learned to
recognise cars rather than lead-ups; over CHANGES (each reading minus the window's first one, and minus the
previous one) it sees drifts that do not identify the car. The last reading's levels go straight to the output, a
linear path like the logistic baseline's. Gaussian noise on the scaled readings (training only) keeps it from
memorising the training cars' exact values.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from ml.artifact import INPUT_NAME, OUTPUT_NAME

LOGIT_LAYER = "logit"
SCALING_LAYER = "scaling"


def build_model(
    window: int,
    mean: Sequence[float],
    std: Sequence[float],
    units: int = 32,
    dropout: float = 0.3,
    noise: float = 0.2,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """LSTM over the window's changes, beside the last reading's scaled levels; a logit, then a sigmoid.

    Compiled for plain binary cross-entropy: no class weights, so that its probabilities stay close to
    frequencies and the calibration on validation cars has little to correct."""
    n_features = len(mean)
    inputs = keras.Input(shape=(window, n_features), name=INPUT_NAME, dtype="float32")
    scaled = keras.layers.Normalization(
        axis=-1, mean=np.asarray(mean, "float32"), variance=np.square(np.asarray(std, "float32")), name=SCALING_LAYER
    )(inputs)
    scaled = keras.layers.GaussianNoise(noise, name="noise")(scaled)  # active in training only
    later = keras.layers.Cropping1D((1, 0), name="readings_1_on")(scaled)  # x_1 .. x_{W-1}
    earlier = keras.layers.Cropping1D((0, 1), name="readings_to_last_but_one")(scaled)  # x_0 .. x_{W-2}
    first = keras.layers.Flatten(name="first")(keras.layers.Cropping1D((0, window - 1), name="first_reading")(scaled))
    first = keras.layers.RepeatVector(window - 1, name="first_repeated")(first)
    since_first = keras.layers.Subtract(name="since_first")([later, first])  # x_t - x_0
    step = keras.layers.Subtract(name="step")([later, earlier])  # x_t - x_{t-1}
    changes = keras.layers.Concatenate(axis=-1, name="changes")([since_first, step])
    trend = keras.layers.LSTM(units, name="lstm")(changes)
    latest = keras.layers.Flatten(name="last_reading")(keras.layers.Cropping1D((window - 1, 0), name="last")(scaled))
    hidden = keras.layers.Dropout(dropout)(keras.layers.Concatenate(name="trend_and_latest")([trend, latest]))
    logit = keras.layers.Dense(1, name=LOGIT_LAYER)(hidden)
    outputs = keras.layers.Activation("sigmoid", name=OUTPUT_NAME)(logit)
    model = keras.Model(inputs, outputs, name="failure_lstm")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(curve="PR", name="pr_auc"), keras.metrics.AUC(name="roc_auc")],
    )
    return model


def logit_model(model: keras.Model) -> keras.Model:
    """The same weights up to the logit: what Platt scaling is fitted on."""
    return keras.Model(model.inputs, model.get_layer(LOGIT_LAYER).output, name="failure_lstm_logit")


def with_calibration(model: keras.Model, slope: float, intercept: float) -> keras.Model:
    """p = sigmoid(slope * logit + intercept) as one frozen Dense(1) on the logit (Platt scaling, fitted on
    validation cars): the published model, still raw windows in, calibrated probability out."""
    platt = keras.layers.Dense(1, name="platt", trainable=False)
    calibrated = keras.layers.Activation("sigmoid", name="calibrated_probability")(
        platt(model.get_layer(LOGIT_LAYER).output)
    )
    platt.set_weights([np.array([[slope]], "float32"), np.array([intercept], "float32")])
    return keras.Model(model.inputs, calibrated, name="failure_lstm_calibrated")


def copy_learned_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """A warm start: the weights of `source`'s layers into `target`'s layers of the same name and shapes, the
    scaling excepted (the target keeps the scaling of its own training data). Returns the layers copied; none when
    the models read other features (the LSTM's input width differs)."""
    copied = []
    for layer in target.layers:
        weights = layer.get_weights()
        if not weights or layer.name == SCALING_LAYER:
            continue
        try:
            theirs = source.get_layer(layer.name).get_weights()
        except ValueError:  # no layer of that name
            continue
        if [w.shape for w in theirs] == [w.shape for w in weights]:
            layer.set_weights(theirs)
            copied.append(layer.name)
    return copied
