"""The dead-letter topic's contract, one for every writer (bridge, predictor): the record's value is the input's
original bytes (the head of them beyond `VALUE_LIMIT`), its key the car id when one is known, and its headers:

- `error`: a short code (the bridge's validation codes, the predictor's `undecodable`): what to count and alert on;
- `error_detail`: one line for humans;
- `service`: who wrote it (`bridge`, `predictor`);
- `received_at`: when, ISO 8601 in UTC with milliseconds;
- where the input came from: `mqtt_topic` (the bridge) or `source_topic`, `source_partition`, `source_offset`
  (the predictor, reading Kafka);
- `payload_truncated_from`: the original size in bytes, only when the value holds the head of a larger payload.

docs/contracts.md lists the same; `parse()` reads the headers back (tests, tools).
"""

from __future__ import annotations

from datetime import UTC, datetime

ERROR = "error"
ERROR_DETAIL = "error_detail"
SERVICE = "service"
RECEIVED_AT = "received_at"
MQTT_TOPIC = "mqtt_topic"
SOURCE_TOPIC = "source_topic"
SOURCE_PARTITION = "source_partition"
SOURCE_OFFSET = "source_offset"
PAYLOAD_TRUNCATED_FROM = "payload_truncated_from"

# Kafka's default record limit is about 1 MB: a rejected payload is kept whole up to this size.
VALUE_LIMIT = 512 * 1024
DETAIL_LIMIT = 1000  # characters: a detail quotes the input, which may be huge


def record(
    service: str,
    code: str,
    detail: str,
    value: bytes | None,
    *,
    mqtt_topic: bytes | None = None,
    source: tuple[str, int, int] | None = None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The DLQ value and headers for one input that could not be processed."""
    headers = [
        (ERROR, code.encode()),
        (ERROR_DETAIL, detail[:DETAIL_LIMIT].encode(errors="replace")),
        (SERVICE, service.encode()),
        (RECEIVED_AT, datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
    ]
    if mqtt_topic is not None:
        headers.append((MQTT_TOPIC, mqtt_topic))
    if source is not None:
        topic, partition, offset = source
        headers += [
            (SOURCE_TOPIC, topic.encode()),
            (SOURCE_PARTITION, b"%d" % partition),
            (SOURCE_OFFSET, b"%d" % offset),
        ]
    value = value or b""
    if len(value) > VALUE_LIMIT:
        headers.append((PAYLOAD_TRUNCATED_FROM, b"%d" % len(value)))
        value = value[:VALUE_LIMIT]
    return value, headers


def parse(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """A DLQ record's headers as text (undecodable bytes replaced), last value of a name winning."""
    return {name: value.decode(errors="replace") for name, value in headers or ()}
