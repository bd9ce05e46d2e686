"""The Avro schemas of schemas/*.avsc, loaded once and shared by every service."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
READING = "car_sensor_reading"
PREDICTION = "car_failure_prediction"


@cache
def raw_schema(name: str) -> dict[str, Any]:
    """The schema as written in `schemas/<name>.avsc`, custom attributes (such as `range`) included."""
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


@cache
def parsed_schema(name: str) -> dict[str, Any]:
    return fastavro.parse_schema(raw_schema(name))


@cache
def wire_schema(name: str) -> dict[str, Any]:
    """The schema without logical types: the same bytes on the wire, but timestamps stay int milliseconds
    in Python (the stack computes with them) instead of becoming datetime objects."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "logicalType"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return fastavro.parse_schema(strip(raw_schema(name)))


def schema_json(name: str) -> str:
    return json.dumps(raw_schema(name))


def field_names(name: str) -> list[str]:
    return [field["name"] for field in raw_schema(name)["fields"]]


def _sensor_fields() -> list[dict[str, Any]]:
    return [field for field in raw_schema(READING)["fields"] if "range" in field]


SENSOR_FIELDS: tuple[str, ...] = tuple(field["name"] for field in _sensor_fields())
"""The 18 sensor fields in schema order: the model's feature order unless its metadata says otherwise."""

INT_SENSOR_FIELDS: frozenset[str] = frozenset(f["name"] for f in _sensor_fields() if f["type"] == "int")

SENSOR_RANGES: dict[str, tuple[float, float]] = {f["name"]: tuple(f["range"]) for f in _sensor_fields()}
"""Inclusive physical bounds per sensor field; the bridge rejects readings outside them."""
