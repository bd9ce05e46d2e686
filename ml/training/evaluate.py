"""Metrics that a model cannot fool: ranking (PR-AUC, ROC-AUC), decisions at a threshold chosen on validation
cars, and how early the first alert comes before a failure."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ml.features import Series, failure_onsets


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold with the best F1 on these (validation) windows; 0.5 when they hold a single class."""
    if labels.min(initial=0) == labels.max(initial=0):
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """pr_auc (average precision), roc_auc (None when one class is missing), precision/recall/f1 at `threshold`."""
    both_classes = 0 < labels.sum() < len(labels)
    predicted = probabilities >= threshold
    return {
        "pr_auc": float(average_precision_score(labels, probabilities)) if both_classes else None,
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both_classes else None,
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "threshold": float(threshold),
        "windows": int(len(labels)),
        "positives": int(labels.sum()),
        "prevalence": float(labels.mean()) if len(labels) else None,
    }


def lead_times(series: Series, ends: np.ndarray, probabilities: np.ndarray, threshold: float, horizon: int) -> dict:
    """For each failure episode: the first alert in the `horizon` readings before its onset (or at it).

    lead = onset - first alert, in readings and in seconds of event time. Alerts earlier than the horizon are
    false alarms by the label's definition and do not count; an episode without an alert is missed."""
    alert = np.zeros(len(series), dtype=bool)
    alert[ends] = probabilities >= threshold
    leads, seconds, episodes = [], [], 0
    for onset in failure_onsets(series):
        first_possible = max(int(series.run_start[onset]), int(onset) - horizon)
        episodes += 1
        hits = np.flatnonzero(alert[first_possible : onset + 1])
        if len(hits):
            first = first_possible + int(hits[0])
            leads.append(onset - first)
            seconds.append((series.event_time[onset] - series.event_time[first]) / 1000)
    return {
        "failure_episodes": episodes,
        "episodes_alerted": len(leads),
        "mean_lead_time_readings": float(np.mean(leads)) if leads else None,
        "mean_lead_time_s": float(np.mean(seconds)) if seconds else None,
    }


def curves(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray] | None:
    """Precision-recall and ROC curve points for the plots (None when one class is missing)."""
    from sklearn.metrics import roc_curve

    if not 0 < labels.sum() < len(labels):
        return None
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    fpr, tpr, _ = roc_curve(labels, probabilities)
    return {"precision": precision, "recall": recall, "fpr": fpr, "tpr": tpr}
