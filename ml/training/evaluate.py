"""Metrics that a model cannot fool, on held-out cars: ranking (PR-AUC, ROC-AUC) and calibration (Brier) of the
eligible windows, and what the alerts do to failure episodes (ml/episodes.py: share warned before onset, lead
time, false alerts per healthy car-hour) at a threshold chosen on validation cars to meet a false-alarm budget.

Window metrics use only eligible windows (the car not in failure, the label known). Episode metrics take every
full window of the cars, as a live predictor would score them; ml/episodes.py leaves out what it does not judge.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from ml.episodes import episode_report, threshold_for_budget
from ml.features import Series
from ml.training.calibration import brier

TRADEOFF_POINTS = 25


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """pr_auc (average precision), roc_auc (None when one class is missing), precision/recall/f1 at `threshold`,
    and the Brier score of the probabilities."""
    both_classes = 0 < labels.sum() < len(labels)
    predicted = probabilities >= threshold
    return {
        "pr_auc": float(average_precision_score(labels, probabilities)) if both_classes else None,
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both_classes else None,
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "brier": brier(labels, probabilities),
        "threshold": float(threshold),
        "windows": int(len(labels)),
        "positives": int(labels.sum()),
        "prevalence": float(labels.mean()) if len(labels) else None,
    }


def _finite(value: float | int | list[float]) -> float | int | list[float] | None:
    """NaN (no episode, none warned) as None: metadata.json stays JSON that every language reads."""
    return None if isinstance(value, float) and np.isnan(value) else value


def _per_reading(series: Series, ends: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values per reading, judged per reading) from values at window ends."""
    spread = np.zeros(len(series), np.float32)
    judged = np.zeros(len(series), bool)
    spread[ends] = values
    judged[ends] = True
    return spread, judged


def budget_threshold(
    series: Series, ends: np.ndarray, probabilities: np.ndarray, horizon: int, budget: float, *, window: int
) -> float:
    """The lowest threshold whose false alerts per healthy car-hour meet `budget` on these (validation) cars."""
    spread, judged = _per_reading(series, ends, probabilities)
    return threshold_for_budget(series, spread, judged, horizon, budget, window=window)


def episode_metrics(
    series: Series, ends: np.ndarray, probabilities: np.ndarray, threshold: float, horizon: int, *, window: int
) -> dict:
    """Episodes warned, lead times and false alerts when an alert is a probability at or above `threshold`."""
    spread, judged = _per_reading(series, ends, probabilities)
    report = episode_report(series, judged & (spread >= threshold), judged, horizon, window=window)
    figures = {key: _finite(value) for key, value in report.as_dict().items()}
    return {**figures, "lead_s": sorted(float(s) for s in report.leads_s)}


def tradeoff(series: Series, ends: np.ndarray, probabilities: np.ndarray, horizon: int, *, window: int) -> list[dict]:
    """Episode figures over a range of thresholds (quantiles of the scores): what a stricter or looser
    false-alarm budget would buy, for the trade-off plot."""
    levels = np.unique(np.quantile(probabilities, 1 - np.logspace(-3.5, -0.3, TRADEOFF_POINTS)))
    spread, judged = _per_reading(series, ends, probabilities)
    points = []
    for threshold in levels:
        report = episode_report(series, judged & (spread >= threshold), judged, horizon, window=window)
        points.append(
            {
                "threshold": float(threshold),
                "false_alerts_per_healthy_car_hour": _finite(report.false_alerts_per_car_hour),
                "warned_share": _finite(report.warned_share),
                "median_lead_s": _finite(report.median_lead_s),
            }
        )
    return points


def bootstrap_pr_auc_difference(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, cars: np.ndarray, resamples: int, seed: int
) -> dict:
    """PR-AUC(first) - PR-AUC(second) on the same windows, with a 95 % interval from resampling CARS (windows of
    one car are not independent). Resamples that hold a single class are skipped."""
    unique, car_index = np.unique(cars, return_inverse=True)
    members = [np.flatnonzero(car_index == i) for i in range(len(unique))]
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        picked = np.concatenate([members[i] for i in rng.integers(0, len(unique), len(unique))])
        y = labels[picked]
        if 0 < y.sum() < len(y):
            differences.append(average_precision_score(y, first[picked]) - average_precision_score(y, second[picked]))
    point = float(average_precision_score(labels, first) - average_precision_score(labels, second))
    if not differences:
        return {"difference": point, "low": None, "high": None, "resamples": 0, "share_positive": None}
    low, high = np.quantile(differences, (0.025, 0.975))
    return {
        "difference": point,
        "low": float(low),
        "high": float(high),
        "resamples": len(differences),
        "share_positive": float(np.mean(np.asarray(differences) > 0)),
    }


def curves(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray] | None:
    """Precision-recall and ROC curve points for the plots (None when one class is missing)."""
    if not 0 < labels.sum() < len(labels):
        return None
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    fpr, tpr, _ = roc_curve(labels, probabilities)
    return {"precision": precision, "recall": recall, "fpr": fpr, "tpr": tpr}
