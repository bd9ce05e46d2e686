"""The baselines every run measures beside the LSTM, on the same cars and windows.

- logistic regression on the last reading: what the latest values alone say;
- gradient boosting (HistGradientBoostingClassifier) on window summary features (last, mean, std, min, max and
  least-squares slope of every sensor over the window): the bar the LSTM must clear, since it sees the window's
  history too, in a form a tree can split on;
- the prevalence floor: a constant score, the training windows' share of positives. It ranks nothing, so its
  PR-AUC is the test prevalence. (The rule "alert while the car is already failing" no longer scores anything:
  windows that end in failure are not eligible.)

Each is a function of (series, ends): the windows of `series` that end at `ends`, scored in chunks so that the
summary features of a large range never need every window in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ml.features import Series, gather_windows
from ml.training.dataset import TrainingDataError, WindowSet

Scorer = Callable[[Series, np.ndarray], np.ndarray]
"""Probabilities [len(ends)] for the windows of a series that end at `ends`."""

CHUNK = 8192
SUMMARIES = ("last", "mean", "std", "min", "max", "slope")


def summary_features(windows: np.ndarray) -> np.ndarray:
    """[N, W, F] -> [N, 6F]: last, mean, std, min, max and slope (per reading) of every sensor."""
    width = windows.shape[1]
    centred = np.arange(width, dtype=np.float32) - (width - 1) / 2
    slope = np.einsum("nwf,w->nf", windows, centred) / max(float(np.sum(centred**2)), 1.0)
    return np.concatenate(
        [windows[:, -1], windows.mean(1), windows.std(1), windows.min(1), windows.max(1), slope], axis=1
    )


def window_summaries(series: Series, ends: np.ndarray, window: int) -> np.ndarray:
    parts = [
        summary_features(gather_windows(series.features, ends[i : i + CHUNK], window))
        for i in range(0, len(ends), CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 6 * series.features.shape[1]), np.float32)


def _labels(train: WindowSet) -> np.ndarray:
    labels = train.labels.astype(int)
    if labels.min(initial=0) == labels.max(initial=0):
        raise TrainingDataError("the training cars hold a single class: no failure to learn from")
    return labels


def fit_logistic(train: WindowSet, seed: int) -> Scorer:
    """Scaled last readings, classes balanced (as the baseline always was: its probabilities are inflated, which
    the report's Brier scores show)."""
    model = make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
    )
    model.fit(train.last_readings(), _labels(train))
    return lambda series, ends: model.predict_proba(series.features[ends])[:, 1].astype(np.float32)


def fit_gbm(train: WindowSet, seed: int) -> Scorer:
    """Gradient boosting on window summaries, sklearn's defaults (early stopping on an internal split)."""
    model = HistGradientBoostingClassifier(random_state=seed)
    model.fit(window_summaries(train.series, train.ends, train.window), _labels(train))
    return lambda series, ends: model.predict_proba(window_summaries(series, ends, train.window))[:, 1].astype(
        np.float32
    )


def fit_prevalence(train: WindowSet) -> Scorer:
    """The floor: every window gets the training windows' prevalence."""
    prevalence = float(train.labels.mean())
    return lambda series, ends: np.full(len(ends), prevalence, np.float32)
