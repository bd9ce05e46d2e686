"""Alerts of delivered predictions: counted, and logged on the `ml.alerts` logger in episodes, as an operator
reads them (which car will fail, was it foreseen), never one line per reading.

- Alerts are failure_predicted. A prediction whose alert was suppressed (alert_suppressed: the car reported a
  failure in the reading or in its previous W readings, ml/episodes.py) is no alert: neither logged nor counted
  as one, but counted apart in `predictor_alerts_suppressed_total`.
- A car's alert starts (its first alert after H readings without one): `ALERT car <id>: failure expected within
  H readings (~N min): probability p, threshold t (seq, model)`, with the features when the reading is out of
  distribution. A probability near the threshold flickers; an alert that resumes within H readings of the car's
  last one is the same forecast, and gets no line. These lines never look at the ground truth: real data has
  none, and the predictor must say the same with or without it.
- The readings carry the simulator's ground truth (`failure_occurred`; null for real data, which then gets no
  such line). When a failure episode starts (ml/episodes.py: a failed reading after a healthy one):
  `car <id>: failure started (seq s): warned N s ahead` when an alert fell in the H readings before the onset
  (N from the first of them to the onset, in event time) or `...: MISSED (no alert in the H readings before)`,
  counted in `predictor_episodes_warned_total` / `predictor_episodes_missed_total`. A failure that starts less
  than H readings after this predictor's first reading gets no verdict: it never saw the readings before.
- A car whose readings lie out of distribution (ml/ood.py) is logged when it enters that state, then every
  `repeat` seconds (ML_ALERT_REPEAT) while it stays in it.

Bounded and cheap at 10,000 readings/s: state is kept only for cars that alert now, alerted within their last H
readings (an alert that ended just before the onset still warned) or are in failure, and only their readings
(and alerting or failed ones) take a Python step. A car that stops sending is dropped once its last reading lies
H readings of event time behind the newest one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ml.episodes import DEFAULT_INTERVAL_S
from ml.ood import describe
from ml.serving import metrics

if TYPE_CHECKING:  # batch.py pulls in TensorFlow; the alert log needs only the shape of its output
    from ml.serving.batch import Scored

alerts = logging.getLogger("ml.alerts")

LOOK_EVERY_S = 10.0
"""Seconds between looks at a whole batch: the reading interval, and cars that stopped sending."""


class Repeats:
    """Which cars to log now: a car is logged when it enters a state (data out of distribution), then every
    `repeat` seconds while it stays in it."""

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


@dataclass
class CarEpisode:
    """One car that alerts, alerted within its last H readings, or is in failure."""

    seq: int
    event_time: int
    alerting: bool = False
    failing: bool = False
    runs: list[tuple[int, int, int, int]] = field(default_factory=list)
    """Alert runs (consecutive alerting readings) that reach into the last H readings: (first seq, its event_time,
    last seq, its event_time)."""

    @property
    def idle(self) -> bool:
        return not (self.alerting or self.failing or self.runs)

    def alerted(self, seq: int, event_time: int) -> None:
        if self.runs and self.runs[-1][2] == seq - 1:
            self.runs[-1] = (*self.runs[-1][:2], seq, event_time)
        else:
            self.runs.append((seq, event_time, seq, event_time))

    def forget_before(self, seq: int) -> None:
        self.runs = [run for run in self.runs if run[2] >= seq]

    def first_alert_time(self, since: int) -> int | None:
        """event_time of the first alerting reading at seq `since` or later; None without one. Inside a run that
        began earlier it is interpolated between the run's ends (readings come at a steady interval)."""
        for first, first_time, last, last_time in self.runs:
            if last < since:
                continue
            if first >= since:
                return first_time
            return first_time + (last_time - first_time) * (since - first) // (last - first)
        return None


def reading_interval_s(cars: list[str], seqs: np.ndarray, times: np.ndarray) -> float | None:
    """The median event time per seq step between readings of one car within a batch; None without such pairs."""
    if len(seqs) < 2:
        return None
    _, car = np.unique(np.asarray(cars, dtype=object), return_inverse=True)
    order = np.lexsort((seqs, car))
    same = car[order][1:] == car[order][:-1]
    steps = np.diff(seqs[order])[same]
    gaps = np.diff(times[order])[same]
    usable = (steps > 0) & (gaps > 0)
    return float(np.median(gaps[usable] / steps[usable])) / 1000 if usable.any() else None


def _span(seconds: float) -> str:
    return f"~{seconds / 60:.0f} min" if seconds >= 90 else f"~{seconds:.0f} s"


class AlertLog:
    """The alert lines of one predictor; `ood_threshold` is only quoted in the out-of-distribution lines."""

    def __init__(self, repeat: float, ood_threshold: float) -> None:
        self.ood_threshold = ood_threshold
        self.out_of_distribution = Repeats(repeat)
        self.cars: dict[str, CarEpisode] = {}
        self.interval_s: float | None = None
        """Event time between two readings of a car, measured on the batches; None until measured."""
        self.since_ms: int | None = None
        """event_time of the first reading accounted: failures need the H readings before to be judged."""
        self._next_look = 0.0

    def account(self, scored: Scored, threshold: float) -> None:
        """Count and log the alerts of a batch whose predictions Kafka confirmed."""
        predictions = scored.predictions
        if not predictions:
            return
        n = len(predictions)
        alert = np.fromiter((p["failure_predicted"] for p in predictions), dtype=bool, count=n)
        metrics.ALERTS.inc(int(alert.sum()))
        metrics.ALERTS_SUPPRESSED.inc(sum(p["alert_suppressed"] for p in predictions))
        if self.since_ms is None:
            self.since_ms = min(p["event_time"] for p in predictions)
        now = time.monotonic()
        if now >= self._next_look:
            self._look(scored)
            self._next_look = now + LOOK_EVERY_S
        rows = alert | (scored.failure == 1)
        if self.cars:
            rows |= np.fromiter((p["car_id"] in self.cars for p in predictions), dtype=bool, count=n)
        for i in np.flatnonzero(rows).tolist():
            failed, ordered = bool(scored.failure[i] == 1), bool(scored.ordered[i])
            self._reading(predictions[i], bool(alert[i]), failed, ordered, threshold)
        self._log_out_of_distribution(scored, now)

    def _look(self, scored: Scored) -> None:
        """Once in a while over the whole batch: measure the reading interval, drop cars that stopped sending."""
        predictions = scored.predictions
        ordered = np.flatnonzero(scored.ordered)
        times = np.fromiter((predictions[i]["event_time"] for i in ordered), dtype=np.int64, count=len(ordered))
        seqs = np.fromiter((predictions[i]["seq"] for i in ordered), dtype=np.int64, count=len(ordered))
        measured = reading_interval_s([predictions[i]["car_id"] for i in ordered], seqs, times)
        self.interval_s = measured or self.interval_s
        if self.cars and len(times):
            behind = predictions[0]["horizon"] * (self.interval_s or DEFAULT_INTERVAL_S) * 1000
            newest = int(times.max())
            for car in [car for car, state in self.cars.items() if state.event_time < newest - behind]:
                del self.cars[car]

    def _reading(self, p: dict, alert: bool, failed: bool, ordered: bool, threshold: float) -> None:
        """One reading of a car that alerts, fails, or has state: the episode's lines and the car's state."""
        car, seq, event_time, horizon = p["car_id"], p["seq"], p["event_time"], p["horizon"]
        state = self.cars.get(car)
        if state is not None and ordered and seq <= state.seq:
            if seq > state.seq - horizon:
                return  # a redelivery, or a reading late within the horizon: its episode is told already
            state = None  # the car's sequence started again
        if state is None:
            state = CarEpisode(seq, event_time)
        if ordered:  # the readings since the car's last visit may have taken no step (a batch's rows are picked once)
            state.forget_before(seq - horizon)
        if alert and not (state.runs if ordered else state.alerting):
            self._alert_started(p, threshold)
        if ordered:
            if failed and not state.failing:
                self._failure_started(car, state, seq, event_time, horizon)
            state.failing = failed
            if alert:
                state.alerted(seq, event_time)
            state.forget_before(seq + 1 - horizon)
        state.alerting, state.seq, state.event_time = alert, seq, event_time
        if state.idle:
            self.cars.pop(car, None)
        else:
            self.cars[car] = state

    def _alert_started(self, p: dict, threshold: float) -> None:
        minutes = f" ({_span(p['horizon'] * self.interval_s)})" if self.interval_s else ""
        note = f" ({describe(p['ood_features'])})" if p["out_of_distribution"] else ""
        alerts.warning(
            "ALERT car %s: failure expected within %d readings%s: probability %.3f, threshold %.3f "
            "(seq %d, model %s)%s",
            p["car_id"], p["horizon"], minutes, p["failure_probability"], threshold, p["seq"],
            p["model_version"], note,
        )  # fmt: skip

    def _failure_started(self, car: str, state: CarEpisode, seq: int, event_time: int, horizon: int) -> None:
        assert self.since_ms is not None
        before_ms = horizon * (self.interval_s or DEFAULT_INTERVAL_S) * 1000
        if event_time - before_ms < self.since_ms:
            alerts.info("car %s: failure started (seq %d): no verdict, this predictor began less than %d readings "
                        "before", car, seq, horizon)  # fmt: skip
            return
        first = state.first_alert_time(seq - horizon)
        if first is None:
            metrics.EPISODES_MISSED.inc()
            alerts.warning("car %s: failure started (seq %d): MISSED (no alert in the %d readings before)",
                           car, seq, horizon)  # fmt: skip
        else:
            metrics.EPISODES_WARNED.inc()
            alerts.warning(
                "car %s: failure started (seq %d): warned %.0f s ahead", car, seq, (event_time - first) / 1000
            )

    def _log_out_of_distribution(self, scored: Scored, now: float) -> None:
        predictions = scored.predictions
        # a car back in distribution is logged again when it next leaves it
        self.out_of_distribution.left(p["car_id"] for p in predictions if not p["out_of_distribution"])
        for p in predictions if scored.ood.flagged.any() else ():
            if p["out_of_distribution"] and self.out_of_distribution.due(p["car_id"], now):
                alerts.warning(
                    "car %s: %s (ood score %.2f > %.2f, seq %d, model %s): its failure probability %.3f means little",
                    p["car_id"], describe(p["ood_features"]), p["ood_score"], self.ood_threshold, p["seq"],
                    p["model_version"], p["failure_probability"],
                )  # fmt: skip
