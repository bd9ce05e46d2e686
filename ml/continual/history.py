"""The continual trainer's bounded memory of the readings topic: what a challenger is trained on, the failure
episodes no model has been trained on yet, and the newest readings that the drift check scores.

Bounds, whatever arrives (a flood of readings, of new car ids, of redeliveries):
- per car, the newest `per_car` readings to arrive (older ones fall out) and the onsets of the failure episodes
  among them; at most `max_cars` cars, the first ones seen (ml/continual/cars.py: the rule and why);
- the newest `recent` readings of any car for the drift check.

A reading is kept compact: its identity, labels and the sensor values as one float32 row (NaN where the reading
reports no value), about 250 bytes; `records()` gives them back as the decoded readings training takes
(ml/features.py series_from_records). 300 cars of 720 readings (two hours at one reading per 10 s) hold about 55 MB.

Labels mature by themselves: a window is labelled by the H readings of its car that follow it (ml/episodes.py), so
training (ml/training/dataset.py window_set) uses only windows with H later readings, and the newest H readings of
each car wait for theirs. A failure episode's onset, by contrast, labels the windows before it at once: it counts
as new when its event time is later than every reading any version in the model folder was trained on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.schemas import SENSOR_FIELDS
from ml.continual.cars import BoundedCars

_Identity = tuple[int, int, bool, str, str | None, tuple[str, ...]]
"""seq, event_time, failure_occurred, seq_origin, failure_mode, out_of_range."""


@dataclass(slots=True)
class _Car:
    readings: deque[tuple[_Identity, np.ndarray]]
    onsets: deque[int]
    """Event times of the failure episodes that started among the readings kept."""
    failing: bool = False


def sensor_row(record: dict[str, Any]) -> np.ndarray:
    """The reading's sensor values in SENSOR_FIELDS order, NaN where it reports none."""
    return np.array([np.nan if record.get(name) is None else record[name] for name in SENSOR_FIELDS], np.float32)


class History:
    """The newest `per_car` readings of at most `max_cars` cars, and the newest `recent` readings of all."""

    def __init__(
        self,
        per_car: int,
        max_cars: int,
        idle_seconds: float,
        recent: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_car < 1 or recent < 1:
            raise ValueError(f"a history keeps at least one reading, got {per_car} per car and {recent} recent")
        self.per_car = per_car
        self._cars: BoundedCars[_Car] = BoundedCars(max_cars, idle_seconds, clock)
        self._recent: deque[tuple[np.ndarray, tuple[str, ...]]] = deque(maxlen=recent)

    def add(self, record: dict[str, Any]) -> None:
        """A reading as decoded from the readings topic."""
        row = sensor_row(record)
        flags = tuple(record.get("out_of_range") or ())
        self._recent.append((row, flags))
        car = self._cars.get(record["car_id"], self._new_car)
        if car is None:
            return
        while car.onsets and car.readings and car.onsets[0] < car.readings[0][0][1]:
            car.onsets.popleft()  # its episode's readings fell out
        failed = bool(record.get("failure_occurred"))
        identity = (int(record["seq"]), int(record["event_time"]), failed, record.get("seq_origin", "SENDER"))
        car.readings.append(((*identity, record.get("failure_mode"), flags), row))
        if failed and not car.failing:
            car.onsets.append(int(record["event_time"]))
        car.failing = failed

    def _new_car(self) -> _Car:
        return _Car(deque(maxlen=self.per_car), deque())

    def onsets_after(self, event_time: int) -> int:
        """Failure episodes kept whose onset came later than `event_time` (epoch ms)."""
        return sum(onset > event_time for car in self._cars.values() for onset in car.onsets)

    def records(self) -> list[dict[str, Any]]:
        """Every reading kept, each car's in the order they arrived, as decoded readings."""
        out = []
        for car_id, car in self._cars.items():
            for (seq, event_time, failed, origin, mode, flags), row in car.readings:
                values = {name: None if np.isnan(v) else float(v) for name, v in zip(SENSOR_FIELDS, row, strict=True)}
                out.append(
                    {
                        "car_id": car_id,
                        "seq": seq,
                        "event_time": event_time,
                        "failure_occurred": failed,
                        "seq_origin": origin,
                        "failure_mode": mode,
                        "out_of_range": list(flags),
                        **values,
                    }
                )
        return out

    def recent(self) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """The newest readings of any car: sensor rows [N, len(SENSOR_FIELDS)] and each one's out_of_range."""
        if not self._recent:
            return np.zeros((0, len(SENSOR_FIELDS)), np.float32), []
        return np.stack([row for row, _ in self._recent]), [flags for _, flags in self._recent]

    def forget_recent(self) -> None:
        """Start the drift check's window again (after a training: the next drift is measured on what came since)."""
        self._recent.clear()

    def counts(self) -> dict[str, int]:
        cars = list(self._cars.values())
        return {
            "cars": len(cars),
            "readings": sum(len(car.readings) for car in cars),
            "episodes": sum(len(car.onsets) for car in cars),
            "recent": len(self._recent),
        }
