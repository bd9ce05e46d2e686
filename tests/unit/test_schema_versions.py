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

V1_SENSORS = [f["name"] for f in schemas.raw_schema(schemas.READING, "v1")["fields"] if "range" in f]
PEAKS = ["accelerometer_1_1_peak", "accelerometer_1_2_peak", "accelerometer_2_1_peak", "accelerometer_2_2_peak"]
V1_READING = {
    **{name: 12.5 for name in V1_SENSORS},
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


def test_reading_schema_keeps_versions_1_and_2_and_each_adds_only_fields_with_defaults():
    assert schemas.previous_versions(schemas.READING) == ["v1", "v2"]
    added = {"v2": {"out_of_range", "seq_origin"}, "": {*PEAKS, "failure_mode"}}
    for old_version, new_version in (("v1", "v2"), ("v2", "")):
        old = {f["name"] for f in schemas.raw_schema(schemas.READING, old_version)["fields"]}
        new = {f["name"]: f for f in schemas.raw_schema(schemas.READING, new_version)["fields"]}
        assert set(new) - old == added[new_version] and old <= set(new)
        assert all("default" in new[name] for name in added[new_version])


def test_version_3_adds_the_peaks_as_optional_doubles_and_documents_what_each_sensor_summarises():
    fields = {f["name"]: f for f in schemas.raw_schema(schemas.READING)["fields"]}
    for name in PEAKS:
        assert fields[name]["type"] == ["null", "double"] and fields[name]["default"] is None
        assert fields[name]["unit"] == "m/s^2" and "Largest absolute" in fields[name]["doc"]
    for name in PEAKS:
        value = name.replace("_peak", "_value")
        assert fields[value]["range"] == [0, 50] and "RMS" in fields[value]["doc"]
    for name in schemas.SENSOR_FIELDS:
        doc = fields[name]["doc"]
        assert any(words in doc for words in ("at the reading's time", "over the reading interval", "version")), name


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
        assert decoded == {
            **V1_READING,
            **dict.fromkeys(PEAKS),
            "failure_mode": None,
            "out_of_range": [],
            "seq_origin": "SENDER",
        }


def test_codec_decodes_version_2_records_in_both_framings_with_no_peak_invented():
    codec = AvroCodec(schemas.READING, "car-sensor")
    v2 = {**V1_READING, "out_of_range": ["battery_voltage"], "seq_origin": "CONTENT_HASH"}
    body = _body(schemas.wire_schema(schemas.READING, "v2"), v2)
    for data in (single_object_header(schemas.READING, "v2") + body, b"\x00" + struct.pack(">I", 8) + body):
        assert codec.decode(data) == {**v2, **dict.fromkeys(PEAKS), "failure_mode": None}


def test_codec_decodes_current_records_without_a_registry_in_confluent_framing():
    codec = AvroCodec(schemas.READING, "car-sensor")
    record = {
        **V1_READING,
        **dict.fromkeys(PEAKS, 3.5),
        "failure_mode": "shock_absorber",
        "out_of_range": ["battery_voltage"],
        "seq_origin": "CONTENT_HASH",
    }
    data = b"\x00" + struct.pack(">I", 9) + _body(schemas.wire_schema(schemas.READING), record)
    assert codec.decode(data) == record


def test_a_confluent_body_that_no_version_reads_whole_is_a_decode_error():
    codec = AvroCodec(schemas.READING, "car-sensor")
    with pytest.raises(DecodeError, match="no version"):
        codec.decode(b"\x00\x00\x00\x00\x01" + b"\x02\x41")
