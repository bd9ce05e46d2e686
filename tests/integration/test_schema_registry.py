"""Schema evolution proven by a real schema registry (the `schema_registry_url` fixture) and a real Kafka.

- The registry's own compatibility check accepts each current schema after its kept version 1 under BACKWARD, and
  refuses a change that breaks old records (the control: the check can fail), both in the check and when
  registering.
- A record written with version 1 through the registry and one written by the stack's codec (the current version)
  lie side by side on a Kafka topic; AvroCodec decodes both, the version 1 record with the new fields' defaults.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from common import schemas
from common.avro import AvroCodec
from scripts.testkit.kafka import read_to_end, unique
from scripts.testkit.readings import reading

HEADERS = {"Content-Type": "application/vnd.schemaregistry.v1+json"}

V1_READING: dict[str, Any] = reading(car_id="car-00003", seq=41, event_time=1_700_000_000_000, failure_occurred=None)
V2_READING: dict[str, Any] = {
    **V1_READING,
    "seq": 42,
    "failure_occurred": True,
    "out_of_range": ["speed", "coolant_temp"],
    "seq_origin": "CONTENT_HASH",
}


class Registry:
    """The few calls of the Confluent REST API these tests make, and nothing of the stack's own code."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", json=body, headers=HEADERS, timeout=30)

    def register(self, subject: str, schema: str) -> requests.Response:
        return self._call("POST", f"/subjects/{subject}/versions", {"schema": schema})

    def set_compatibility(self, subject: str, level: str) -> None:
        response = self._call("PUT", f"/config/{subject}", {"compatibility": level})
        assert response.status_code == 200, response.text
        response = self._call("GET", f"/config/{subject}")
        assert response.status_code == 200, response.text
        assert response.json()["compatibilityLevel"] == level

    def is_compatible(self, subject: str, schema: str) -> bool:
        response = self._call("POST", f"/compatibility/subjects/{subject}/versions/latest", {"schema": schema})
        assert response.status_code == 200, response.text
        return response.json()["is_compatible"]

    def versions(self, subject: str) -> list[int]:
        response = self._call("GET", f"/subjects/{subject}/versions")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def registry(schema_registry_url: str) -> Registry:
    return Registry(schema_registry_url)


def _subject_with_version_1(registry: Registry, name: str) -> str:
    subject = f"{unique(name.replace('_', '-'))}-value"
    response = registry.register(subject, schemas.schema_json(name, "v1"))
    assert response.status_code == 200, response.text
    registry.set_compatibility(subject, "BACKWARD")
    return subject


@pytest.mark.parametrize("name", [schemas.READING, schemas.PREDICTION])
def test_the_registry_accepts_the_current_schema_after_version_1_under_backward(registry, name):
    subject = _subject_with_version_1(registry, name)
    assert registry.is_compatible(subject, schemas.schema_json(name)) is True
    response = registry.register(subject, schemas.schema_json(name))
    assert response.status_code == 200, response.text
    assert registry.versions(subject) == [1, 2]


def _with_field(schema: dict, field: dict) -> dict:
    return {**schema, "fields": [*schema["fields"], field]}


def _retyped(schema: dict, name: str, avro_type: str) -> dict:
    return {**schema, "fields": [{**f, "type": avro_type} if f["name"] == name else f for f in schema["fields"]]}


BREAKING_CHANGES = {
    "new field without a default": lambda s: _with_field(s, {"name": "vin", "type": "string"}),
    "double field becomes a string": lambda s: _retyped(s, "speed", "string"),
}


@pytest.mark.parametrize("change", BREAKING_CHANGES)
def test_the_registry_refuses_a_change_that_breaks_version_1_records(registry, change):
    """The control: the registry's check can fail, and it then refuses to register the schema."""
    subject = _subject_with_version_1(registry, schemas.READING)
    broken = json.dumps(BREAKING_CHANGES[change](schemas.raw_schema(schemas.READING)))
    assert registry.is_compatible(subject, broken) is False
    assert registry.register(subject, broken).status_code == 409
    assert registry.is_compatible(subject, schemas.schema_json(schemas.READING)) is True
    assert registry.versions(subject) == [1]


def test_codec_decodes_version_1_and_current_records_from_kafka(
    schema_registry_url, registry, kafka_bootstrap, topic_factory, producer
):
    topic = topic_factory("schema-registry")
    context = SerializationContext(topic, MessageField.VALUE)
    v1_serializer = AvroSerializer(
        SchemaRegistryClient({"url": schema_registry_url}), schemas.schema_json(schemas.READING, "v1")
    )
    producer.produce(topic, key=V1_READING["car_id"], value=v1_serializer(V1_READING, context))
    subject = f"{topic}-value"
    registry.set_compatibility(subject, "BACKWARD")  # the codec's own registration below passes the check
    producer.produce(
        topic, key=V2_READING["car_id"], value=AvroCodec(schemas.READING, topic, schema_registry_url).encode(V2_READING)
    )
    producer.flush(30)
    assert registry.versions(subject) == [1, 2]

    messages = read_to_end(kafka_bootstrap, topic)
    assert len(messages) == 2
    values = [m.value() for m in sorted(messages, key=lambda m: m.offset())]
    ids = [struct.unpack(">bI", value[:5]) for value in values]
    assert [magic for magic, _ in ids] == [0, 0] and ids[0][1] != ids[1][1]

    reader = AvroCodec(schemas.READING, topic, schema_registry_url)  # a fresh client, as a consumer has
    old, new = (reader.decode(value) for value in values)
    not_in_v1 = {*schemas.OPTIONAL_SENSOR_FIELDS, "failure_mode"}  # version 3's, null in a version-1 record
    assert old == {**V1_READING, **dict.fromkeys(not_in_v1), "out_of_range": [], "seq_origin": "SENDER"}
    assert new == V2_READING
    # without a registry, the same Confluent-framed records decode with the local versions
    assert [AvroCodec(schemas.READING, topic).decode(value) for value in values] == [old, new]
