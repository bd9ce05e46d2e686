"""Readings for tests and the benchmark, built by the simulator (simulator/fleet.py) so that the fields are the
schema's (schemas/car_sensor_reading.avsc) and the values plausible; written to Kafka as the bridge writes them;
decoded back.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Message, Producer

from common import schemas
from common.avro import AvroCodec
from common.errors import KafkaError
from common.kafka import ensure_topics, producer_config
from common.settings import KafkaSecurity
from common.topics import mqtt_topic
from simulator.fleet import generate_readings

BRIDGE_DEFAULTS = {
    field["name"]: field["default"]
    for field in schemas.raw_schema(schemas.READING)["fields"]
    if field["name"] in schemas.BRIDGE_FIELDS
}
"""The fields the bridge fills in, at the schema's defaults: a reader of a record written without them gets these."""


OTHER_UNITS = {
    "battery_voltage": lambda volts: volts * 100,  # centivolts
    "current_draw": lambda amperes: amperes * 10,  # deciamperes
    "coolant_temp": lambda celsius: celsius + 273.15,  # kelvin
    "engine_vibration_amplitude": lambda amplitude: amplitude * 0.75,  # a sensor of another scale, in range
}
"""Another fleet's units for the simulator's fields: the data of a fleet that drifted (tests, studies)."""


def in_other_units(reading: dict) -> dict:
    return reading | {name: convert(reading[name]) for name, convert in OTHER_UNITS.items()}


def readings(cars: int, per_car: int, seed: int = 7, **fleet: Any) -> list[dict]:
    """The simulator's readings, car by car within each step: every field a sender publishes
    (common.schemas.payload_fields). `fleet`: FleetConfig's options (failure_rate, interval_s, ...)."""
    return list(generate_readings(cars, per_car, seed=seed, **fleet))


def reading(**overrides: Any) -> dict:
    """One valid reading as a sender publishes it (car-00001, seq 0), with `overrides`; a name that is no field
    of the schema is refused, so that a typo cannot build a reading the test did not mean."""
    unknown = set(overrides) - set(schemas.field_names(schemas.READING))
    if unknown:
        raise ValueError(f"not fields of {schemas.READING}: {sorted(unknown)}")
    return {**readings(1, 1)[0], **overrides}


def as_in_kafka(sent: dict, **bridge_fields: Any) -> dict:
    """`sent` as a reader decodes it from Kafka: every field of the schema, the bridge's own (out_of_range,
    seq_origin) at their defaults unless given."""
    return {**sent, **copy.deepcopy(BRIDGE_DEFAULTS), **bridge_fields}


def as_mqtt_messages(records: Iterable[dict]) -> list[tuple[str, bytes]]:
    """(MQTT topic, JSON payload) of each reading, as the simulator publishes it."""
    return [(mqtt_topic(r["car_id"]), json.dumps(r).encode()) for r in records]


def write_readings(
    bootstrap: str, security: KafkaSecurity, topic: str, records: Iterable[dict], partitions: int = 3
) -> int:
    """Readings to `topic` (created with `partitions` when missing) as the bridge writes them: Avro single-object
    encoding, key = car_id; returns how many."""
    return write_records(bootstrap, security, topic, records, schemas.READING, partitions)


def write_records(
    bootstrap: str, security: KafkaSecurity, topic: str, records: Iterable[dict], schema: str, partitions: int = 3
) -> int:
    """Records of `schema` (readings, or predictions with schema=PREDICTION) to `topic` (created with `partitions`
    when missing), Avro single-object encoding, key = car_id; returns how many."""
    ensure_topics(bootstrap, security, {topic: partitions})
    codec = AvroCodec(schema, topic)
    producer = Producer(producer_config(bootstrap, security, **{"linger.ms": 20}))
    count = 0
    for record in records:
        producer.produce(topic, key=record["car_id"].encode(), value=codec.encode(record))
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise KafkaError(f"records for {topic} were not all delivered")
    return count


def decoded(messages: Iterable[Message], schema: str = schemas.READING, registry_url: str | None = None) -> list[dict]:
    """The Avro values of `messages` (readings, or predictions with schema=PREDICTION), each checked to be keyed
    by its car_id."""
    codecs: dict[str, AvroCodec] = {}
    records = []
    for message in messages:
        topic = message.topic()
        if topic not in codecs:
            codecs[topic] = AvroCodec(schema, topic, registry_url)
        codec = codecs[topic]
        record = codec.decode(message.value())
        if message.key() != record["car_id"].encode():
            raise AssertionError(f"{topic} {message.partition()}@{message.offset()}: key {message.key()!r} is not "
                                 f"its car_id {record['car_id']!r}")  # fmt: skip
        records.append(record)
    return records
