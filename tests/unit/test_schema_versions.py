"""Every kept version of a schema stays readable: fastavro's schema resolution (the Avro spec's rules) reads a
record of each earlier version with the current schema, and AvroCodec does the same in both framings."""

import io
import struct

import fastavro
import pytest
from fastavro.read import SchemaResolutionError

from common import schemas
from common.avro import AvroCodec, single_object_header
from common.errors import DecodeError

V1_READING = {
    **{name: 12.5 for name in schemas.SENSOR_FIELDS},
    **{name: 31 for name in schemas.INT_SENSOR_FIELDS},
    "car_id": "car-00003",
    "seq": 41,
    "event_time": 1_700_000_000_000,
    "failure_occurred": None,
}


def _body(schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def test_reading_schema_keeps_version_1_and_adds_only_fields_with_defaults():
    assert schemas.previous_versions(schemas.READING) == ["v1"]
    old = {f["name"] for f in schemas.raw_schema(schemas.READING, "v1")["fields"]}
    new = {f["name"]: f for f in schemas.raw_schema(schemas.READING)["fields"]}
    added = set(new) - old
    assert added == {"out_of_range", "seq_origin"}
    assert all("default" in new[name] for name in added)
    assert old <= set(new)


def test_prediction_schema_keeps_versions_1_and_2_and_version_3_adds_alert_suppressed_with_a_default():
    assert schemas.previous_versions(schemas.PREDICTION) == ["v1", "v2"]
    old = {f["name"] for f in schemas.raw_schema(schemas.PREDICTION, "v2")["fields"]}
    new = {f["name"]: f for f in schemas.raw_schema(schemas.PREDICTION)["fields"]}
    assert set(new) - old == {"alert_suppressed"} and old <= set(new)
    assert new["alert_suppressed"]["default"] is False


@pytest.mark.parametrize("name", [schemas.READING, schemas.PREDICTION])
def test_the_current_schema_reads_every_earlier_version(name):
    """Backward compatibility as the Avro spec defines it: writer = old version, reader = current."""
    current = schemas.wire_schema(name)
    for version in schemas.previous_versions(name):
        writer = schemas.wire_schema(name, version)
        fields = {f["name"]: f for f in writer["fields"]}
        record = {n: _example(f["type"]) for n, f in fields.items()}
        decoded = fastavro.schemaless_reader(io.BytesIO(_body(writer, record)), writer, current)
        for field in current["fields"]:
            expected = record[field["name"]] if field["name"] in fields else field["default"]
            assert decoded[field["name"]] == expected, field["name"]


def _example(avro_type):
    if isinstance(avro_type, list):
        return None if "null" in avro_type else _example(avro_type[0])
    if isinstance(avro_type, dict):
        if avro_type["type"] == "enum":
            return avro_type["symbols"][-1]
        return [] if avro_type["type"] == "array" else _example(avro_type["type"])
    return {"string": "car-1", "long": 5, "int": 3, "double": 1.5, "boolean": True}[avro_type]


def test_resolution_refuses_a_change_that_breaks_old_records():
    """The control: the check above can fail. A new field without a default cannot read version 1."""
    broken = schemas.raw_schema(schemas.READING)
    broken = {**broken, "fields": [*broken["fields"], {"name": "vin", "type": "string"}]}
    writer = schemas.wire_schema(schemas.READING, "v1")
    with pytest.raises(SchemaResolutionError):
        fastavro.schemaless_reader(io.BytesIO(_body(writer, V1_READING)), writer, fastavro.parse_schema(broken))


def test_codec_decodes_version_1_records_in_both_framings_with_the_new_defaults():
    codec = AvroCodec(schemas.READING, "car-sensor")
    body = _body(schemas.wire_schema(schemas.READING, "v1"), V1_READING)
    single_object = single_object_header(schemas.READING, "v1") + body
    confluent = b"\x00" + struct.pack(">I", 7) + body
    for data in (single_object, confluent):
        decoded = codec.decode(data)
        assert decoded == {**V1_READING, "out_of_range": [], "seq_origin": "SENDER"}


def test_codec_decodes_current_records_without_a_registry_in_confluent_framing():
    codec = AvroCodec(schemas.READING, "car-sensor")
    record = {**V1_READING, "out_of_range": ["battery_voltage"], "seq_origin": "CONTENT_HASH"}
    data = b"\x00" + struct.pack(">I", 9) + _body(schemas.wire_schema(schemas.READING), record)
    assert codec.decode(data) == record


def test_a_confluent_body_that_no_version_reads_whole_is_a_decode_error():
    codec = AvroCodec(schemas.READING, "car-sensor")
    with pytest.raises(DecodeError, match="no version"):
        codec.decode(b"\x00\x00\x00\x00\x01" + b"\x02\x41")
