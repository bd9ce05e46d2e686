"""Readings as arrays, and windows of consecutive readings of ONE car: shared by training and the predictor.

A `Series` holds many cars' readings sorted by (car, seq), duplicates of (car_id, seq) dropped (at-least-once
delivery), and cut into runs of consecutive seq: a window never spans two cars, nor a gap in one car's readings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.schemas import SENSOR_FIELDS


def feature_matrix(records: Sequence[dict[str, Any]], features: Sequence[str] = SENSOR_FIELDS) -> np.ndarray:
    """Raw sensor values [len(records), len(features)] float32, in the given feature order."""
    return np.array([[record[name] for name in features] for record in records], dtype=np.float32).reshape(
        len(records), len(features)
    )


@dataclass(frozen=True)
class Series:
    car_ids: np.ndarray
    seq: np.ndarray
    event_time: np.ndarray
    features: np.ndarray
    failure: np.ndarray
    run_start: np.ndarray
    """Index of the first reading of the run of consecutive seq each reading belongs to."""
    run_end: np.ndarray
    """Index of the last reading of that run."""

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def cars(self) -> list[str]:
        return sorted(set(self.car_ids.tolist()))

    def select_cars(self, cars: Iterable[str]) -> Series:
        return _build(*(column[np.isin(self.car_ids, list(cars))] for column in self._columns()))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self.car_ids, self.seq, self.event_time, self.features, self.failure


def series_from_records(records: Sequence[dict[str, Any]], features: Sequence[str] = SENSOR_FIELDS) -> Series:
    car_ids = np.array([r["car_id"] for r in records], dtype=object)
    seq = np.array([r["seq"] for r in records], dtype=np.int64)
    event_time = np.array([r["event_time"] for r in records], dtype=np.int64)
    # failure_occurred is null for the seed simulator's payloads (DESIGN.md): no failure known.
    failure = np.array([bool(r.get("failure_occurred")) for r in records], dtype=bool)
    return _build(car_ids, seq, event_time, feature_matrix(records, features), failure)


def _build(car_ids: np.ndarray, seq: np.ndarray, event_time: np.ndarray, feats: np.ndarray, fail: np.ndarray) -> Series:
    order = np.lexsort((seq, car_ids.astype(str)))
    car_ids, seq, event_time, feats, fail = car_ids[order], seq[order], event_time[order], feats[order], fail[order]
    same_car = car_ids[1:] == car_ids[:-1]
    keep = np.ones(len(seq), dtype=bool)
    keep[1:] = ~(same_car & (seq[1:] == seq[:-1]))
    car_ids, seq, event_time, feats, fail = car_ids[keep], seq[keep], event_time[keep], feats[keep], fail[keep]
    n = len(seq)
    new_run = np.ones(n, dtype=bool)
    if n > 1:
        new_run[1:] = (car_ids[1:] != car_ids[:-1]) | (seq[1:] != seq[:-1] + 1)
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:] - 1, n - 1) if n else starts
    lengths = np.diff(np.append(starts, n))
    return Series(
        car_ids, seq, event_time, feats, fail, np.repeat(starts, lengths), np.repeat(ends, lengths).astype(np.int64)
    )


def window_ends(series: Series, window: int) -> np.ndarray:
    """Indices of readings that close a full window of `window` consecutive readings of their car."""
    return np.flatnonzero(np.arange(len(series)) - series.run_start >= window - 1)


def horizon_labels(series: Series, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, known) per reading: label = a failure at this reading or within the next `horizon` readings of
    the same run; known = those readings exist (the tail of a run has an unknown future unless it already failed)."""
    n = len(series)
    cumulative = np.concatenate([[0], np.cumsum(series.failure, dtype=np.int64)])
    index = np.arange(n)
    last = np.minimum(index + horizon, series.run_end)
    label = (cumulative[last + 1] - cumulative[index]) > 0
    known = (index + horizon <= series.run_end) | label
    return label, known


def gather_windows(features: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Windows [len(ends), window, F] ending at `ends` (oldest reading first)."""
    offsets = np.arange(-window + 1, 1)
    return features[np.asarray(ends)[:, None] + offsets]


def failure_onsets(series: Series) -> np.ndarray:
    """Indices of the first reading of each failure episode (failure after no failure, or at a run's start)."""
    previous = np.zeros(len(series), dtype=bool)
    previous[1:] = series.failure[:-1]
    previous[series.run_start == np.arange(len(series))] = False
    return np.flatnonzero(series.failure & ~previous)
