"""Platt scaling on validation cars: p = sigmoid(slope * logit + intercept).

A published probability should mean a frequency: of the windows scored 0.3, about 30 % see a failure start
within the horizon. Class weights break that (they inflate every probability), and even an unweighted model
is over- or under-confident on cars it never saw. Two parameters fitted on the validation cars' logits fix the
scale without changing the ranking (PR-AUC, ROC-AUC) when the slope is positive. The LSTM carries them inside
the Keras model (ml/training/model.py: with_calibration); the baselines' are applied here, for their Brier scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

log = logging.getLogger(__name__)

EPSILON = 1e-6


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Platt:
    slope: float = 1.0
    intercept: float = 0.0
    fitted: bool = False
    """False: the validation cars held a single class, so the identity is kept."""

    def apply_to_logits(self, logits: np.ndarray) -> np.ndarray:
        return (1 / (1 + np.exp(-(self.slope * np.asarray(logits, np.float64) + self.intercept)))).astype(np.float32)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return self.apply_to_logits(logit(probabilities))

    def as_dict(self) -> dict:
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept, "fitted": self.fitted}


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> Platt:
    """Logistic regression of the labels on the logits, practically unregularised (C=1e6)."""
    if labels.min(initial=0) == labels.max(initial=0):
        log.warning("validation windows hold a single class: probabilities are published uncalibrated")
        return Platt()
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(np.asarray(logits, np.float64).reshape(-1, 1), labels)
    return Platt(float(fit.coef_[0, 0]), float(fit.intercept_[0]), fitted=True)


def brier(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Mean squared error of the probabilities: lower is better; None without windows."""
    return float(brier_score_loss(labels, probabilities)) if len(labels) else None
