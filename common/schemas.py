"""The Avro schemas of schemas/*.avsc, loaded once and shared by every service.

The .avsc files are package data of the `schemas` package, read through importlib.resources: the same files from a
checkout, an editable install or an installed wheel, whatever the working directory.

`schemas/<name>.avsc` is the current version, the one every service writes. Earlier versions stay, unchanged, in
`schemas/previous/<name>.v<N>.avsc`: records written with them are still on Kafka, and readers resolve them to the
current version (new fields take their defaults). A new version must be able to read every earlier one
(backward compatible): tests/unit/test_schema_versions.py proves it with fastavro's schema resolution.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import fastavro

SCHEMA_FILES: Traversable = files("schemas")
PREVIOUS_FILES: Traversable = SCHEMA_FILES / "previous"
READING = "car_sensor_reading"
PREDICTION = "car_failure_prediction"


@cache
def raw_schema(name: str, version: str = "") -> dict[str, Any]:
    """The schema as written in its .avsc file, custom attributes (such as `range`) included; `version` names an
    earlier one (`v1` reads `schemas/previous/<name>.v1.avsc`), empty the current one."""
    path = PREVIOUS_FILES / f"{name}.{version}.avsc" if version else SCHEMA_FILES / f"{name}.avsc"
    return json.loads(path.read_text(encoding="utf-8"))


def previous_versions(name: str) -> list[str]:
    """The earlier versions of a schema that are kept, oldest first (`v1`, `v2`, ...)."""
    prefix, suffix = f"{name}.v", ".avsc"
    found = (
        entry.name[len(name) + 1 : -len(suffix)]
        for entry in PREVIOUS_FILES.iterdir()
        if entry.name.startswith(prefix) and entry.name.endswith(suffix)
    )
    return sorted(found, key=lambda version: int(version[1:]))


@cache
def parsed_schema(name: str, version: str = "") -> dict[str, Any]:
    return fastavro.parse_schema(raw_schema(name, version))


@cache
def wire_schema(name: str, version: str = "") -> dict[str, Any]:
    """The schema without logical types: the same bytes on the wire, but timestamps stay int milliseconds
    in Python (the stack computes with them) instead of becoming datetime objects."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "logicalType"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return fastavro.parse_schema(strip(raw_schema(name, version)))


def schema_json(name: str, version: str = "") -> str:
    return json.dumps(raw_schema(name, version))


def field_names(name: str) -> list[str]:
    return [field["name"] for field in raw_schema(name)["fields"]]


SEQ_FROM_SENDER = "SENDER"
SEQ_FROM_CONTENT = "CONTENT_HASH"
"""The symbols of a reading's `seq_origin`: seq numbered by the sender, or a hash of the payload (an identity, not
an order)."""

BRIDGE_FIELDS = ("out_of_range", "seq_origin")
"""Reading fields the bridge fills in; a JSON payload carries the others."""


def payload_fields() -> list[str]:
    """The fields of a reading's JSON payload (the full shape), in schema order."""
    return [name for name in field_names(READING) if name not in BRIDGE_FIELDS]


def _sensor_fields() -> list[dict[str, Any]]:
    return [field for field in raw_schema(READING)["fields"] if "range" in field]


SENSOR_FIELDS: tuple[str, ...] = tuple(field["name"] for field in _sensor_fields())
"""The 22 sensor fields in schema order: the model's feature order unless its metadata says otherwise."""

OPTIONAL_SENSOR_FIELDS: frozenset[str] = frozenset(
    f["name"] for f in _sensor_fields() if isinstance(f["type"], list) and "null" in f["type"]
)
"""Sensor fields whose type is a union with null (since readings version 3, the accelerometer peaks): a sender may
leave them out, and null means "not reported". Nothing fills one in; a model that needs one scores the reading as
out of distribution (ml/features.py, missing_values)."""

INT_SENSOR_FIELDS: frozenset[str] = frozenset(f["name"] for f in _sensor_fields() if f["type"] == "int")

SENSOR_RANGES: dict[str, tuple[float, float]] = {f["name"]: tuple(f["range"]) for f in _sensor_fields()}
"""Inclusive plausibility bounds per sensor field, in the simulator's units (SENSOR_UNITS); the bridge flags
readings outside them (or rejects them, with range_policy=reject)."""

SENSOR_UNITS: dict[str, str] = {f["name"]: f["unit"] for f in _sensor_fields()}
