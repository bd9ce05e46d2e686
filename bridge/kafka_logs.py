"""Kafka's messages in the bridge's log, without the flood: librdkafka retries a lost broker many times a second,
and during an outage each attempt would otherwise log a line."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError

LIBRDKAFKA_LOGGER = "librdkafka"
log = logging.getLogger(__name__)


class Throttle(logging.Filter):
    """Lets a message through at most once per `interval` seconds. Messages are compared by their first 80 chars,
    or, `by_template`, by the log call's format string: then every line of one call site counts as one kind."""

    def __init__(self, interval: float = 30.0, by_template: bool = False) -> None:
        super().__init__()
        self.interval = interval
        self.by_template = by_template
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg) if self.by_template else record.getMessage()[:80]
        key = f"{record.name}:{text}"
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            return False
        self._last[key] = now
        return True


def librdkafka_logger() -> logging.Logger:
    """The logger to hand to librdkafka (`logger` setting), throttled; its lines arrive through poll()."""
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    if not any(isinstance(f, Throttle) for f in logger.filters):
        logger.addFilter(Throttle())
    return logger


class KafkaHealth:
    """The producer's error callback: says once when Kafka becomes unreachable and once when it is back."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self._throttle = Throttle()
        log.addFilter(self._throttle)

    def on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("Kafka unreachable (%s): holding messages, unacknowledged, until it is back", error.str())
            return
        log.warning("Kafka: %s", error.str())

    def delivered(self) -> None:
        """Called when deliveries succeed again."""
        if self.down_since is not None:
            log.info("Kafka is back after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
