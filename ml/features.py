"""Readings as arrays, and windows of consecutive readings of ONE car: shared by training and the predictor.

A `Series` holds many cars' readings in each car's order, duplicates of (car_id, seq) dropped (at-least-once
delivery, the first to arrive kept), and cut into runs: a window never spans two cars, nor a gap in one car's
readings. A car's order depends on where its seq came from (the reading's `seq_origin`):

- SENDER: seq is the sender's sequence number; readings are sorted by seq and runs are cut where seq skips.
- CONTENT_HASH (payloads that carry no seq): the bridge set seq to a hash of the payload, an identity and not an
  order. Such readings keep the order they arrived in on Kafka (the order of the records given, which the
  readers yield per partition by offset, and a car lives in one partition) and are consecutive: there is no
  gap to see. A redelivered payload has the same hash, so it is a duplicate like any other.

A car's SENDER and CONTENT_HASH readings never share a run: the two orders cannot be merged.

A sensor that was not reported (null: an optional field such as the accelerometer peaks, which readings before
schema version 3 and the 2019 senders lack) is NaN in the feature arrays. Training keeps the features that hold a
value in every reading it read (`complete_features`); the predictor scores a reading that lacks one of its model's
features with that feature at its training mean (`fill_missing`) and flags the reading out of distribution, naming
the field (ml/ood.py). Nothing invents a value the sender did not report into the data itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from common.schemas import SENSOR_FIELDS, SEQ_FROM_CONTENT

log = logging.getLogger(__name__)


def feature_matrix(records: Sequence[dict[str, Any]], features: Sequence[str] = SENSOR_FIELDS) -> np.ndarray:
    """Raw sensor values [len(records), len(features)] float32, in the given feature order; NaN where a value is
    null (numpy turns None into NaN for a float dtype)."""
    return np.array([[record[name] for name in features] for record in records], dtype=np.float32).reshape(
        len(records), len(features)
    )


def missing_values(records: Sequence[dict[str, Any]], features: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """bool [N, F]: where a record's feature is null (not reported). `rows` is feature_matrix's of the records: only
    its rows with a NaN are looked at again, since a NaN the sender wrote is a value, not a missing one."""
    missing = np.isnan(rows)
    for i in np.flatnonzero(missing.any(axis=1)).tolist():
        missing[i] = [records[i].get(name) is None for name in features]
    return missing


def fill_missing(rows: np.ndarray, missing: np.ndarray, mean: Sequence[float]) -> np.ndarray:
    """`rows` with each missing value replaced by its feature's training mean (the model's metadata scaling.mean,
    in its feature order): the model sees nothing unusual in that feature, and the reading is flagged instead."""
    if not missing.any():
        return rows
    return np.where(missing, np.asarray(mean, dtype=rows.dtype), rows)


@dataclass(frozen=True)
class Series:
    car_ids: np.ndarray
    seq: np.ndarray
    event_time: np.ndarray
    features: np.ndarray
    failure: np.ndarray
    hashed: np.ndarray
    """True where seq is a content hash (seq_origin CONTENT_HASH): ordered by `arrival`, not by seq."""
    arrival: np.ndarray
    """Position of each reading in the records as they arrived (the order CONTENT_HASH readings follow)."""
    run_start: np.ndarray
    """Index of the first reading of the run of consecutive seq each reading belongs to."""
    run_end: np.ndarray
    """Index of the last reading of that run."""
    failure_mode: np.ndarray | None = None
    """The failure mode a reading reports (str, "" when none), where the data carry it; None when they do not
    (Kafka's readings today). The report breaks episodes down by it (ml/training/evaluate.py)."""

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def cars(self) -> list[str]:
        return sorted(set(self.car_ids.tolist()))

    def select_cars(self, cars: Iterable[str]) -> Series:
        # One mask from a set: np.isin over object-dtype ids, once per column, took 2.3 s of a 90,000-reading run.
        wanted = set(cars)
        mask = np.fromiter((car in wanted for car in self.car_ids), dtype=bool, count=len(self.car_ids))
        return _build(*(column[mask] for column in self._columns()), failure_mode=_masked(self.failure_mode, mask))

    def with_failure_modes(self, modes: np.ndarray) -> Series:
        """This series with a failure mode per reading (in this series' order)."""
        if len(modes) != len(self):
            raise ValueError(f"{len(modes)} failure modes for {len(self)} readings")
        return replace(self, failure_mode=np.asarray(modes, dtype=object))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self.car_ids, self.seq, self.event_time, self.features, self.failure, self.hashed, self.arrival


def complete_features(series: Series, names: Sequence[str] = SENSOR_FIELDS) -> tuple[tuple[str, ...], Series]:
    """The features (of `names`, the series' columns) that hold a value in every reading, and the series with only
    those: what a model can be trained on. The others are left out, with one log line."""
    held = ~np.isnan(series.features).any(axis=0)
    if held.all():
        return tuple(names), series
    left_out = [name for name, kept in zip(names, held, strict=True) if not kept]
    log.info("leaving out %d feature(s) that some readings do not report: %s", len(left_out), ", ".join(left_out))
    kept_names = tuple(name for name, kept in zip(names, held, strict=True) if kept)
    return kept_names, dataclasses.replace(series, features=series.features[:, held])


def _masked(column: np.ndarray | None, picked: np.ndarray) -> np.ndarray | None:
    return None if column is None else column[picked]


def series_from_records(records: Sequence[dict[str, Any]], features: Sequence[str] = SENSOR_FIELDS) -> Series:
    """`records` in the order they arrived from Kafka (see the module's doc: CONTENT_HASH readings keep it)."""
    car_ids = np.array([r["car_id"] for r in records], dtype=object)
    seq = np.array([r["seq"] for r in records], dtype=np.int64)
    event_time = np.array([r["event_time"] for r in records], dtype=np.int64)
    # failure_occurred is null for the seed simulator's payloads (bridge/README.md): no failure known.
    failure = np.array([bool(r.get("failure_occurred")) for r in records], dtype=bool)
    # seq_origin is absent from readings decoded before schema version 2 existed: those are SENDER readings.
    hashed = np.array([r.get("seq_origin") == SEQ_FROM_CONTENT for r in records], dtype=bool)
    arrival = np.arange(len(records), dtype=np.int64)
    # failure_mode: only where the readings carry one (None or absent on a reading: no failure reported).
    modes = None
    if any("failure_mode" in r for r in records):
        modes = np.array([r.get("failure_mode") or "" for r in records], dtype=object)
    columns = (car_ids, seq, event_time, feature_matrix(records, features), failure, hashed, arrival)
    return _build(*columns, failure_mode=modes)


def _build(*columns: np.ndarray, failure_mode: np.ndarray | None = None) -> Series:
    """Series from columns in `_columns()` order (and the optional failure modes): duplicates dropped, each car in
    its order, runs found."""
    car_ids, seq, _, _, _, hashed, arrival = columns
    cars = car_ids.astype(str)
    # Duplicates of (car, seq) sit next to each other in this order, the first to arrive first: keep that one.
    order = np.lexsort((arrival, seq, hashed, cars))
    same = (cars[order][1:] == cars[order][:-1]) & (hashed[order][1:] == hashed[order][:-1])
    repeated = np.zeros(len(order), dtype=bool)
    repeated[1:] = same & (seq[order][1:] == seq[order][:-1])
    kept = order[~repeated]
    # Each car's order: by seq for SENDER readings, by arrival for CONTENT_HASH ones (a hash is no order).
    position = np.where(hashed[kept], arrival[kept], seq[kept])
    kept = kept[np.lexsort((position, hashed[kept], cars[kept]))]
    car_ids, seq, event_time, feats, fail, hashed, arrival = (column[kept] for column in columns)
    n = len(seq)
    new_run = np.ones(n, dtype=bool)
    if n > 1:
        gap = ~hashed[1:] & (seq[1:] != seq[:-1] + 1)
        new_run[1:] = (car_ids[1:] != car_ids[:-1]) | (hashed[1:] != hashed[:-1]) | gap
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:] - 1, n - 1) if n else starts
    lengths = np.diff(np.append(starts, n))
    return Series(
        car_ids=car_ids,
        seq=seq,
        event_time=event_time,
        features=feats,
        failure=fail,
        hashed=hashed,
        arrival=arrival,
        run_start=np.repeat(starts, lengths),
        run_end=np.repeat(ends, lengths).astype(np.int64),
        failure_mode=_masked(failure_mode, kept),
    )


def window_ends(series: Series, window: int) -> np.ndarray:
    """Indices of readings that close a full window of `window` consecutive readings of their car."""
    return np.flatnonzero(np.arange(len(series)) - series.run_start >= window - 1)


def gather_windows(features: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Windows [len(ends), window, F] ending at `ends` (oldest reading first)."""
    offsets = np.arange(-window + 1, 1)
    return features[np.asarray(ends)[:, None] + offsets]
