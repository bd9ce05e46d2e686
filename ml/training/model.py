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
from ml.training.contrasts import ratio_pairs, tire_pairs

LOGIT_LAYER = "logit"


RATIO_GAIN = 5.0
"""Scale of the unit-normalised accelerometer contrast: (a - b) / sqrt(a² + b²) is about log(a / b) / sqrt(2), and a
healthy reading's log ratio spreads about 0.2 (simulator/README.md), so the gain brings it near unit scale."""


def _fixed(layer: keras.layers.Layer, tensor: keras.KerasTensor, kernel: np.ndarray) -> keras.KerasTensor:
    """A non-trainable, bias-free Dense with a given kernel: a linear map of the raw readings, saved as weights."""
    out = layer(tensor)
    layer.set_weights([kernel.astype("float32")])
    return out


def _contrasts(
    inputs: keras.KerasTensor, window: int, features: Sequence[str], std: np.ndarray
) -> keras.KerasTensor | None:
    """[batch, W, C]: each axle's tire pressure difference (in the pair's mean std), then each axle's
    accelerometer RMS and peak contrast (a - b) / sqrt(a² + b²), the ratio of the two without a log (no built-in
    layer takes one): a UnitNormalization of the pair. None when the model reads no pair."""
    n_features = len(features)
    parts = []
    tires = tire_pairs(features)
    if tires:
        kernel = np.zeros((n_features, len(tires)))
        for column, (a, b) in enumerate(tires):
            scale = (std[a] + std[b]) / 2
            kernel[a, column], kernel[b, column] = 1 / scale, -1 / scale
        parts.append(
            _fixed(keras.layers.Dense(len(tires), use_bias=False, trainable=False, name="tire_pairs"), inputs, kernel)
        )
    ratios = ratio_pairs(features)
    if ratios:
        select = np.zeros((n_features, 2 * len(ratios)))
        for column, (a, b) in enumerate(ratios):
            select[a, 2 * column], select[b, 2 * column + 1] = 1.0, 1.0
        chosen = _fixed(
            keras.layers.Dense(2 * len(ratios), use_bias=False, trainable=False, name="ratio_pairs"), inputs, select
        )
        pairs_ = keras.layers.Reshape((window, len(ratios), 2), name="pairs")(chosen)
        unit = keras.layers.UnitNormalization(axis=-1, name="pair_unit")(pairs_)
        contrast = _fixed(
            keras.layers.Dense(1, use_bias=False, trainable=False, name="pair_contrast"),
            unit,
            np.array([[RATIO_GAIN], [-RATIO_GAIN]]),
        )
        parts.append(keras.layers.Reshape((window, len(ratios)), name="ratio_contrasts")(contrast))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(axis=-1, name="contrasts")(parts)


def build_model(
    window: int,
    mean: Sequence[float],
    std: Sequence[float],
    units: int = 32,
    dropout: float = 0.3,
    noise: float = 0.2,
    learning_rate: float = 1e-3,
    features: Sequence[str] = (),
    pooled: bool = True,
    levels: bool = False,
    per_step: int = 0,
) -> keras.Model:
    """LSTM over the window's changes and the corners' contrasts, beside the last reading's scaled levels and the
    contrasts' window means; a logit, then a sigmoid. `features` names the columns (metadata's `features`): the
    contrasts need to know which are partners; without names, none.

    Compiled for plain binary cross-entropy: no class weights, so that its probabilities stay close to
    frequencies and the calibration on validation cars has little to correct."""
    n_features = len(mean)
    inputs = keras.Input(shape=(window, n_features), name=INPUT_NAME, dtype="float32")
    scaled = keras.layers.Normalization(
        axis=-1, mean=np.asarray(mean, "float32"), variance=np.square(np.asarray(std, "float32")), name="scaling"
    )(inputs)
    scaled = keras.layers.GaussianNoise(noise, name="noise")(scaled)  # active in training only
    later = keras.layers.Cropping1D((1, 0), name="readings_1_on")(scaled)  # x_1 .. x_{W-1}
    earlier = keras.layers.Cropping1D((0, 1), name="readings_to_last_but_one")(scaled)  # x_0 .. x_{W-2}
    first = keras.layers.Flatten(name="first")(keras.layers.Cropping1D((0, window - 1), name="first_reading")(scaled))
    first = keras.layers.RepeatVector(window - 1, name="first_repeated")(first)
    since_first = keras.layers.Subtract(name="since_first")([later, first])  # x_t - x_0
    step = keras.layers.Subtract(name="step")([later, earlier])  # x_t - x_{t-1}
    sequence = [since_first, step]
    head = []
    contrasts = _contrasts(inputs, window, tuple(features), np.asarray(std, "float64")) if features else None
    if contrasts is not None:
        contrasts = keras.layers.GaussianNoise(noise, name="contrast_noise")(contrasts)
        sequence.append(keras.layers.Cropping1D((1, 0), name="contrasts_1_on")(contrasts))
        if pooled:
            head.append(keras.layers.GlobalAveragePooling1D(name="contrast_means")(contrasts))
    if levels:
        sequence.append(later)
    changes = keras.layers.Concatenate(axis=-1, name="changes")(sequence)
    if per_step:
        changes = keras.layers.Dense(per_step, activation="relu", name="per_reading")(changes)
        if pooled:
            head.append(keras.layers.GlobalAveragePooling1D(name="per_reading_means")(changes))
    trend = keras.layers.LSTM(units, name="lstm")(changes)
    latest = keras.layers.Flatten(name="last_reading")(keras.layers.Cropping1D((window - 1, 0), name="last")(scaled))
    hidden = keras.layers.Dropout(dropout)(keras.layers.Concatenate(name="trend_and_latest")([trend, latest, *head]))
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
