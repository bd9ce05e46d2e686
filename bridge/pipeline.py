"""One MQTT message in, one Kafka record out, and the MQTT acknowledgement only once Kafka confirmed it.

Everything here runs on the bridge's single loop thread (MQTT callbacks and Kafka delivery reports alike), so the
counters and queues need no locks. What the bridge holds is bounded twice: by count (the MQTT Receive Maximum it
announces: the broker sends no more unacknowledged messages) and by bytes (`max_buffer_bytes`: above it the bridge
stops reading MQTT until Kafka confirmed enough, see bridge/app.py).

Order: each message gets its arrival number; a record that waits (librdkafka's queue full, the schema registry
down, a failed delivery produced again) waits in a heap by that number, and nothing newer is produced while an
older one waits, so the readings of one car reach Kafka in the order they arrived. The producer itself retries
transient errors without a deadline (`message.timeout.ms` 0, idempotent, so in order); what it reports as failed
is an error that retrying does not cure. A reading that failed is produced again after a pause, holding back
every newer one (nothing can pass it); a DLQ record that failed is parked (bridge/parking.py), so that bad input
can never stall good readings.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, Message, Producer
from paho.mqtt.client import MQTTMessage

from bridge.kafka_logs import Throttle
from bridge.metrics import Metrics
from bridge.parking import ParkingFile
from bridge.validation import BAD_TOPIC, UNPROCESSABLE, RangePolicy, Rejected, TopicRule, parse_reading
from common import dlq
from common.avro import AvroCodec
from common.errors import RegistryUnavailable

log = logging.getLogger(__name__)
log.addFilter(Throttle(by_template=True))  # a fault repeats per message: one line per 30 s and kind is enough

RETRY_DELAY_S = 1.0  # before a failed reading is produced again
HELD_RETRY_S = 10.0  # before a DLQ record that could not be parked is offered to the DLQ again
MAX_REGISTRY_PAUSE_S = 10.0
SERVICE = "bridge"
Acknowledge = Callable[[int, int, int], None]


class Pending(NamedTuple):
    """What a delivery report needs to finish one MQTT message."""

    order: int  # arrival number: a retried record goes back to its place
    mid: int
    qos: int
    generation: int  # the MQTT connection it arrived on: an older connection's message ids are stale
    produced_at: float
    dead_letter: bool
    size: int  # bytes counted against max_buffer_bytes until Kafka confirmed it
    headers: list[tuple[str, bytes]] | None  # a failed delivery's report carries none: kept to produce it again


class Job(NamedTuple):
    """A record waiting to be produced; heap-ordered by arrival (`order` is unique, so no other field compares)."""

    order: int
    due: float
    topic: str
    key: bytes | None
    value: bytes | None  # None: not encoded yet (the schema registry did not answer)
    record: dict[str, Any] | None
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
        parking: ParkingFile,
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
        self.parking = parking
        self.range_policy = range_policy
        self.fatal: KafkaError | None = None
        self._arrivals = 0
        self._backlog: list[Job] = []  # heap by arrival
        self._held: list[Job] = []  # DLQ records neither the DLQ nor the parking file took
        self._registry_pause = 0.5

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
            log.exception("validating a message failed unexpectedly; sending it to the DLQ (on %r)", message._topic)
            self._dead_letter(message, Rejected(UNPROCESSABLE, f"{type(exc).__name__}: {exc}"), car, generation)
            return
        if record["event_time"] is None:  # a payload without identity: seq is its content hash
            record["event_time"] = int(time.time() * 1000)
        if record["out_of_range"]:
            stats.flagged += 1
            stats.out_of_range.update(record["out_of_range"])
        pending = self._pending(message, generation, len(message.payload))
        self._submit(Job(pending.order, 0.0, self.readings_topic, car.encode(), None, record, None, pending))

    def _dead_letter(self, message: MQTTMessage, rejected: Rejected, car: str | None, generation: int) -> None:
        self.stats.rejected[rejected.code] += 1
        log.debug("rejected message on %r: %s", message._topic, rejected)
        value, headers = dlq.record(SERVICE, rejected.code, rejected.detail, message.payload, mqtt_topic=message._topic)
        pending = self._pending(message, generation, len(value) + sum(len(v) for _, v in headers), headers)
        self._submit(
            Job(pending.order, 0.0, self.dlq_topic, car.encode() if car else None, value, None, headers, pending)
        )

    def _pending(self, message: MQTTMessage, generation: int, size: int, dlq_headers: list | None = None) -> Pending:
        self._arrivals += 1
        self.stats.bytes_held += size
        now = time.monotonic()
        return Pending(
            self._arrivals, message.mid, message.qos, generation, now, dlq_headers is not None, size, dlq_headers
        )

    def _submit(self, job: Job) -> None:
        if self._backlog:  # keep the order: nothing overtakes what already waits
            heapq.heappush(self._backlog, job)
            return
        wait = self._send(job)
        if wait is not None:
            heapq.heappush(self._backlog, job._replace(due=time.monotonic() + wait))

    def _send(self, job: Job) -> float | None:
        """Hand the record to librdkafka; None when it took it, else the seconds to wait before the next try."""
        value = job.value
        if value is None:
            try:
                value = self.codec.encode(job.record)
            except RegistryUnavailable as exc:
                log.warning("%s; holding readings, unacknowledged, until it answers", exc)
                self.stats.registry_waits += 1
                self._registry_pause = min(self._registry_pause * 2, MAX_REGISTRY_PAUSE_S)
                return self._registry_pause
            self._registry_pause = 0.5
        try:
            on_delivery = partial(self._delivered, job.pending)
            self.producer.produce(job.topic, value, job.key, headers=job.headers, on_delivery=on_delivery)
        except BufferError:
            return 0.0
        return None

    def pump(self) -> None:
        """Produce what waits, oldest first, as far as librdkafka's queue and the registry allow."""
        now = time.monotonic()
        while self._backlog and self._backlog[0].due <= now:
            job = heapq.heappop(self._backlog)
            wait = self._send(job)
            if wait is not None:
                heapq.heappush(self._backlog, job._replace(due=now + wait))
                break
        while self._held and self._held[0].due <= now:
            job = self._held.pop(0)
            self.stats.dlq_held = len(self._held)
            if self._send(job) is not None:
                self._held.insert(0, job)
                break

    def _delivered(self, pending: Pending, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed(pending, error, message)
            return
        if pending.dead_letter:
            self.stats.dead_lettered += 1
        else:
            self.stats.produced += 1
        self.metrics.produce_latency.observe(time.monotonic() - pending.produced_at)
        self._done(pending)

    def _done(self, pending: Pending) -> None:
        """The message is safe (in Kafka, or parked): release it and acknowledge it to the broker."""
        self.stats.in_flight -= 1
        self.stats.bytes_held -= pending.size
        if pending.qos:
            self.acknowledge(pending.mid, pending.qos, pending.generation)

    def _failed(self, pending: Pending, error: KafkaError, message: Message) -> None:
        """Never acknowledge, never drop; a fatal producer error stops the bridge."""
        if error.fatal():
            self.fatal = error
            return
        job = Job(pending.order, 0.0, message.topic(), message.key(), message.value(), None, pending.headers, pending)
        if pending.dead_letter:
            self._dlq_refused(job, error)
            return
        self.stats.retries += 1
        log.warning("Kafka refused a reading for %s (%s); producing it again, newer ones wait", job.topic, error)
        heapq.heappush(self._backlog, job._replace(due=time.monotonic() + RETRY_DELAY_S))

    def _dlq_refused(self, job: Job, error: KafkaError) -> None:
        if self.parking.park(job.value or b"", job.headers or [], error.str()):
            self.stats.parked += 1
            log.error(
                "the DLQ %s refused a rejected message (%s); parked it in %s", job.topic, error, self.parking.path
            )
            self._done(job.pending)
            return
        self.stats.dlq_refusals += 1
        log.error(
            "the DLQ %s refused a rejected message (%s) and the parking file %s is full or unwritable; holding it "
            "unacknowledged, offering it again every %.0f s",
            job.topic,
            error,
            self.parking.path,
            HELD_RETRY_S,
        )
        self._held.append(job._replace(due=time.monotonic() + HELD_RETRY_S))
        self.stats.dlq_held = len(self._held)

    @property
    def backlog(self) -> int:
        return len(self._backlog) + len(self._held)


def _topic(message: MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:
        raise Rejected(BAD_TOPIC, f"topic is not valid UTF-8: {message._topic!r:.200}") from None


def delivery_config(buffer_size: int) -> dict[str, Any]:
    """librdkafka settings: the whole MQTT window fits its queue (BufferError stays an exception), and transient
    errors are retried without a deadline, in order (a delivery report with an error means retrying cannot help)."""
    return {"queue.buffering.max.messages": max(2 * buffer_size, 10_000), "message.timeout.ms": 0}
