"""Reads the readings, predictions and DLQ topics into the fleet (dashboard/fleet.py), in one thread.

An observer, never a member of a service's group: partitions are assigned, starting `lookback_seconds` back (the
first record at or after that time), and nothing is committed. Topics or partitions that appear later are picked
up from their first record. Only committed records are read (librdkafka's default read_committed): an aborted
batch of the predictor never shows.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException

from common import dlq, schemas
from common.avro import AvroCodec
from common.errors import DecodeError, RegistryUnavailable
from common.kafka import consumer_config, new_partitions_from
from dashboard.fleet import Fleet
from dashboard.settings import DashboardSettings

log = logging.getLogger(__name__)

BATCH = 5000
TOPIC_CHECK_S = 5.0
WARN_EVERY_S = 60.0
REGISTRY_RETRY_S = 2.0
APPLY_SLICE = 500


class Feed:
    def __init__(self, settings: DashboardSettings, fleet: Fleet) -> None:
        self.settings = settings
        self.fleet = fleet
        registry = settings.schema_registry_url
        self.roles = {
            settings.readings_topic: "readings",
            settings.predictions_topic: "predictions",
            settings.dlq_topic: "dlq",
        }
        self.readings = AvroCodec(schemas.READING, settings.readings_topic, registry)
        self.predictions = AvroCodec(schemas.PREDICTION, settings.predictions_topic, registry)
        self.consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap_servers,
                settings.kafka_security,
                # librdkafka wants a group even for assign(); this one is never joined nor committed to. Under the
                # predictors' prefix, where the dashboard's ACL (secured mode) lets it find the coordinator.
                f"{settings.predictor_group}-dashboard",
                **{"fetch.wait.max.ms": 200, "topic.metadata.refresh.interval.ms": 5000},
            )
        )
        self.assigned: set[tuple[str, int]] = set()
        self.ready = threading.Event()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._last_warning = 0.0

    def start(self) -> Feed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + TOPIC_CHECK_S
                self._assign_new_partitions()
            if not self.assigned:
                self._stop.wait(0.5)
                continue
            messages = self.consumer.consume(num_messages=BATCH, timeout=0.5)
            while messages and not self._stop.is_set():
                try:
                    self._apply(messages)
                    break
                except RegistryUnavailable as exc:  # no fault of the records: the same batch once it answers
                    self._warn(f"{exc}; waiting for it")
                    self._stop.wait(REGISTRY_RETRY_S)

    def _assign_new_partitions(self) -> None:
        """Every partition of the three topics not assigned yet, from the lookback's first record."""
        since = int((time.time() - self.settings.lookback_seconds) * 1000)
        try:
            starts = new_partitions_from(self.consumer, self.roles, self.assigned, since, timeout=10)
        except KafkaException as exc:
            self._warn(f"Kafka metadata or offsets for the lookback: {exc}")
            return
        if starts:
            self.consumer.incremental_assign(starts)
            self.assigned |= {(tp.topic, tp.partition) for tp in starts}
            log.info("reading %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in starts))
        missing = [topic for topic in self.roles if topic not in {t for t, _ in self.assigned}]
        if missing:
            self._warn(f"waiting for topic(s) {', '.join(missing)}")
        elif not self.ready.is_set():
            self.ready.set()

    def _apply(self, messages: list) -> None:
        """Decode outside the lock, apply inside it: all of the batch or, when the registry does not answer,
        nothing of it."""
        predictions, readings, dead = [], [], []
        for message in messages:
            if message.error() is not None:
                self._warn(f"Kafka: {message.error()}")
                continue
            role = self.roles.get(message.topic())
            try:
                if role == "predictions":
                    predictions.append(self.predictions.decode(message.value()))
                elif role == "readings":
                    readings.append(self.readings.decode(message.value()))
                elif role == "dlq":
                    dead.append((dlq.parse(message.headers()), message.key()))
            except DecodeError as exc:
                with self.fleet.lock:
                    self.fleet.undecodable[role] += 1
                self._warn(f"a record of {message.topic()} does not decode: {exc}")
        # In slices: a page's snapshot waits for one slice at most, not for a whole batch (tens of ms at 10,000).
        for start in range(0, max(len(readings), len(predictions), len(dead)), APPLY_SLICE):
            end = start + APPLY_SLICE
            with self.fleet.lock:
                for reading in readings[start:end]:
                    self.fleet.apply_reading(reading)
                for prediction in predictions[start:end]:
                    self.fleet.apply_prediction(prediction)
                for headers, key in dead[start:end]:
                    self.fleet.apply_dead_letter(headers, key)

    def _warn(self, text: str) -> None:
        """At most one warning a minute: a broken topic must not flood the log."""
        self.error = text
        if time.monotonic() - self._last_warning >= WARN_EVERY_S:
            self._last_warning = time.monotonic()
            log.warning("%s", text)
