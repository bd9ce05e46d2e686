"""Each car's recent readings and predictions, for its page (`/api/car/<id>`), in a fixed memory budget.

Two rings per car, one of readings (every sensor field, whether it reported a failure) and one of predictions
(the probability and whether it warned, was an alert suppressed by the car's own failure report, or out of
distribution), in preallocated numpy arrays: one row per car, `per_car` points per row. The budget is
`total_points` points of each kind, never exceeded: the rows double as cars arrive (64, 128, ...), and each
doubling halves the points a row keeps (the newest ones stay) once rows x per_car would pass the budget. A car
that would leave a row fewer than MIN_POINTS gets no row: its page says so. A flood of one car's records only
turns its ring; a flood of new car ids stops at the budget.

Why fewer points per car with more cars is no loss: the live fleet's rate is bounded (the demo's 2,000
readings/s), so at 100,000 cars each car reads once every 50 s and 7 points cover ~6 minutes, as 360 points do
for 25 cars at one reading per 1/6 s.

A point costs 4 bytes per sensor field (float32: a chart's precision) + 9 for the reading's time and flag, 13 for
a prediction: with the 18 fields of the reading schema v2, 94 bytes, 94 MB for the default 1,000,000 (and 32
bytes per row of bookkeeping). While the rows double, the old arrays and the new ones exist at once: for a moment,
up to twice the budget.
"""

from __future__ import annotations

from array import array
from operator import itemgetter
from typing import Any

import numpy as np

from common.schemas import SENSOR_FIELDS

DEFAULT_TOTAL_POINTS = 1_000_000
DEFAULT_POINTS_PER_CAR = 360  # a simulated hour at one reading per 10 s: six times the demo model's horizon
MIN_POINTS = 4
FIRST_ROWS = 64
COPY_ROWS = 4096

# Bits of a prediction's flags.
WARNED, SUPPRESSED, OOD = 1, 2, 4


class Ring:
    """One ring per row: `time` (event time, ms) and the given columns in numpy arrays; per row, in plain arrays
    (a Python int per read, several times cheaper than a numpy scalar on this per-record path): `head` the next
    slot, `count` the filled ones, `newest` the newest point's time."""

    def __init__(self, rows: int, per_car: int, columns: dict[str, tuple[np.dtype, int]]) -> None:
        self.columns = columns
        self.per_car = per_car
        self.time = np.zeros((rows, per_car), np.int64)
        self.data = [np.zeros((rows, per_car, width), dtype) for dtype, width in columns.values()]
        self.head = array("i", bytes(4 * rows))
        self.count = array("i", bytes(4 * rows))
        self.newest = array("q", bytes(8 * rows))

    @property
    def rows(self) -> int:
        return len(self.head)

    @property
    def point_bytes(self) -> int:
        return self.time.itemsize + sum(np.dtype(dtype).itemsize * width for dtype, width in self.columns.values())

    @property
    def row_bytes(self) -> int:
        return self.head.itemsize + self.count.itemsize + self.newest.itemsize

    @property
    def nbytes(self) -> int:
        return self.time.nbytes + sum(a.nbytes for a in self.data) + self.rows * self.row_bytes

    def append(self, row: int, event_time: int, *values: Any) -> None:
        """Appends unless the row's newest point is as new or newer (a duplicate, a record out of order)."""
        count = self.count[row]
        if count and self.newest[row] >= event_time:
            return
        head = self.head[row]
        self.time[row, head] = event_time
        for column, value in zip(self.data, values, strict=True):
            column[row, head] = value
        self.newest[row] = event_time
        self.head[row] = head + 1 if head + 1 < self.per_car else 0
        if count < self.per_car:
            self.count[row] = count + 1

    def read(self, row: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """The row's points, oldest first."""
        count, head = self.count[row], self.head[row]
        index = np.arange(head - count, head) % self.per_car
        return self.time[row, index], [a[row, index] for a in self.data]

    def resized(self, rows: int, per_car: int) -> Ring:
        """A copy with `rows` rows of `per_car` points, each row keeping its newest points, oldest first. Copied
        COPY_ROWS rows at a time: no temporary as large as the arrays (the old and the new ones are enough)."""
        ring = Ring(rows, per_car, self.columns)
        keep = min(per_car, self.per_car)
        heads = np.frombuffer(self.head, np.int32)
        for start in range(0, self.rows, COPY_ROWS):
            end = min(start + COPY_ROWS, self.rows)
            # the newest `keep` slots of each row, oldest first (slots not filled yet come first, uncounted)
            index = (heads[start:end, None] - keep + np.arange(keep)[None, :]) % self.per_car
            ring.time[start:end, :keep] = np.take_along_axis(self.time[start:end], index, axis=1)
            for new, old in zip(ring.data, self.data, strict=True):
                new[start:end, :keep] = np.take_along_axis(old[start:end], index[:, :, None], axis=1)
        np.frombuffer(ring.count, np.int32)[: self.rows] = np.minimum(np.frombuffer(self.count, np.int32), keep)
        np.frombuffer(ring.head, np.int32)[: self.rows] = keep % per_car
        ring.newest[: self.rows] = self.newest
        return ring


class CarHistory:
    """The rings of every car with a row; the caller holds the fleet's lock."""

    def __init__(
        self,
        total_points: int = DEFAULT_TOTAL_POINTS,
        max_per_car: int = DEFAULT_POINTS_PER_CAR,
        fields: tuple[str, ...] = SENSOR_FIELDS,
    ) -> None:
        if max_per_car < MIN_POINTS or total_points < max_per_car:
            raise ValueError(f"car history: need {MIN_POINTS} <= points per car <= total points")
        self.fields = fields
        self._sensors = itemgetter(*fields)
        self.total_points = total_points
        self.max_per_car = max_per_car
        self.rows: dict[str, int] = {}
        rows, per_car = self._shape(FIRST_ROWS)
        self.readings = Ring(rows, per_car, {"sensors": (np.float32, len(fields)), "failed": (np.int8, 1)})
        self.predictions = Ring(rows, per_car, {"probability": (np.float32, 1), "flags": (np.uint8, 1)})
        self.full = False
        """True once a car found no row: the budget holds as many cars as it can."""

    def _shape(self, rows: int) -> tuple[int, int]:
        return rows, min(self.max_per_car, self.total_points // rows)

    @property
    def per_car(self) -> int:
        return self.readings.per_car

    @property
    def nbytes(self) -> int:
        return self.readings.nbytes + self.predictions.nbytes

    def _row(self, car_id: str) -> int | None:
        row = self.rows.get(car_id)
        if row is not None or self.full:
            return row
        if len(self.rows) == self.readings.rows:
            rows, per_car = self._shape(2 * len(self.rows))
            if per_car < MIN_POINTS:
                self.full = True
                return None
            self.readings = self.readings.resized(rows, per_car)
            self.predictions = self.predictions.resized(rows, per_car)
        row = self.rows[car_id] = len(self.rows)
        return row

    def add_reading(self, r: dict[str, Any]) -> None:
        row = self._row(r["car_id"])
        if row is not None:
            try:  # a decoded reading holds every field; None (no value) becomes NaN in the float32 column
                sensors = self._sensors(r)
            except KeyError:
                sensors = tuple(r.get(name) for name in self.fields)
            self.readings.append(row, r["event_time"], sensors, bool(r.get("failure_occurred")))

    def add_prediction(self, p: dict[str, Any], warned: bool, suppressed: bool) -> None:
        row = self._row(p["car_id"])
        if row is not None:
            flags = WARNED * warned | SUPPRESSED * suppressed | OOD * bool(p.get("out_of_distribution"))
            self.predictions.append(row, p["event_time"], p["failure_probability"], flags)

    def car(self, car_id: str) -> dict[str, Any] | None:
        """The car's readings and predictions as columns, oldest first, with its failure periods; None: no row."""
        row = self.rows.get(car_id)
        if row is None:
            return None
        time_r, (sensors, failed) = self.readings.read(row)
        time_p, (probability, flags) = self.predictions.read(row)
        failed, flags = failed[:, 0].astype(bool), flags[:, 0]
        return {
            "readings": {
                "event_time": time_r.tolist(),
                "failure_occurred": failed.tolist(),
                "sensors": {name: _floats(sensors[:, i]) for i, name in enumerate(self.fields)},
            },
            "predictions": {
                "event_time": time_p.tolist(),
                "probability": _floats(probability[:, 0], 4),
                "warned": (flags & WARNED > 0).tolist(),
                "alert_suppressed": (flags & SUPPRESSED > 0).tolist(),
                "out_of_distribution": (flags & OOD > 0).tolist(),
            },
            "failure_periods": failure_periods(time_r, failed),
        }

    def bound_bytes(self) -> int:
        """The most its arrays ever take: `total_points` readings and predictions, and each row's two counters
        per ring, for the most rows the budget allows."""
        point = self.readings.point_bytes + self.predictions.point_bytes
        most_rows = self.total_points // MIN_POINTS
        return self.total_points * point + most_rows * (self.readings.row_bytes + self.predictions.row_bytes)

    def describe(self) -> dict[str, int | bool]:
        """The budget and what it holds now (the car endpoint's `kept`)."""
        return {
            "cars": len(self.rows),
            "rows": self.readings.rows,
            "points_per_car": self.per_car,
            "total_points": self.total_points,
            "bytes": self.nbytes,
            "full": self.full,
        }


def failure_periods(event_time: np.ndarray, failed: np.ndarray) -> list[dict[str, int | None]]:
    """Stretches of readings that report a failure: first and last such reading's event time (the last None while
    the car's newest reading still reports it)."""
    if not failed.any():
        return []
    edges = np.diff(np.concatenate(([0], failed.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    last = len(failed) - 1
    return [
        {"start": int(event_time[s]), "end": None if e == last else int(event_time[e])}
        for s, e in zip(starts, ends, strict=True)
    ]


def _floats(values: np.ndarray, digits: int = 3) -> list[float | None]:
    """JSON-ready: rounded, NaN (a field the reading did not carry) as None."""
    rounded = np.round(values.astype(np.float64), digits)
    return [None if v != v else v for v in rounded.tolist()]
