import io
import struct

import fastavro
import pytest

from common import schemas
from common.avro import AvroCodec, legacy_single_object_header, registry_unreachable, single_object_header
from common.errors import DecodeError
from common.topics import READINGS_TOPIC


def reading(**changes):
    record = {name: 1.5 for name in schemas.SENSOR_FIELDS}
    record.update({name: 30 for name in schemas.INT_SENSOR_FIELDS})
    record.update(car_id="car-00001", seq=7, event_time=1_700_000_000_123, failure_occurred=True)
    record.update(failure_mode="drive_shaft")
    record.update(out_of_range=[], seq_origin="SENDER")
    record.update(changes)
    return record


def test_reading_schema_has_the_fields_of_design_md():
    assert len(schemas.SENSOR_FIELDS) == 22  # 18, and since version 3 the four accelerometer peaks
    assert schemas.field_names(schemas.READING)[:3] == ["car_id", "seq", "event_time"]
    assert schemas.field_names(schemas.READING)[-4:] == [
        "failure_occurred",
        "failure_mode",
        "out_of_range",
        "seq_origin",
    ]
    assert {
        "tire_pressure_1_1",
        "tire_pressure_1_2",
        "tire_pressure_2_1",
        "tire_pressure_2_2",
        "control_unit_firmware",
    } == schemas.INT_SENSOR_FIELDS


def crc64_avro(data: bytes) -> int:
    """The Avro specification's reference CRC-64-AVRO ("Schema Fingerprints"), written out here so that the
    header is checked against the specification, not against the library that computes it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty if fp & 1 else 0)
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_single_object_header_is_the_specs_fingerprint_little_endian():
    # Avro's Java library writes C3 01 and the 64-bit fingerprint little-endian; this stack wrote it reversed
    # until a Java reader found no schema for it (issue 27).
    from fastavro.schema import to_parsing_canonical_form

    for version in ("", *schemas.previous_versions(schemas.READING)):
        canonical = to_parsing_canonical_form(schemas.parsed_schema(schemas.READING, version))
        expected = b"\xc3\x01" + crc64_avro(canonical.encode()).to_bytes(8, "little")
        assert single_object_header(schemas.READING, version) == expected


def test_a_record_written_with_the_legacy_byte_reversed_header_still_decodes():
    codec = AvroCodec(schemas.READING, READINGS_TOPIC)
    data = codec.encode(reading())
    legacy = legacy_single_object_header(schemas.READING) + data[10:]
    assert legacy[:10] != data[:10] and codec.decode(legacy) == reading()


def test_single_object_round_trip():
    codec = AvroCodec(schemas.READING, READINGS_TOPIC)
    data = codec.encode(reading())
    assert data[:10] == single_object_header(schemas.READING)
    assert codec.decode(data) == reading()


def test_the_current_version_decodes_to_what_resolving_it_against_itself_gives():
    # the codec skips schema resolution for what this stack writes: the same dict as the resolving path
    codec = AvroCodec(schemas.READING, READINGS_TOPIC)
    data = codec.encode(reading(out_of_range=["speed"], seq_origin="CONTENT_HASH"))
    schema = schemas.wire_schema(schemas.READING)
    assert codec.decode(data) == fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, schema)


def test_confluent_framing_decodes_without_registry_using_the_local_schema():
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schemas.parsed_schema(schemas.READING), reading(seq=99))
    framed = b"\x00" + struct.pack(">I", 42) + body.getvalue()
    assert AvroCodec(schemas.READING, READINGS_TOPIC).decode(framed)["seq"] == 99


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b'{"car_id": 1}', "unknown framing"),
        (single_object_header(schemas.PREDICTION) + b"\x00\x00", "is no version of the car_sensor_reading schema"),
        (single_object_header(schemas.READING) + b"\x02", "corrupt Avro body"),
    ],
)
def test_undecodable_values_raise_decode_error_with_the_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        AvroCodec(schemas.READING, READINGS_TOPIC).decode(data)


def test_a_registry_that_cannot_be_reached_is_told_apart_from_a_schema_it_does_not_know():
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    assert registry_unreachable(SchemaRegistryError(503, 50301, "unavailable"))
    assert registry_unreachable(ConnectionRefusedError(111, "Connection refused"))
    assert registry_unreachable(TimeoutError())
    assert not registry_unreachable(SchemaRegistryError(404, 40403, "Schema not found"))
    assert not registry_unreachable(ValueError("corrupt body"))
