"""The judge's reading of the three topics into its lookback (lookback.py): readings (Avro CarSensorReading), the
champion's predictions (the product) and the challenger's (the shadow), Avro CarFailurePrediction.

An observer, never a member of a service's group: one confluent-kafka consumer ASSIGNED every partition of the
three topics, each from the first record `lookback_seconds` back (a partition without one: from its end), and
nothing is committed; its throw-away group id starts with the ml readers' prefix (ML_READER_GROUP_PREFIX), which
the secured mode's ACLs name. Topics and partitions that appear later are picked up the same way. Only committed
records are read (librdkafka's read_committed): an aborted batch of a predictor never counts.

`caught_up`: every partition assigned has been read up to the end it had when it was assigned. Until then the
lookback holds an arbitrary part of the backlog (one topic read further than another), which the judge does not
judge. A record that does not decode is skipped with a warning (at most one a minute); while the schema registry
does not answer, the same batch is decoded again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from common import schemas
from common.avro import AvroCodec
from common.errors import DecodeError, RegistryUnavailable
from common.kafka import consumer_config, new_partitions_from
from common.topics import ML_READER_GROUP_PREFIX
from ml.continual.lookback import PRODUCT, SHADOW, Lookback
from ml.continual.settings import JudgeSettings

log = logging.getLogger(__name__)

READINGS = "readings"
BATCH = 5000
POLL_S = 0.5
TOPIC_CHECK_S = 5.0
WARN_EVERY_S = 60.0
REGISTRY_RETRY_S = 2.0
KAFKA_TIMEOUT_S = 10.0


class Feed:
    """Reads the three topics into `lookback` (and each reading to `on_reading`, the continual trainer's history);
    `poll()` once per turn of the judge's loop."""

    def __init__(
        self,
        settings: JudgeSettings,
        lookback: Lookback,
        stop: threading.Event,
        on_reading: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.lookback = lookback
        self.stop = stop
        self.on_reading = on_reading
        self.roles = {settings.topic: READINGS, settings.predictions_topic: PRODUCT, settings.shadow_topic: SHADOW}
        registry = settings.schema_registry_url
        self.codecs = {
            topic: AvroCodec(schemas.READING if role == READINGS else schemas.PREDICTION, topic, registry)
            for topic, role in self.roles.items()
        }
        self.consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap_servers,
                settings.kafka_security,
                f"{ML_READER_GROUP_PREFIX}judge-{uuid.uuid4().hex[:8]}",
                **{"fetch.wait.max.ms": 200, "topic.metadata.refresh.interval.ms": 5000},
            )
        )
        self.assigned: set[tuple[str, int]] = set()
        self.behind: dict[tuple[str, int], int] = {}
        """Partitions not yet read to the end they had when assigned: (topic, partition) -> that end."""
        self.undecodable = 0
        self._next_check = 0.0
        self._last_warning = -WARN_EVERY_S

    @property
    def caught_up(self) -> bool:
        """Every topic found and every partition read to the end it had when assigned."""
        return len({topic for topic, _ in self.assigned}) == len(self.roles) and not self.behind

    def poll(self) -> int:
        """Assign new partitions when due, read one batch into the lookback; returns the records applied."""
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + TOPIC_CHECK_S
            self._assign_new_partitions()
        if not self.assigned:
            self.stop.wait(POLL_S)
            return 0
        messages = self.consumer.consume(num_messages=BATCH, timeout=POLL_S)
        applied = 0
        while messages and not self.stop.is_set():
            try:
                applied = self._apply(messages)
                break
            except RegistryUnavailable as exc:  # no fault of the records: the same batch once it answers
                self._warn(f"{exc}; waiting for it")
                self.stop.wait(REGISTRY_RETRY_S)
        self._update_behind()
        return applied

    def close(self) -> None:
        self.consumer.close()

    def _assign_new_partitions(self) -> None:
        since = int((time.time() - self.settings.lookback_seconds) * 1000)
        try:
            starts = new_partitions_from(self.consumer, self.roles, self.assigned, since, KAFKA_TIMEOUT_S)
            ends = {
                (tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S)[1]
                for tp in starts
            }
        except KafkaException as exc:
            self._warn(f"Kafka metadata or offsets for the lookback: {exc}")
            return
        if starts:
            self.consumer.incremental_assign(starts)
            for tp in starts:
                key = (tp.topic, tp.partition)
                self.assigned.add(key)
                if 0 <= tp.offset < ends[key]:
                    self.behind[key] = ends[key]
            log.info("reading %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in starts))
        missing = [topic for topic in self.roles if topic not in {t for t, _ in self.assigned}]
        if missing:
            self._warn(f"waiting for topic(s) {', '.join(missing)}")

    def _update_behind(self) -> None:
        """Stop on the consumer's position, never on the offsets of messages seen: a partition that ends in a
        transaction's marker (never delivered) is read to its end once the position passed it."""
        if not self.behind:
            return
        positions = self.consumer.position([TopicPartition(topic, partition) for topic, partition in self.behind])
        for tp in positions:
            if tp.offset >= self.behind[(tp.topic, tp.partition)]:
                del self.behind[(tp.topic, tp.partition)]
        if not self.behind:
            log.info("read the lookback's backlog of every topic: %s", self.lookback.counts())

    def _apply(self, messages: list[Message]) -> int:
        """Decode the whole batch first: when the registry does not answer, nothing of it was applied."""
        decoded = []
        for message in messages:
            if message.error() is not None:
                self._warn(f"Kafka: {message.error()}")
                continue
            try:
                decoded.append((self.roles[message.topic()], self.codecs[message.topic()].decode(message.value())))
            except DecodeError as exc:
                self.undecodable += 1
                where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
                self._warn(f"a record of {where} does not decode ({self.undecodable} so far): {exc}")
        for role, record in decoded:
            if role == READINGS:
                self.lookback.add_reading(record)
                if self.on_reading is not None:
                    self.on_reading(record)
            else:
                self.lookback.add_prediction(role, record)
        return len(decoded)

    def _warn(self, text: str) -> None:
        """At most one warning a minute: a broken topic must not flood the log."""
        if time.monotonic() - self._last_warning >= WARN_EVERY_S:
            self._last_warning = time.monotonic()
            log.warning("%s", text)
