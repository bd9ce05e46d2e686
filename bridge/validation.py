"""Turn one MQTT message (topic + payload bytes) into a reading record of schemas/car_sensor_reading.avsc.

Two JSON shapes are accepted (bridge/README.md, "Accepted payloads"):
- the full reading: `car_id`, `seq`, `event_time`, the sensor fields, optional `failure_occurred` and
  `failure_mode`;
- the seed simulator's shape: the sensor fields (extra keys, such as its camelCase duplicates, ignored) and
  none of `car_id`, `seq`, `event_time`: the car comes from the topic, `seq` is the content hash of the payload
  (`content_seq`, seq_origin CONTENT_HASH), `event_time` is left to the caller (the bridge's receive time),
  `failure_occurred` is null.

Structure is strict: anything malformed raises `Rejected` with a short error code (the DLQ's `error` header) and
a detail for humans. A sensor the schema makes optional (common.schemas.OPTIONAL_SENSOR_FIELDS: the accelerometer
peaks, which the 2019 senders never reported) may be absent or null and is written as null; a present one must be a
number like any other. Plausibility is a signal: a well-formed value outside its bound in common.schemas.SENSOR_RANGES
(the `range` attributes of the .avsc, one place) is listed in the record's `out_of_range` (RangePolicy.FLAG), or
rejected (REJECT), or not looked at (OFF). The bounds describe the simulator's units, and a real fleet may send
other units: its readings are data, not garbage.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from enum import StrEnum
from typing import Any

from paho.mqtt.client import topic_matches_sub

from common import schemas
from common.errors import ValidationError

PAYLOAD_TOO_LARGE = "payload_too_large"
NOT_UTF8 = "not_utf8"
MALFORMED_JSON = "malformed_json"
WRONG_TYPE = "wrong_type"
MISSING_FIELD = "missing_field"
OUT_OF_RANGE = "out_of_range"
NOT_FINITE = "not_finite"
BAD_TOPIC = "bad_topic"
CAR_ID_MISMATCH = "car_id_mismatch"
UNPROCESSABLE = "unprocessable"  # the validator itself failed on it: a bug to report, never a reason to stop
ERROR_CODES = (
    PAYLOAD_TOO_LARGE,
    NOT_UTF8,
    MALFORMED_JSON,
    WRONG_TYPE,
    MISSING_FIELD,
    OUT_OF_RANGE,
    NOT_FINITE,
    BAD_TOPIC,
    CAR_ID_MISMATCH,
    UNPROCESSABLE,
)


class RangePolicy(StrEnum):
    """What the bridge does with a well-formed reading outside the plausibility ranges."""

    FLAG = "flag"  # forward it, naming the fields in out_of_range
    REJECT = "reject"  # dead-letter it (out_of_range)
    OFF = "off"  # forward it, look at no range


CAR_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
IDENTITY_FIELDS = ("car_id", "seq", "event_time")
# event_time must be a plausible epoch in milliseconds: 1970 .. 2100.
EVENT_TIME_RANGE = (0, 4_102_444_800_000)
INT32_RANGE = (-(2**31), 2**31 - 1)  # Avro int
SEQ_MASK = 2**63 - 1
MAX_FAILURE_MODE = 64  # a diagnostic code or a mode's name, not a log message
_SENSORS = tuple(
    (name, name in schemas.INT_SENSOR_FIELDS, name in schemas.OPTIONAL_SENSOR_FIELDS, *schemas.SENSOR_RANGES[name])
    for name in schemas.SENSOR_FIELDS
)
assert all(INT32_RANGE[0] <= low <= high <= INT32_RANGE[1] for *_, low, high in _SENSORS)  # see _sensors


class Rejected(ValidationError):
    """A message the bridge will not forward; `code` is one of ERROR_CODES."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


_JSON = json.JSONDecoder(parse_constant=_no_constants)  # built once: json.loads(parse_constant=...) builds one per call


def _decode(payload: bytes, max_bytes: int) -> Any:
    if len(payload) > max_bytes:
        raise Rejected(PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
    try:
        return _JSON.decode(text)
    except ValueError as exc:  # JSONDecodeError and the NaN/Infinity refusal
        raise Rejected(MALFORMED_JSON, str(exc)) from None
    except RecursionError:
        raise Rejected(MALFORMED_JSON, "nested too deeply") from None


def _integer(name: str, value: Any) -> int:
    """JSON integers, and floats with an integral value (some encoders write 34.0)."""
    kind = type(value)
    if kind is int:
        return value
    if kind is float and value.is_integer():
        return int(value)
    raise Rejected(WRONG_TYPE, f"{name} must be an integer, got {_json_type(value)} {value!r:.40}")


def _json_type(value: Any) -> str:
    return {bool: "boolean", str: "string", list: "array", dict: "object", float: "number", int: "integer"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _sensors(obj: dict[str, Any], record: dict[str, Any], policy: RangePolicy) -> None:
    outside: list[str] = []
    for name, is_int, optional, low, high in _SENSORS:
        value = obj.get(name)
        if value is None:
            if optional:
                record[name] = None  # not reported: nothing is invented for it
                continue
            if name not in obj:
                raise Rejected(MISSING_FIELD, f"{name} is missing")
        kind = type(value)
        if is_int:
            if kind is not int:
                value = _integer(name, value)
        elif kind is int:
            value = float(value) if -1e308 < value < 1e308 else math.inf  # float() raises beyond a double
        elif kind is not float:
            raise Rejected(WRONG_TYPE, f"{name} must be a number, got {_json_type(value)} {value!r:.40}")
        # Inside its range a value is finite and fits 32 bits (the ranges do), so only a value outside is looked
        # at further: this runs for every field of every reading.
        if not low <= value <= high:  # NaN fails this too
            _outside(name, value, is_int, low, high, policy, outside)
        record[name] = value
    record["out_of_range"] = outside


def _outside(
    name: str, value: float, is_int: bool, low: float, high: float, policy: RangePolicy, outside: list[str]
) -> None:
    if is_int and not INT32_RANGE[0] <= value <= INT32_RANGE[1]:
        raise Rejected(WRONG_TYPE, f"{name}={value} does not fit a 32-bit integer")
    if not math.isfinite(value):  # 1e400 parses as inf
        raise Rejected(NOT_FINITE, f"{name}={value} is not a finite number")
    if policy is RangePolicy.REJECT:
        raise Rejected(OUT_OF_RANGE, f"{name}={value} is outside [{low}, {high}]")
    if policy is RangePolicy.FLAG:
        outside.append(name)


class TopicRule:
    """Which MQTT topics carry readings: those matching the subscription filter whose last level is a car id.

    Valid topics are cached (a fleet has a bounded set of them), so the check costs a dict look-up; bad ones are
    not (anyone can send endless distinct ones). The cache is bounded in bytes; once full, new topics are checked
    each time, which costs microseconds.
    """

    ENTRY_OVERHEAD = 160  # bytes a dict entry and its two str objects cost beyond the characters

    def __init__(self, topic_filter: str, cache_bytes: int = 8 * 2**20) -> None:
        self.topic_filter = topic_filter
        self._cache: dict[str, str] = {}
        self._cache_bytes = cache_bytes
        self.cached_bytes = 0

    def car_id(self, topic: str) -> str:
        car = self._cache.get(topic)
        if car is not None:
            return car
        car = self._check(topic)
        if car is None:
            raise Rejected(BAD_TOPIC, f"topic {topic!r:.200} does not match {self.topic_filter} with a car id last")
        cost = len(topic) + len(car) + self.ENTRY_OVERHEAD
        if self.cached_bytes + cost <= self._cache_bytes:
            self._cache[topic] = car
            self.cached_bytes += cost
        return car

    def _check(self, topic: str) -> str | None:
        car = topic.rpartition("/")[2]
        if not topic_matches_sub(self.topic_filter, topic) or not CAR_ID_PATTERN.fullmatch(car):
            return None
        return car


def content_seq(car: str, payload: bytes) -> int:
    """The seq of a payload that carries none: the same bytes from the same car give the same seq on any bridge,
    before and after a restart or a redelivery. 63 bits, so that Avro's signed long holds it."""
    digest = hashlib.blake2b(car.encode() + b"\0" + payload, digest_size=8).digest()
    return int.from_bytes(digest, "big") & SEQ_MASK


def parse_reading(
    topic_car: str, payload: bytes, max_bytes: int, policy: RangePolicy = RangePolicy.FLAG
) -> dict[str, Any]:
    """The reading in `payload`; for the seed shape `event_time` is None (the caller assigns its receive time).

    Raises Rejected when the payload is not a valid reading.
    """
    obj = _decode(payload, max_bytes)
    if type(obj) is not dict:
        raise Rejected(WRONG_TYPE, f"payload must be a JSON object, got {_json_type(obj)}")
    record: dict[str, Any] = {
        "car_id": topic_car,
        "seq": None,
        "event_time": None,
        "seq_origin": schemas.SEQ_FROM_SENDER,
    }
    present = [name for name in IDENTITY_FIELDS if name in obj]
    if present:
        _identity(obj, present, record)
    else:
        record["seq"] = content_seq(topic_car, payload)
        record["seq_origin"] = schemas.SEQ_FROM_CONTENT
    _sensors(obj, record, policy)
    failure = obj.get("failure_occurred") if present else None
    if failure is not None and type(failure) is not bool:
        raise Rejected(WRONG_TYPE, f"failure_occurred must be a boolean or null, got {_json_type(failure)}")
    record["failure_occurred"] = failure
    mode = obj.get("failure_mode") if present else None
    if mode is not None and not (type(mode) is str and 0 < len(mode) <= MAX_FAILURE_MODE):
        raise Rejected(WRONG_TYPE, f"failure_mode must be a string of 1 to {MAX_FAILURE_MODE} characters or null")
    record["failure_mode"] = mode
    return record


def _identity(obj: dict[str, Any], present: list[str], record: dict[str, Any]) -> None:
    """The full shape: car_id, seq and event_time all given, the car agreeing with the topic."""
    missing = [name for name in IDENTITY_FIELDS if name not in present]
    if missing:
        raise Rejected(MISSING_FIELD, f"{', '.join(missing)} missing (a reading with {present[0]} needs all three)")
    car = obj["car_id"]
    if type(car) is not str:
        raise Rejected(WRONG_TYPE, f"car_id must be a string, got {_json_type(car)}")
    if car != record["car_id"]:
        raise Rejected(CAR_ID_MISMATCH, f"car_id {car!r:.80} differs from the topic's car {record['car_id']!r}")
    seq = _integer("seq", obj["seq"])
    if seq < 0 or seq >= 2**63:
        raise Rejected(OUT_OF_RANGE, f"seq={seq} must be between 0 and 2^63-1")
    event_time = _integer("event_time", obj["event_time"])
    if not EVENT_TIME_RANGE[0] <= event_time <= EVENT_TIME_RANGE[1]:
        raise Rejected(OUT_OF_RANGE, f"event_time={event_time} is not epoch milliseconds between 1970 and 2100")
    record["seq"] = seq
    record["event_time"] = event_time
