"""Avro on Kafka in the two framings the README names ("Avro on Kafka"), and nothing of our own.

- Confluent wire format (magic byte 0, 4-byte big-endian schema id, body) when a schema registry is configured.
- Avro single-object encoding (C3 01, 8-byte little-endian CRC-64-AVRO fingerprint, body) when none is.

Every reader accepts both, and every version of the schema (common/schemas.py): a record written with an earlier
version is resolved to the current one, its new fields taking their defaults. The single-object header names the
writer's version by its fingerprint; with a registry the schema id does. Without a registry a Confluent-framed
record is decoded with the newest local version that reads it exactly, since this stack only ever writes the
schemas in schemas/.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from common import schemas
from common.errors import DecodeError, RegistryUnavailable

log = logging.getLogger(__name__)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0


def single_object_header(name: str, version: str = "") -> bytes:
    """C3 01 and the schema's CRC-64-AVRO fingerprint, little-endian, as the Avro specification and Avro's own
    libraries write it (fastavro's hex digest is those eight bytes in that order)."""
    canonical = to_parsing_canonical_form(schemas.parsed_schema(name, version))
    return SINGLE_OBJECT_MAGIC + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def legacy_single_object_header(name: str, version: str = "") -> bytes:
    """The header this stack wrote before issue 27, its fingerprint's bytes reversed (big-endian): Avro's Java
    library, the first reader outside this code, found no schema for it. Still read, so that records already on
    the topics (and recordings of them) decode; never written."""
    header = single_object_header(name, version)
    return header[:2] + header[:1:-1]


def _millis(record: dict[str, Any]) -> dict[str, Any]:
    """timestamp-millis fields as int milliseconds, as the rest of the stack uses them."""
    return {k: int(v.timestamp() * 1000) if isinstance(v, datetime) else v for k, v in record.items()}


class AvroCodec:
    """Encodes records of one schema for one topic, and decodes records in either framing."""

    def __init__(self, name: str, topic: str, registry_url: str | None = None) -> None:
        self.name = name
        self.topic = topic
        self._schema = schemas.wire_schema(name)
        self._header = single_object_header(name)
        # every version a record may have been written with, newest first: header -> (writer, reader schema). The
        # current version is read without a reader schema: fastavro would compare the two on every call to find
        # nothing to resolve, which costs as much as the decoding itself (19 µs a reading with it, 8 without).
        versions = ["", *reversed(schemas.previous_versions(name))]
        self._writers = {
            single_object_header(name, v): (schemas.wire_schema(name, v), self._schema if v else None) for v in versions
        }
        legacy = {legacy_single_object_header(name, v): self._writers[single_object_header(name, v)] for v in versions}
        self._legacy = {header: known for header, known in legacy.items() if header not in self._writers}
        self._registry = None
        if registry_url:
            self._init_registry(registry_url)

    def _init_registry(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self._registry = SchemaRegistryClient({"url": url})
        self._context = SerializationContext(self.topic, MessageField.VALUE)
        self._serializer = AvroSerializer(self._registry, schemas.schema_json(self.name))
        # the current schema as reader schema: records of earlier versions are resolved to it
        self._deserializer = AvroDeserializer(self._registry, schemas.schema_json(self.name))

    @property
    def framing(self) -> str:
        return "confluent" if self._registry else "single-object"

    def encode(self, record: dict[str, Any]) -> bytes:
        """Raises RegistryUnavailable when the registry must be asked (a schema's first use) and does not answer."""
        if self._registry is not None:
            try:
                return self._serializer(record, self._context)
            except Exception as exc:
                if registry_unreachable(exc):
                    raise RegistryUnavailable(f"schema registry unavailable: {type(exc).__name__}: {exc}") from exc
                raise
        body = io.BytesIO()
        body.write(self._header)
        fastavro.schemaless_writer(body, self._schema, record)
        return body.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode one Kafka value; raises DecodeError with the reason when it cannot."""
        if data is None or len(data) < 5:
            raise DecodeError(f"value too short for Avro framing ({0 if data is None else len(data)} bytes)")
        try:
            if data[:2] == SINGLE_OBJECT_MAGIC:
                known = self._writers.get(data[:10]) or self._legacy.get(data[:10])
                if known is None:
                    raise DecodeError(
                        f"single-object fingerprint {data[2:10].hex()} is no version of the {self.name} schema"
                    )
                writer, reader = known
                return fastavro.schemaless_reader(io.BytesIO(data[10:]), writer, reader)
            if data[0] == CONFLUENT_MAGIC:
                if self._registry is not None:
                    return _millis(self._deserializer(data, self._context))
                return self._decode_unregistered(data[5:])
        except DecodeError:
            raise
        except Exception as exc:  # fastavro and the registry client raise many types on corrupt input
            if registry_unreachable(exc):  # an outage is no property of the record: the caller waits and retries
                raise RegistryUnavailable(f"schema registry unavailable: {type(exc).__name__}: {exc}") from exc
            raise DecodeError(f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        raise DecodeError(f"unknown framing: first bytes {data[:2].hex()} are neither C3 01 nor 00")

    def _decode_unregistered(self, body: bytes) -> dict[str, Any]:
        """A Confluent-framed body without a registry to name its schema: the newest version that reads it whole."""
        failure: Exception | None = None
        for writer, reader in self._writers.values():  # the legacy headers name the same versions: not tried twice
            stream = io.BytesIO(body)
            try:
                record = fastavro.schemaless_reader(stream, writer, reader)
            except Exception as exc:
                failure = exc
                continue
            if stream.tell() == len(body):
                return record
        raise DecodeError(f"no version of the {self.name} schema reads this Confluent-framed body ({failure})")


def registry_unreachable(exc: BaseException) -> bool:
    """Whether the registry client failed to reach the registry (transport error, timeout, a 5xx answer), as
    opposed to the registry answering that it knows no such schema (a 404: the record is bad)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code >= 500 or exc.http_status_code < 0
    # The client talks through httpx or its fork httpx2, whichever is installed: match their transport errors by name.
    return any(kind.__name__ in ("TransportError", "TimeoutException") for kind in type(exc).__mro__) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )
