"""The judge's bounded memory of the live topics: the newest readings of a sample of cars and the predictions of
the two prediction topics, in a form ml/live_eval.py takes back.

Bounds (the memory stays bounded whatever arrives, a flood of readings, of new car ids or of redeliveries):
- per car, the newest `per_car` readings to arrive (older ones fall out), and at most `per_car` predictions of each
  side, the first to arrive of each (seq, model_version) kept (live_eval keeps the first of duplicates too), the
  oldest to arrive dropped past the bound;
- at most `max_cars` cars, the first ones seen: a record of another car is ignored (`ignored` counts them) unless
  the car seen least recently has been silent for `idle_seconds`, which then makes room for it (ml/continual/cars.py
  says why a sample that stays put).

Only what the live figures need is kept: of a reading seq, event_time, failure_occurred and seq_origin, of a
prediction seq, model_version, failure_probability, failure_predicted and alert_suppressed. Measured (resident set):
500 cars of 360 readings and as many predictions of each side take about 100 MB; a round's records for live_eval
and its figures about 220 MB more while it runs. Predictions are kept whatever their model_version: which versions
are judged is the registry's answer at each round (`predictions(side, version)`, `keep_only`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ml.continual.cars import BoundedCars

PRODUCT, SHADOW = "product", "shadow"
Side = Literal["product", "shadow"]
SIDES: tuple[Side, ...] = (PRODUCT, SHADOW)
"""product: the champion's predictions (the predictions topic); shadow: the challenger's (the shadow topic)."""

_Reading = tuple[int, int, bool, str]
"""seq, event_time, failure_occurred, seq_origin."""
_PredictionKey = tuple[int, str]
"""seq, model_version."""
_Prediction = tuple[float, bool, bool]
"""failure_probability, failure_predicted, alert_suppressed."""
KNOWN_VERSIONS = 16
"""Model versions whose name is kept once for all predictions (a few are live at a time; any more are kept as they
come, so that a flood of made-up versions grows nothing else)."""


@dataclass(slots=True)
class _Car:
    readings: deque[_Reading]
    predictions: dict[Side, dict[_PredictionKey, _Prediction]] = field(
        default_factory=lambda: {side: {} for side in SIDES}
    )


class Lookback:
    """The last `per_car` readings of at most `max_cars` cars, and as many predictions of each side per car."""

    def __init__(
        self, per_car: int, max_cars: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_car < 1:
            raise ValueError(f"a lookback keeps at least one reading per car, got {per_car}")
        self.per_car = per_car
        self._cars: BoundedCars[_Car] = BoundedCars(max_cars, idle_seconds, clock)
        self._versions: dict[str, str] = {}

    @property
    def evicted_cars(self) -> int:
        """Cars forgotten to make room for another."""
        return self._cars.evicted

    @property
    def ignored(self) -> int:
        """Records of cars not kept (the lookback full of cars that are not idle)."""
        return self._cars.ignored

    def _car(self, car_id: str) -> _Car | None:
        """The car's memory (a new one when there is room), or None when the car is not kept."""
        return self._cars.get(car_id, lambda: _Car(deque(maxlen=self.per_car)))

    def _version(self, name: str) -> str:
        """One string object per known version, not one per prediction (a version name is 16 characters)."""
        known = self._versions.get(name)
        if known is None and len(self._versions) < KNOWN_VERSIONS:
            known = self._versions[name] = name
        return known or name

    def add_reading(self, record: dict[str, Any]) -> None:
        """A reading as decoded from the readings topic."""
        car = self._car(record["car_id"])
        if car is not None:
            reading = (int(record["seq"]), int(record["event_time"]), bool(record.get("failure_occurred")))
            car.readings.append((*reading, record.get("seq_origin", "SENDER")))

    def add_prediction(self, side: Side, record: dict[str, Any]) -> None:
        """A prediction as decoded from the side's topic."""
        car = self._car(record["car_id"])
        if car is None:
            return
        kept = car.predictions[side]
        key = (int(record["seq"]), self._version(record["model_version"]))
        if key in kept:
            return
        kept[key] = (
            float(record["failure_probability"]),
            bool(record["failure_predicted"]),
            bool(record.get("alert_suppressed", False)),
        )
        if len(kept) > self.per_car:
            del kept[next(iter(kept))]  # a dict keeps its insertion order: the oldest to arrive goes

    def readings(self) -> list[dict[str, Any]]:
        """Every reading kept, each car's in the order they arrived, as live_eval takes them."""
        return [
            {"car_id": car_id, "seq": seq, "event_time": time, "failure_occurred": failed, "seq_origin": origin}
            for car_id, car in self._cars.items()
            for seq, time, failed, origin in car.readings
        ]

    def predictions(self, side: Side, version: str) -> list[dict[str, Any]]:
        """The side's predictions of model `version` only, as live_eval takes them."""
        return [
            {
                "car_id": car_id,
                "seq": seq,
                "model_version": model,
                "failure_probability": probability,
                "failure_predicted": predicted,
                "alert_suppressed": suppressed,
            }
            for car_id, car in self._cars.items()
            for (seq, model), (probability, predicted, suppressed) in car.predictions[side].items()
            if model == version
        ]

    def keep_only(self, product: str | None, shadow: str | None) -> int:
        """Forget the predictions of every version but `product`'s on the product side and `shadow`'s on the shadow
        side (a side's all when its version is None); returns how many were forgotten."""
        wanted: dict[Side, str | None] = {PRODUCT: product, SHADOW: shadow}
        forgotten = 0
        for car in self._cars.values():
            for side, version in wanted.items():
                kept = car.predictions[side]
                stale = [key for key in kept if key[1] != version]
                for key in stale:
                    del kept[key]
                forgotten += len(stale)
        self._versions = {name: known for name, known in self._versions.items() if name in (product, shadow)}
        return forgotten

    def forget(self, side: Side) -> int:
        """Forget every prediction of the side; returns how many."""
        forgotten = 0
        for car in self._cars.values():
            forgotten += len(car.predictions[side])
            car.predictions[side].clear()
        return forgotten

    @property
    def cars(self) -> int:
        return len(self._cars)

    def counts(self) -> dict[str, int]:
        """Cars, readings and predictions of each side held now: for the log."""
        cars = list(self._cars.values())
        counts = {"cars": len(self._cars), "readings": sum(len(car.readings) for car in cars)}
        counts |= {side: sum(len(car.predictions[side]) for car in cars) for side in SIDES}
        return counts
