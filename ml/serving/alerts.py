"""Alerts of delivered predictions: counted, and logged on the `ml.alerts` logger without drowning the log.

A prediction at or above the threshold is an alert (`predictor_alerts_total`). A car is logged
(`ALERT car <id>: failure probability p >= t (...)`) when it crosses the threshold, and again every `repeat`
seconds (ML_ALERT_REPEAT) while it stays above; a car whose readings lie out of distribution (ml/ood.py) is logged
the same way when it enters that state (`car <id>: OUT OF DISTRIBUTION: ...: its failure probability p means
little`). A log line for every reading of such a car would drown the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np

from ml.ood import OodScores, describe
from ml.serving import metrics

alerts = logging.getLogger("ml.alerts")


class Repeats:
    """Which cars to log now: a car is logged when it enters a state (an alert, data out of distribution), then
    every `repeat` seconds while it stays in it."""

    def __init__(self, repeat: float) -> None:
        self.repeat = repeat
        self._last: dict[str, float] = {}

    def due(self, car: str, now: float) -> bool:
        if now - self._last.get(car, -np.inf) < self.repeat:
            return False
        self._last[car] = now
        return True

    def left(self, cars: Iterable[str]) -> None:
        """These cars are out of the state: their next entry is logged at once."""
        if self._last:
            for car in set(cars) & self._last.keys():
                del self._last[car]


class AlertLog:
    """The alert lines of one predictor; `ood_threshold` is only quoted in the out-of-distribution lines."""

    def __init__(self, repeat: float, ood_threshold: float) -> None:
        self.ood_threshold = ood_threshold
        self.alerting = Repeats(repeat)
        self.out_of_distribution = Repeats(repeat)

    def account(self, predictions: list[dict], ood: OodScores, threshold: float) -> None:
        """Count and log the alerts of a batch whose predictions Kafka confirmed (`ood`: their OOD scores)."""
        now = time.monotonic()
        alerting = [p for p in predictions if p["failure_predicted"]]
        metrics.ALERTS.inc(len(alerting))
        # a car back under the threshold (back in distribution) is logged again at its next crossing
        self.alerting.left(p["car_id"] for p in predictions if not p["failure_predicted"])
        self.out_of_distribution.left(p["car_id"] for p in predictions if not p["out_of_distribution"])
        for p in alerting:
            if self.alerting.due(p["car_id"], now):
                note = f" ({describe(p['ood_features'])})" if p["out_of_distribution"] else ""
                alerts.warning(
                    "ALERT car %s: failure probability %.3f >= %.3f (seq %d, model %s, horizon %d readings)%s",
                    p["car_id"], p["failure_probability"], threshold, p["seq"], p["model_version"], p["horizon"],
                    note,
                )  # fmt: skip
        for p in predictions if ood.flagged.any() else ():
            if p["out_of_distribution"] and self.out_of_distribution.due(p["car_id"], now):
                alerts.warning(
                    "car %s: %s (ood score %.2f > %.2f, seq %d, model %s): its failure probability %.3f means little",
                    p["car_id"], describe(p["ood_features"]), p["ood_score"], self.ood_threshold, p["seq"],
                    p["model_version"], p["failure_probability"],
                )  # fmt: skip
