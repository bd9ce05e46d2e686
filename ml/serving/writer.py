"""Writes one batch of predictions (and DLQ records) and tells whether Kafka confirmed every one of them.

The predictor commits a batch's input offsets only when `deliver()` returned None (no failure): a prediction that
was not confirmed leaves its reading uncommitted, so it is read and predicted again (at-least-once; duplicates
carry the same (car_id, seq)). Failed deliveries are logged once per batch, not once per record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import Message, Producer

from common import dlq, schemas
from common.avro import AvroCodec
from common.kafka import producer_config
from common.settings import KafkaSecurity
from ml.source import RawRecord

log = logging.getLogger(__name__)

SERVICE = "predictor"
UNDECODABLE = "undecodable"  # the DLQ error code of a record that does not decode (detail: why)


class PredictionWriter:
    def __init__(
        self,
        servers: str,
        security: KafkaSecurity,
        output_topic: str,
        dlq_topic: str,
        source_topic: str,
        registry_url: str | None = None,
    ) -> None:
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.source_topic = source_topic
        self.codec = AvroCodec(schemas.PREDICTION, output_topic, registry_url)
        # Only failed deliveries are reported: a success report per prediction cost a Python call and a Message
        # each, and flush() returning with nothing left says that every other record was confirmed.
        overrides = {"linger.ms": 2, "queue.buffering.max.messages": 500_000, "delivery.report.only.error": True}
        self._producer = Producer(producer_config(servers, security, **overrides))
        self._failed = 0
        self._first_error = ""

    def _on_delivery(self, error: ConfluentKafkaError | None, message: Message) -> None:
        if error is not None:
            if not self._failed:
                self._first_error = f"delivery to {message.topic()} failed: {error.str()}"
            self._failed += 1

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:  # the local queue is full: let deliveries drain it, then retry
                self._producer.poll(0.1)

    def predictions(self, records: Iterable[dict]) -> None:
        for record in records:
            self._produce(self.output_topic, record["car_id"].encode(), self.codec.encode(record))

    def dead_letter(self, record: RawRecord, reason: str) -> None:
        source = (self.source_topic, record.partition, record.offset)
        value, headers = dlq.record(SERVICE, UNDECODABLE, reason, record.value, source=source)
        log.warning(
            "record %s[%d]@%d cannot be decoded (%s); sent to %s",
            self.source_topic,
            record.partition,
            record.offset,
            reason,
            self.dlq_topic,
        )
        self._produce(self.dlq_topic, record.key, value, headers)

    def deliver(self, timeout: float = 30.0) -> str | None:
        """Wait for every delivery report of what was produced since the last call: None when all succeeded, else
        what failed (also logged)."""
        remaining = self._producer.flush(timeout)
        failure = None
        if self._failed:
            failure = f"{self._failed} record(s) not delivered; the first: {self._first_error}"
        elif remaining:
            failure = f"{remaining} record(s) not confirmed by Kafka within {timeout:.0f} s"
        if failure is not None:
            log.error("%s", failure)
        self._failed, self._first_error = 0, ""
        return failure

    def drop_pending(self) -> None:
        """Give up on what Kafka has not confirmed yet (failed or not): the next `deliver()` does not wait on it.
        For the shadow topic only: a product prediction is never given up on."""
        self._producer.purge()
        self._producer.flush(0)  # serves the purged records' reports, which must not count against the next batch
        self._failed, self._first_error = 0, ""

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
