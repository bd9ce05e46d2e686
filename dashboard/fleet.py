"""What the page shows of the fleet, kept up to date from the topics: each car's state, the alerts with their lead,
the DLQ by reason, and the records seen per topic.

One thread (dashboard/feed.py) applies records; the web handlers read snapshots. Both hold `lock`. Everything is
bounded by the number of cars (one small object each, ~300 bytes) and fixed-length lists: 100,000 cars cost ~30 MB.

A car's state, worst first (the grid's order):
- failed: its latest reading says `failure_occurred` (the simulator's ground truth; real data has none);
- warned: its latest prediction is at or above the model's threshold (`failure_predicted`) and its alert is not
  suppressed (`alert_suppressed`, prediction schema v3: the car reports a failure, or did so within the last W
  readings; absent in older predictions: false);
- ood: its latest prediction is out of distribution (the probability means little; ml/ood.py);
- healthy: none of these.

Alerts follow the predictor's log (ml/serving/alerts.py): a car's alert starts with its first warned prediction
after `horizon` readings without one; a later warned prediction within `horizon` readings is the same forecast,
still standing. When the ground truth shows a failure starting (a failed reading after a healthy one) after the
alert's first reading and within `horizon` readings of its last, the alert gets its lead: how long it stood before
the onset (onset minus the alert's first reading, in event time). The topics arrive in no common order (a reading
may come before the prediction of an earlier one), so each car keeps its last few onsets until an alert covers one.
A suppressed prediction is never an alert, starts none and extends none.

Each car's recent readings and predictions, for its page, live in `history` (dashboard/history.py), within a fixed
memory budget; each car keeps its last ALERTS_PER_CAR alerts for that page too.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from dashboard.history import CarHistory

HEALTHY, WARNED, OOD, FAILED = "healthy", "warned", "ood", "failed"
STATES = (FAILED, WARNED, OOD, HEALTHY)
RANK = {state: rank for rank, state in enumerate(STATES)}
DEFAULT_INTERVAL_MS = 10_000  # the simulator's reading interval, until a car's own readings show it

ALERTS_KEPT = 20
DLQ_LATEST_KEPT = 10

OPEN, FOLLOWED, NO_FAILURE, DURING = "open", "failure followed", "no failure within the horizon", "during a failure"
ONSETS_KEPT = 4
ONSET_KEYS = ("seq", "event_time", "failure_mode")
ALERTS_PER_CAR = 8


@dataclass(slots=True)
class Alert:
    car_id: str
    seq: int
    event_time: int
    probability: float
    model_version: str
    horizon: int
    expected_within_s: float
    last_seq: int
    """The car's latest warned reading of this forecast."""
    lead_s: float | None = None
    outcome: str = OPEN

    def as_dict(self, threshold: float | None) -> dict[str, Any]:
        return {
            "car_id": self.car_id,
            "seq": self.seq,
            "event_time": self.event_time,
            "probability": round(self.probability, 4),
            "threshold": threshold,
            "model_version": self.model_version,
            "expected_within_s": self.expected_within_s,
            "lead_s": self.lead_s,
            "outcome": self.outcome,
        }


@dataclass(slots=True)
class Car:
    car_id: str
    state: str = HEALTHY
    probability: float | None = None
    predicted: bool = False
    suppressed: bool = False
    """The latest prediction's alert_suppressed: no alert, the car itself reported a failure (the W readings)."""
    ood_features: tuple[str, ...] = ()
    seq: int = -1
    event_time: int = 0
    interval_ms: int = DEFAULT_INTERVAL_MS
    failed: bool | None = None
    """The latest reading's failure_occurred: None until a reading with ground truth came."""
    reading_seq: int = -1
    alert: Alert | None = None
    onsets: tuple[tuple[int, int, str | None], ...] = ()
    """(seq, event_time, failure_mode) of the last few failure onsets, oldest first (the mode: what the car names as
    failed, reading schema v3; None when it does not say)."""
    alerts: tuple[Alert, ...] = ()
    """Its last ALERTS_PER_CAR alerts, oldest first (its page)."""

    def current_state(self) -> str:
        if self.failed:
            return FAILED
        if self.predicted:
            return WARNED
        if self.ood_features:
            return OOD
        return HEALTHY


@dataclass
class Fleet:
    lock: threading.Lock = field(default_factory=threading.Lock)
    cars: dict[str, Car] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    attention: set[str] = field(default_factory=set)
    """Cars not healthy: few, sorted for every page."""
    alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=ALERTS_KEPT))
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    dlq_latest: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=DLQ_LATEST_KEPT))
    records: Counter[str] = field(default_factory=Counter)
    """Records read per topic role: readings, predictions, dlq."""
    undecodable: Counter[str] = field(default_factory=Counter)
    model_version: str | None = None
    history: CarHistory = field(default_factory=CarHistory)
    _sorted_ids: list[str] = field(default_factory=list)
    _new_ids: list[str] = field(default_factory=list)

    # -- applying records (the feed thread, lock held) ------------------------------------------------------------

    def _car(self, car_id: str) -> Car:
        car = self.cars.get(car_id)
        if car is None:
            car = self.cars[car_id] = Car(car_id)
            self.counts[HEALTHY] += 1
            self._new_ids.append(car_id)
        return car

    def _restate(self, car: Car) -> None:
        state = car.current_state()
        if state != car.state:
            self.counts[car.state] -= 1
            self.counts[state] += 1
            car.state = state
            if state == HEALTHY:
                self.attention.discard(car.car_id)
            else:
                self.attention.add(car.car_id)

    def apply_prediction(self, p: dict[str, Any]) -> None:
        self.records["predictions"] += 1
        car = self._car(p["car_id"])
        seq, event_time = p["seq"], p["event_time"]
        if seq < car.seq:  # a duplicate or an older prediction (a predictor restarted): the newest one counts
            return
        if car.seq >= 0 and seq > car.seq and event_time > car.event_time:
            car.interval_ms = (event_time - car.event_time) // (seq - car.seq) or car.interval_ms
        car.seq, car.event_time = seq, event_time
        car.suppressed = bool(p.get("alert_suppressed", False))  # prediction schema v3; older ones never suppress
        car.probability, car.predicted = p["failure_probability"], p["failure_predicted"] and not car.suppressed
        car.ood_features = tuple(p.get("ood_features") or ()) if p.get("out_of_distribution") else ()
        self.model_version = p["model_version"]
        self.history.add_prediction(p, car.predicted, car.suppressed)
        if car.predicted:
            self._alert(car, p)
        elif car.alert is not None and car.alert.outcome == OPEN and seq > car.alert.last_seq + car.alert.horizon:
            car.alert.outcome = NO_FAILURE
        self._restate(car)

    def _alert(self, car: Car, p: dict[str, Any]) -> None:
        alert, horizon = car.alert, p["horizon"]
        if alert is not None and p["seq"] - alert.last_seq <= horizon:
            alert.last_seq = max(alert.last_seq, p["seq"])  # the same forecast, still standing
            self._judge(car)
            return
        car.alert = Alert(
            car.car_id,
            p["seq"],
            p["event_time"],
            p["failure_probability"],
            p["model_version"],
            horizon,
            expected_within_s=horizon * car.interval_ms / 1000,
            last_seq=p["seq"],
        )
        if car.failed and car.onsets and car.onsets[-1][0] <= p["seq"]:  # raised once the failure had begun
            car.alert.outcome = DURING
        self.alerts.appendleft(car.alert)
        car.alerts = (*car.alerts[-(ALERTS_PER_CAR - 1) :], car.alert)
        self._judge(car)

    def apply_reading(self, r: dict[str, Any]) -> None:
        self.records["readings"] += 1
        self.history.add_reading(r)
        failed = r.get("failure_occurred")
        if failed is None:  # no ground truth (real data): the state comes from predictions alone
            return
        car = self._car(r["car_id"])
        if r["seq"] < car.reading_seq:
            return
        if failed and car.failed is False:
            car.onsets = (*car.onsets[-(ONSETS_KEPT - 1) :], (r["seq"], r["event_time"], r.get("failure_mode")))
            self._judge(car)
        car.failed, car.reading_seq = bool(failed), r["seq"]
        self._restate(car)

    def _judge(self, car: Car) -> None:
        """The car's alert foresaw the first onset after its first reading and within the horizon of its last."""
        alert = car.alert
        if alert is None or alert.lead_s is not None or not car.onsets:
            return
        for onset_seq, onset_time, _ in car.onsets:
            if alert.seq < onset_seq <= alert.last_seq + alert.horizon:
                alert.lead_s = (onset_time - alert.event_time) / 1000
                alert.outcome = FOLLOWED
                return

    def apply_dead_letter(self, headers: dict[str, str], key: bytes | None) -> None:
        self.records["dlq"] += 1
        reason = headers.get("error", "unknown")
        self.dlq_reasons[reason] += 1
        self.dlq_latest.appendleft(
            {
                "reason": reason,
                "detail": headers.get("error_detail", "")[:200],
                "service": headers.get("service"),
                "car_id": key.decode(errors="replace") if key else None,
                "received_at": headers.get("received_at"),
            }
        )

    # -- reading (web handlers, lock held) ------------------------------------------------------------------------

    def summary(self) -> dict[str, int]:
        return {"cars": len(self.cars), **{state: self.counts[state] for state in (HEALTHY, WARNED, OOD, FAILED)}}

    def ordered_ids(self, state: str) -> list[str]:
        """Car ids in the grid's order: worst first (state, then probability), the healthy ones by id."""
        if self._new_ids:
            self._sorted_ids.extend(self._new_ids)
            self._sorted_ids.sort()  # Timsort: a sorted list with a sorted run appended costs ~O(n)
            self._new_ids.clear()
        if state == HEALTHY:
            return [i for i in self._sorted_ids if i not in self.attention]
        worst = sorted(
            (self.cars[i] for i in self.attention if state in ("all", self.cars[i].state)),
            key=lambda c: (RANK[c.state], -(c.probability or 0.0), c.car_id),
        )
        ids = [c.car_id for c in worst]
        if state == "all":
            ids += [i for i in self._sorted_ids if i not in self.attention]
        return ids

    def car_dict(self, car_id: str) -> dict[str, Any]:
        car = self.cars[car_id]
        return {
            "car_id": car_id,
            "state": car.state,
            "probability": None if car.probability is None else round(car.probability, 4),
            "seq": car.seq,
            "event_time": car.event_time,
            "ood_features": list(car.ood_features),
            "alert_suppressed": car.suppressed,
        }

    def car_page(self, car_id: str, threshold: float | None) -> dict[str, Any] | None:
        """What the car's page shows (`/api/car/<id>`): its state, alerts, onsets and recent history; None for a
        car never seen."""
        car, history = self.cars.get(car_id), self.history.car(car_id)
        if car is None and history is None:
            return None
        return {
            **(self.car_dict(car_id) if car else {"car_id": car_id, "state": None, "probability": None}),
            "interval_ms": car.interval_ms if car else None,
            "alerts": [alert.as_dict(threshold) for alert in reversed(car.alerts)] if car else [],
            "onsets": [{"seq": seq, "event_time": t, "failure_mode": mode} for seq, t, mode in car.onsets]
            if car
            else [],
            "history": history,
            "kept": self.history.describe(),
        }

    def find(self, ids: list[str], query: str) -> list[str]:
        return [i for i in ids if query in i] if query else ids

    def dlq(self) -> dict[str, Any]:
        return {
            "total": self.records["dlq"],
            "by_reason": [{"reason": r, "count": n} for r, n in self.dlq_reasons.most_common()],
            "latest": list(self.dlq_latest),
        }


def page_of(ids: list[str], page: int, size: int) -> tuple[list[str], int, int]:
    """The ids of page `page` (clamped), that page and the number of pages."""
    pages = max(1, -(-len(ids) // size))
    page = min(max(page, 0), pages - 1)
    return ids[page * size : (page + 1) * size], page, pages
