"""The baseline every run measures beside the LSTM: logistic regression on the last reading of each window."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ml.training.dataset import TrainingDataError, WindowSet


def fit_baseline(train: WindowSet, seed: int) -> Pipeline:
    """Scaled features, classes balanced like the LSTM's sample weights."""
    model = make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
    )
    labels = train.labels.astype(int)
    if labels.min(initial=0) == labels.max(initial=0):
        raise TrainingDataError("the training cars hold a single class: no failure to learn from")
    model.fit(train.last_readings(), labels)
    return model


def predict_baseline(model: Pipeline, readings: np.ndarray) -> np.ndarray:
    return model.predict_proba(readings)[:, 1].astype(np.float32)
