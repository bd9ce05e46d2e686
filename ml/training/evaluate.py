"""Metrics that a model cannot fool, on held-out cars: ranking (PR-AUC, ROC-AUC) and calibration (Brier) of the
eligible windows, and what the alerts do to failure episodes (ml/episodes.py: share warned before onset, lead
time, false alerts per healthy car-hour) at a threshold chosen on validation cars to meet a false-alarm budget.

Window metrics use only eligible windows (the car not in failure, the label known). Episode metrics take every
full window of the cars, as a live predictor would score them; ml/episodes.py leaves out what it does not judge.

Beside them, what an operator acts on: the confusion counts at the threshold (windows and episodes), episodes
warned per failure mode where the data name it, a reliability table (calibrated probability against observed
frequency), and whether the threshold's false-alarm rate held on the test cars (`threshold_transfer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

from ml.episodes import episode_leads, episode_report, threshold_for_budget
from ml.features import Series, window_ends
from ml.training.baseline import Scorer
from ml.training.calibration import brier
from ml.training.dataset import WindowSet
from ml.training.settings import FitSettings

TRADEOFF_POINTS = 25
RELIABILITY_BINS = 10
UNKNOWN_MODE = "unknown"
"""An episode whose onset reading names no failure mode, in data that carry modes."""


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
    """Episodes warned, lead times and false alerts when an alert is a probability at or above `threshold`; per
    failure mode (`by_mode`) where the series names the modes, else None."""
    spread, judged = _per_reading(series, ends, probabilities)
    alerts = judged & (spread >= threshold)
    report = episode_report(series, alerts, judged, horizon, window=window)
    figures = {key: _finite(value) for key, value in report.as_dict().items()}
    by_mode = warned_by_mode(series, episode_leads(series, alerts, judged, horizon, window=window))
    return {**figures, "lead_s": sorted(float(s) for s in report.leads_s), "by_mode": by_mode}


def warned_by_mode(series: Series, leads: dict[int, float | None]) -> dict[str, dict] | None:
    """{mode: {episodes, warned, warned_share, median_lead_s}} of the episodes `leads` holds (by onset index, as
    `episode_leads` gives them), the mode read at each onset; None when the series carries no failure modes."""
    if series.failure_mode is None:
        return None
    by_mode: dict[str, list[float | None]] = {}
    for onset, lead in leads.items():
        by_mode.setdefault(str(series.failure_mode[onset]) or UNKNOWN_MODE, []).append(lead)
    result = {}
    for mode in sorted(by_mode):
        warned = [lead for lead in by_mode[mode] if lead is not None]
        result[mode] = {
            "episodes": len(by_mode[mode]),
            "warned": len(warned),
            "warned_share": len(warned) / len(by_mode[mode]),
            "median_lead_s": float(np.median(warned)) if warned else None,
        }
    return result


def window_confusion(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, int]:
    """Eligible windows at the threshold: true and false positives, false and true negatives."""
    positive, predicted = labels.astype(bool), probabilities >= threshold
    return {
        "tp": int(np.sum(positive & predicted)),
        "fp": int(np.sum(~positive & predicted)),
        "fn": int(np.sum(positive & ~predicted)),
        "tn": int(np.sum(~positive & ~predicted)),
    }


def episode_confusion(episodes: dict) -> dict[str, int | None]:
    """Episodes warned and missed, the false alarms and the suppressed alerts (held back while a car reports a
    failure and for W readings after it: ml/episodes.py), from `episode_metrics`' figures."""
    return {
        "warned": episodes["warned"],
        "missed": episodes["episodes"] - episodes["warned"],
        "false_alarms": episodes["false_alerts"],
        "suppressed": episodes["suppressed_alerts"],
    }


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict]:
    """The reliability table: probabilities in `bins` equal bins of [0, 1]; per non-empty bin its windows, the
    mean probability and the observed frequency of the label (a calibrated model has the two close)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, probabilities, side="right") - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        members = which == b
        if members.any():
            table.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "windows": int(members.sum()),
                    "mean_probability": float(probabilities[members].mean()),
                    "observed": float(labels[members].mean()),
                }
            )
    return table


def car_false_alarms(
    series: Series, ends: np.ndarray, probabilities: np.ndarray, threshold: float, horizon: int, *, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """(false alarms, healthy hours) of each car at the threshold, each car counted by `episode_report` (the one
    definition of a false alarm) judging that car's readings only, for a car bootstrap of the rate."""
    spread, judged = _per_reading(series, ends, probabilities)
    alerts = judged & (spread >= threshold)
    first = np.flatnonzero(np.r_[True, series.car_ids[1:] != series.car_ids[:-1]])  # a car's readings are together
    bounds = np.append(first, len(series))
    counts, hours = [], []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        car = np.zeros(len(series), bool)
        car[start:stop] = True
        report = episode_report(series, alerts & car, judged & car, horizon, window=window)
        counts.append(report.false_alerts)
        hours.append(report.healthy_hours)
    return np.asarray(counts, np.float64), np.asarray(hours, np.float64)


def alarm_rate(counts: np.ndarray, hours: np.ndarray, resamples: int, seed: int) -> dict:
    """False alerts per healthy car-hour of these cars, with a 95 % interval from resampling the cars."""
    total = float(hours.sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(hours), (resamples, len(hours)))
    picked_hours = hours[picks].sum(axis=1)
    rates = counts[picks].sum(axis=1)[picked_hours > 0] / picked_hours[picked_hours > 0]
    low, high = np.quantile(rates, (0.025, 0.975)) if len(rates) else (np.nan, np.nan)
    return {
        "cars": len(hours),
        "healthy_car_hours": total,
        "false_alerts": int(counts.sum()),
        "rate": _finite(float(counts.sum()) / total if total else float("nan")),
        "interval": [_finite(float(low)), _finite(float(high))],
    }


def threshold_transfer(chosen_on: dict, test: dict, budget: float) -> dict:
    """The threshold's false-alarm rate where it was chosen (validation cars) and on the test cars, as
    `alarm_rate` gives them: `transfer_error` = test rate - budget, `gap` = test rate - rate where chosen."""
    rate = test["rate"]
    return {
        "budget": budget,
        "chosen_on": chosen_on,
        "test": test,
        "transfer_error": None if rate is None else rate - budget,
        "gap": None if rate is None or chosen_on["rate"] is None else rate - chosen_on["rate"],
    }


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


@dataclass
class Evaluated:
    """One model on the held-out cars: its metrics, its scores at the test cars' eligible windows, its plots' data."""

    metrics: dict[str, Any]
    scores: np.ndarray
    curves: dict[str, np.ndarray] | None
    tradeoff: list[dict]


def evaluate_model(
    raw: Scorer, published: Scorer, parts: dict[str, Series], sets: dict[str, WindowSet], settings: FitSettings
) -> Evaluated:
    """Threshold for the false-alarm budget on the validation cars, then window and episode metrics on the test
    cars, of the published (calibrated) scores; the Brier score of the raw ones beside them; the threshold's
    false-alarm rate on both sets of cars (`threshold_transfer`)."""
    window, horizon, budget = settings.window, settings.horizon, settings.false_alarm_budget
    validation = parts["validation"]
    ends = window_ends(validation, window)
    chosen_on = published(validation, ends)
    threshold = budget_threshold(validation, ends, chosen_on, horizon, budget, window=window)
    rate_chosen_on = alarm_rate(
        *car_false_alarms(validation, ends, chosen_on, threshold, horizon, window=window),
        settings.bootstrap,
        settings.seed,
    )
    test, eligible = parts["test"], sets["test"]
    ends = window_ends(test, window)
    scores = published(test, ends)
    at_eligible = scores[np.searchsorted(ends, eligible.ends)]
    metrics = classification_metrics(eligible.labels, at_eligible, threshold)
    metrics["brier_uncalibrated"] = brier(eligible.labels, raw(test, eligible.ends))
    metrics["episodes"] = episode_metrics(test, ends, scores, threshold, horizon, window=window)
    metrics["confusion"] = {
        "windows": window_confusion(eligible.labels, at_eligible, threshold),
        "episodes": episode_confusion(metrics["episodes"]),
    }
    metrics["reliability"] = reliability(eligible.labels, at_eligible)
    rate_test = alarm_rate(
        *car_false_alarms(test, ends, scores, threshold, horizon, window=window), settings.bootstrap, settings.seed
    )
    metrics["threshold_transfer"] = threshold_transfer(rate_chosen_on, rate_test, budget)
    return Evaluated(
        metrics, at_eligible, curves(eligible.labels, at_eligible), tradeoff(test, ends, scores, horizon, window=window)
    )
