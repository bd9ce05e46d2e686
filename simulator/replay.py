"""`python -m simulator replay FILE.csv`: publish a recorded CSV, one reading per row.

Two layouts are read, told apart by the header:
- the seed's: `time,car,<sensor fields>` with `time` in epoch seconds and `car` like `car1` (kept as the car id);
  seq is counted per car from 0 in file order. An optional `failure_occurred` column is the label; a file without
  that column is unlabelled: its readings carry failure_occurred null (unknown, not "no failure"), and training
  refuses such data with a clear error.
- the offline mode's (`python -m simulator offline --out x.csv`): `car_id,seq,event_time,...,failure_occurred,
  failure_mode`.
An optional `failure_mode` column names what failed (empty: none), in either layout.

The optional sensors (common.schemas.OPTIONAL_SENSOR_FIELDS, the accelerometer peaks: the 2019 recording has no
such column) may be missing from the header or empty in a row: the reading then leaves them out, and the bridge
writes null. A row that cannot be read (a missing, non-numeric or non-finite value such as NaN or inf, or a car id
that cannot be an MQTT topic level: "/", "+", "#") is logged with its line number and skipped; the rest of the
file still goes out, and the run's summary counts the skipped rows.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.schemas import INT_SENSOR_FIELDS, OPTIONAL_SENSOR_FIELDS, SENSOR_FIELDS
from common.topics import car_id_problem, mqtt_topic
from simulator.payload import encode_reading
from simulator.reporting import RunSummary
from simulator.session import PublishSession
from simulator.settings import ReplayPace, ReplaySettings

log = logging.getLogger(__name__)

REQUIRED_SENSORS = tuple(name for name in SENSOR_FIELDS if name not in OPTIONAL_SENSOR_FIELDS)
SEED_COLUMNS = ("time", "car", *REQUIRED_SENSORS)
OFFLINE_COLUMNS = ("car_id", "seq", "event_time", *REQUIRED_SENSORS)
TRUE_WORDS = frozenset({"true", "1", "yes", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "f", ""})


class RowError(ValueError):
    """One CSV row that cannot become a reading."""


def read_readings(path: Path, skipped: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Reading dicts from a CSV file in either layout; unreadable rows are logged, skipped and their reason
    appended to `skipped` when given."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ConfigError(f"cannot open {path}: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = set(reader.fieldnames or ())
        seed_layout = {"time", "car"} <= header
        expected = SEED_COLUMNS if seed_layout else OFFLINE_COLUMNS
        missing = [column for column in expected if column not in header]
        if missing:
            raise ConfigError(
                f"{path}: missing column(s) {', '.join(missing)}; expected the seed's layout "
                f"({','.join(SEED_COLUMNS)}) or the offline mode's ({','.join(OFFLINE_COLUMNS)},failure_occurred)"
            )
        next_seq: dict[str, int] = {}
        for row in reader:
            try:
                reading = _seed_reading(row, next_seq) if seed_layout else _offline_reading(row)
            except RowError as exc:
                reason = f"{path}:{reader.line_num}: skipped: {exc}"
                log.warning("%s", reason)
                if skipped is not None:
                    skipped.append(reason)
                continue
            yield reading


def _car(row: dict[str, str | None], column: str) -> str:
    car = (row[column] or "").strip()
    problem = car_id_problem(car)
    if problem:
        raise RowError(f"{column}: {problem}")
    return car


def _seed_reading(row: dict[str, str | None], next_seq: dict[str, int]) -> dict[str, Any]:
    car = _car(row, "car")
    event_time = round(_number(row, "time") * 1000)
    sensors, failure = _sensors(row), _failure(row)  # a bad row is refused before its car's seq is counted
    seq = next_seq.get(car, 0)
    next_seq[car] = seq + 1
    return {"car_id": car, "seq": seq, "event_time": event_time, **sensors, **failure}


def _offline_reading(row: dict[str, str | None]) -> dict[str, Any]:
    car = _car(row, "car_id")
    return {
        "car_id": car,
        "seq": int(_number(row, "seq")),
        "event_time": int(_number(row, "event_time")),
        **_sensors(row),
        **_failure(row),
    }


def _number(row: dict[str, str | None], column: str) -> float:
    text = row.get(column)
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RowError(f"{column}={text!r} is not a number") from None
    if not math.isfinite(value):  # NaN and inf: no reading, no timestamp and no JSON number can hold them
        raise RowError(f"{column}={text!r} is not a finite number")
    return value


def _sensors(row: dict[str, str | None]) -> dict[str, int | float]:
    return {
        name: round(_number(row, name)) if name in INT_SENSOR_FIELDS else _number(row, name)
        for name in SENSOR_FIELDS
        if name not in OPTIONAL_SENSOR_FIELDS or (row.get(name) or "").strip()  # an optional one: left out
    }


def _failure(row: dict[str, str | None]) -> dict[str, bool | str | None]:
    """failure_occurred, and failure_mode where the file names one (an optional column; empty: none)."""
    mode = (row.get("failure_mode") or "").strip()
    return {"failure_occurred": _label(row), "failure_mode": mode or None}


def _label(row: dict[str, str | None]) -> bool | None:
    if "failure_occurred" not in row:
        return None  # an unlabelled recording
    text = (row["failure_occurred"] or "").strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise RowError(f"failure_occurred={text!r} is neither true nor false")


def run_replay(settings: ReplaySettings, path: Path, stop: threading.Event | None = None) -> RunSummary:
    """Publish every readable row of `path`; returns when done or stopped, after in-flight QoS 1 messages."""
    skipped: list[str] = []
    readings = read_readings(path, skipped)
    first = next(readings, None)  # reads the header: a bad file fails before any connection is made
    car_slots: dict[str, int] = {}
    log.info("replaying %s (pace %s, speed-up x%.3g)", path, settings.pace, settings.speedup)
    with PublishSession(settings, settings.connections, "replay", stop) as session:
        stats = session.stats
        for reading in () if first is None else _chain(first, readings):
            if settings.pace is ReplayPace.RECORDED:
                offset_s = (reading["event_time"] - first["event_time"]) / 1000.0 / settings.speedup
                session.publisher.wait(stats.started + offset_s - time.monotonic())
            slot = car_slots.setdefault(reading["car_id"], len(car_slots))
            if session.stop.is_set() or not session.publish(
                slot, mqtt_topic(reading["car_id"]), encode_reading(reading)
            ):
                break
            stats.failure_readings += bool(reading["failure_occurred"])
            stats.skipped = len(skipped)
            session.show()
        stats.skipped = len(skipped)
        return session.finish(len(car_slots), "signal" if session.stop.is_set() else "end of file")


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest
