"""One MQTT message in, one Kafka record out, and the MQTT acknowledgement only once Kafka confirmed it.

Everything here runs on the bridge's single loop thread (MQTT callbacks and Kafka delivery reports alike), so the
counters and queues need no locks. The number of unconfirmed messages is bounded by the MQTT Receive Maximum the
bridge announces (the broker may not send more unacknowledged QoS 1 messages), so nothing here grows without bound.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, Message, Producer
from paho.mqtt.client import MQTTMessage

from bridge.metrics import Metrics
from bridge.validation import BAD_TOPIC, UNPROCESSABLE, RangePolicy, Rejected, TopicRule, parse_reading
from common.avro import AvroCodec

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0
# Kafka's default record limit is about 1 MB: the DLQ keeps a rejected payload whole up to this size.
DLQ_VALUE_LIMIT = 512 * 1024
Acknowledge = Callable[[int, int, int], None]


class Pending(NamedTuple):
    """What a delivery report needs to finish one MQTT message."""

    mid: int
    qos: int
    generation: int  # the MQTT connection it arrived on: an older connection's message ids are stale
    produced_at: float
    dead_letter: bool


class Job(NamedTuple):
    """A record waiting to be produced (again): librdkafka's queue was full, or a delivery failed."""

    due: float
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None
    pending: Pending


class Pipeline:
    def __init__(
        self,
        producer: Producer,
        codec: AvroCodec,
        metrics: Metrics,
        topics: TopicRule,
        *,
        readings_topic: str,
        dlq_topic: str,
        max_payload_bytes: int,
        acknowledge: Acknowledge,
        range_policy: RangePolicy = RangePolicy.FLAG,
    ) -> None:
        self.producer = producer
        self.codec = codec
        self.metrics = metrics
        self.stats = metrics.stats
        self.topics = topics
        self.readings_topic = readings_topic
        self.dlq_topic = dlq_topic
        self.max_payload_bytes = max_payload_bytes
        self.acknowledge = acknowledge
        self.range_policy = range_policy
        self.fatal: KafkaError | None = None
        self._backlog: deque[Job] = deque()

    def handle(self, message: MQTTMessage, generation: int) -> None:
        """Validate, convert and produce one MQTT message; rejected input goes to the DLQ."""
        stats = self.stats
        stats.received += 1
        stats.in_flight += 1
        if message.dup:
            stats.redelivered += 1
        car = None
        try:
            car = self.topics.car_id(_topic(message))
            record = parse_reading(car, message.payload, self.max_payload_bytes, self.range_policy)
        except Rejected as rejected:
            self._dead_letter(message, rejected, car, generation)
            return
        except Exception as exc:  # a validator bug must not crash-loop the bridge on one payload
            log.exception("validating a message on %r failed unexpectedly; sending it to the DLQ", message._topic)
            self._dead_letter(message, Rejected(UNPROCESSABLE, f"{type(exc).__name__}: {exc}"), car, generation)
            return
        if record["event_time"] is None:  # a payload without identity: seq is its content hash
            record["event_time"] = int(time.time() * 1000)
        if record["out_of_range"]:
            stats.flagged += 1
            stats.out_of_range.update(record["out_of_range"])
        pending = Pending(message.mid, message.qos, generation, time.monotonic(), False)
        self._produce(self.readings_topic, car.encode(), self.codec.encode(record), None, pending)

    def _dead_letter(self, message: MQTTMessage, rejected: Rejected, car: str | None, generation: int) -> None:
        self.stats.rejected[rejected.code] += 1
        log.debug("rejected message on %r: %s", message._topic, rejected)
        headers = [
            ("error", rejected.code.encode()),
            ("error_detail", rejected.detail.encode()),
            ("mqtt_topic", message._topic),
            ("received_at", datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
        ]
        value = message.payload
        if len(value) > DLQ_VALUE_LIMIT:
            # Kafka caps record size: keep the head of a huge payload and say how large it was.
            headers.append(("payload_truncated_from", str(len(value)).encode()))
            value = value[:DLQ_VALUE_LIMIT]
        pending = Pending(message.mid, message.qos, generation, time.monotonic(), True)
        self._produce(self.dlq_topic, car.encode() if car else None, value, headers, pending)

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list | None, pending: Pending, due: float = 0.0
    ) -> None:
        if self._backlog:  # keep the order: nothing overtakes what already waits
            self._backlog.append(Job(due, topic, key, value, headers, pending))
            return
        try:
            self.producer.produce(topic, value, key, headers=headers, on_delivery=partial(self._delivered, pending))
        except BufferError:
            self._backlog.append(Job(due, topic, key, value, headers, pending))

    def pump(self) -> None:
        """Produce what waits in the backlog, as far as librdkafka's queue takes it."""
        now = time.monotonic()
        while self._backlog and self._backlog[0].due <= now:
            job = self._backlog[0]
            try:
                on_delivery = partial(self._delivered, job.pending)
                self.producer.produce(job.topic, job.value, job.key, headers=job.headers, on_delivery=on_delivery)
            except BufferError:
                return
            self._backlog.popleft()

    def _delivered(self, pending: Pending, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed(pending, error, message)
            return
        stats = self.stats
        stats.in_flight -= 1
        if pending.dead_letter:
            stats.dead_lettered += 1
        else:
            stats.produced += 1
        self.metrics.produce_latency.observe(time.monotonic() - pending.produced_at)
        if pending.qos:
            self.acknowledge(pending.mid, pending.qos, pending.generation)

    def _failed(self, pending: Pending, error: KafkaError, message: Message) -> None:
        """Never acknowledge, never drop: produce again later; a fatal producer error stops the bridge."""
        if error.fatal():
            self.fatal = error
            return
        self.stats.retries += 1
        log.warning("Kafka delivery to %s failed (%s); producing it again", message.topic(), error)
        headers = message.headers()
        job = Job(time.monotonic() + RETRY_DELAY_S, message.topic(), message.key(), message.value(), headers, pending)
        self._backlog.append(job)

    @property
    def backlog(self) -> int:
        return len(self._backlog)


def _topic(message: MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:
        raise Rejected(BAD_TOPIC, f"topic is not valid UTF-8: {message._topic!r:.200}") from None


def delivery_config(buffer_size: int) -> dict[str, Any]:
    """librdkafka settings sized so that the whole MQTT window fits its queue: BufferError stays an exception."""
    return {"queue.buffering.max.messages": max(2 * buffer_size, 10_000)}
