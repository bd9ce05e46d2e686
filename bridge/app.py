"""`python -m bridge`: MQTT → Kafka, acknowledging each MQTT message only after Kafka confirmed it.

One loop thread drives both clients: it reads MQTT (producing each message as it arrives), serves Kafka's
delivery reports (which acknowledge the MQTT messages), retries what waits, and logs progress. SIGTERM or
SIGINT stop reading, wait for Kafka to confirm what is in flight, acknowledge it, and disconnect; what Kafka
did not confirm in time stays unacknowledged, so the broker delivers it again to the next run.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

from confluent_kafka import KafkaException, Producer

from bridge.kafka_logs import KafkaHealth, librdkafka_logger
from bridge.metrics import Metrics
from bridge.mqtt import MqttSource
from bridge.parking import ParkingFile
from bridge.pipeline import Pipeline, delivery_config
from bridge.settings import BridgeSettings
from bridge.validation import TopicRule
from common import schemas
from common.avro import AvroCodec
from common.cli import add_settings_arguments, describe, settings_from_args
from common.errors import KafkaError
from common.health import Health
from common.kafka import ensure_topics, producer_config
from common.lifecycle import EXIT_FAILED, EXIT_OK, run_main, stop_on_signals
from common.logs import setup_logging

log = logging.getLogger(__name__)

BUSY_POLL_S = 0.002  # MQTT wait while Kafka still owes delivery reports: keeps acknowledgements prompt
IDLE_POLL_S = 0.1


class Bridge:
    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.stop_requested = threading.Event()
        self.metrics = Metrics(settings.buffer_size)
        self.stats = self.metrics.stats
        self.kafka_health = KafkaHealth()
        self.producer = Producer(
            producer_config(
                settings.kafka_bootstrap_servers,
                settings.kafka_security,
                error_cb=self.kafka_health.on_error,
                logger=librdkafka_logger(),
                **delivery_config(settings.buffer_size),
            )
        )
        codec = AvroCodec(schemas.READING, settings.kafka_topic, settings.schema_registry_url)
        self.health = Health(settings.stall_seconds, self.not_ready)
        self.source: MqttSource
        self.pipeline = Pipeline(
            self.producer,
            codec,
            self.metrics,
            TopicRule(settings.topic_filter, settings.topic_cache_bytes),
            readings_topic=settings.kafka_topic,
            dlq_topic=settings.dlq_topic,
            max_payload_bytes=settings.max_payload_bytes,
            range_policy=settings.range_policy,
            parking=ParkingFile(settings.park_file, settings.park_max_bytes),
            acknowledge=lambda mid, qos, generation: self.source.ack(mid, qos, generation),
        )
        self.source = MqttSource(settings, self.pipeline.handle, self.stats, self._may_read)
        log.info("Avro framing: %s", codec.framing)

    topics_ready = False

    def wait_for_topics(self) -> None:
        """Create the topics; while Kafka does not answer yet, keep trying (until stopped)."""
        s = self.settings
        while not self.stop_requested.is_set():
            self.health.beat()  # waiting for Kafka is not a hung loop: not ready, still alive
            try:
                topics = {s.kafka_topic: s.partitions, s.dlq_topic: s.partitions}
                ensure_topics(s.kafka_bootstrap_servers, s.kafka_security, topics, 10)
                return
            except (KafkaException, KafkaError) as exc:
                log.warning("Kafka at %s not ready (%s); retrying", s.kafka_bootstrap_servers, exc)
                self.stop_requested.wait(2.0)

    def not_ready(self) -> str | None:
        """What keeps the bridge from moving readings now (readiness, /readyz), or None."""
        if not self.topics_ready:
            return "the Kafka topics are not there yet"
        if not self.stats.connected:
            return "not connected to the MQTT broker"
        if not self.stats.subscribed:
            return f"the MQTT broker has not granted the subscription to {self.settings.subscription}"
        if self.kafka_health.down_since is not None:
            return f"Kafka unreachable for {time.monotonic() - self.kafka_health.down_since:.0f} s"
        return None

    def run(self) -> int:
        self.metrics.serve(self.settings.metrics_port, self.health, self.settings.metrics_host)
        self.wait_for_topics()
        self.topics_ready = True
        next_log = time.monotonic() + self.settings.log_interval
        while not self.stop_requested.is_set():
            self.health.beat()
            self.source.loop(BUSY_POLL_S if self.stats.in_flight else IDLE_POLL_S)
            confirmed = self.stats.confirmed
            self.producer.poll(0)
            if self.kafka_health.down_since is not None and self.stats.confirmed != confirmed:
                self.kafka_health.delivered()
            self.pipeline.pump()
            if self.pipeline.fatal is not None:
                log.error(
                    "Kafka producer failed for good: %s; unacknowledged messages stay with the MQTT broker",
                    self.pipeline.fatal,
                )
                return EXIT_FAILED
            if time.monotonic() >= next_log:
                log.info("%s", self.stats.line())
                next_log += self.settings.log_interval
        return self.shutdown()

    def _may_read(self) -> bool:
        """Back-pressure, asked before each MQTT packet: stop reading while the bytes held exceed the bound, read
        again once below half of it."""
        held, bound = self.stats.bytes_held, self.settings.max_buffer_bytes
        if not self.stats.reading_paused and held >= bound:
            self.stats.reading_paused = True
            log.warning(
                "holding %.1f MiB (bound %.1f MiB): not reading MQTT until Kafka confirmed more",
                held / 2**20,
                bound / 2**20,
            )
        elif self.stats.reading_paused and held < bound // 2:
            self.stats.reading_paused = False
            log.info("holding %.1f MiB: reading MQTT again", held / 2**20)
        return not self.stats.reading_paused

    def shutdown(self) -> int:
        """Flush Kafka (its delivery reports acknowledge the MQTT messages), then disconnect."""
        log.info(
            "stopping: waiting up to %.0f s for Kafka to confirm %d in flight",
            self.settings.shutdown_timeout,
            self.stats.in_flight,
        )
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while (self.stats.in_flight or self.pipeline.backlog) and time.monotonic() < deadline:
            self.pipeline.pump()
            self.producer.poll(0.05)
        self.source.close()
        left = self.stats.in_flight
        log.info("stopped; %s%s", self.stats.line(), f"; {left} unconfirmed stay with the MQTT broker" if left else "")
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge",
        description="MQTT → Kafka bridge: reads car readings (QoS 1, persistent session, shared subscription), "
        "validates them, writes Avro to Kafka keyed by car_id, rejects bad input to a DLQ, and acknowledges each "
        "MQTT message only after Kafka confirmed it.",
    )
    add_settings_arguments(parser, BridgeSettings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = settings_from_args(BridgeSettings, args)
    log.info("bridge starting: %s", describe(settings))
    bridge = Bridge(settings)
    with stop_on_signals(bridge.stop_requested, "Kafka's confirmation of what is in flight"):
        return bridge.run()


if __name__ == "__main__":
    run_main(main)
