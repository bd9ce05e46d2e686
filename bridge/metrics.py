"""The bridge's Prometheus metrics and the counters behind its progress log line.

The hot path bumps plain integers on `Stats` (one thread owns them); a custom collector turns them into
Prometheus samples when the endpoint is scraped, so counting costs nothing per message beyond an addition.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.health import Health, serve

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Stats:
    buffer_size: int
    received: int = 0
    produced: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    retries: int = 0
    reconnects: int = 0
    in_flight: int = 0
    connected: bool = False
    rejected: Counter[str] = field(default_factory=Counter)
    flagged: int = 0
    bytes_held: int = 0
    registry_waits: int = 0
    parked: int = 0
    dlq_refusals: int = 0
    dlq_held: int = 0
    reading_paused: bool = False
    sessions_lost: int = 0
    subscribed: bool = False
    out_of_range: Counter[str] = field(default_factory=Counter)

    @property
    def confirmed(self) -> int:
        """Records Kafka confirmed, readings and DLQ together."""
        return self.produced + self.dead_lettered

    @property
    def buffer_fill(self) -> float:
        return self.in_flight / self.buffer_size

    def line(self) -> str:
        rejected = sum(self.rejected.values())
        return (
            f"received {self.received}, produced {self.produced} ({self.flagged} out of range), rejected {rejected} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.rejected.items())) or 'none'}), "
            f"in flight {self.in_flight} ({self.buffer_fill:.0%} of {self.buffer_size}, "
            f"{self.bytes_held / 2**20:.1f} MiB{', reading PAUSED' if self.reading_paused else ''}), "
            f"redelivered {self.redelivered}, "
            f"retries {self.retries}, parked {self.parked}, mqtt {'up' if self.connected else 'DOWN'}"
        )


class StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        for name, value, doc in (
            ("bridge_received", s.received, "MQTT messages received (redeliveries included)"),
            ("bridge_produced", s.produced, "Readings Kafka confirmed on the readings topic"),
            ("bridge_flagged", s.flagged, "Readings forwarded with a value outside its plausibility range"),
            ("bridge_dead_lettered", s.dead_lettered, "Rejected payloads Kafka confirmed on the DLQ topic"),
            ("bridge_redelivered", s.redelivered, "MQTT messages the broker delivered again (DUP flag)"),
            ("bridge_produce_retries", s.retries, "Kafka deliveries that failed and were produced again"),
            ("bridge_mqtt_reconnects", s.reconnects, "MQTT reconnections after a lost connection"),
            ("bridge_mqtt_sessions_lost", s.sessions_lost, "Reconnections on which the broker had no session left"),
            ("bridge_registry_waits", s.registry_waits, "Encodings put off because the schema registry did not answer"),
            ("bridge_parked", s.parked, "Rejected messages the DLQ refused for good, parked in the parking file"),
            ("bridge_dlq_refusals", s.dlq_refusals, "DLQ refusals the parking file could not take either"),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        rejected = CounterMetricFamily("bridge_rejected", "Payloads rejected, by error", labels=["error"])
        for error, count in sorted(s.rejected.items()):
            rejected.add_metric([error], count)
        yield rejected
        outside = CounterMetricFamily(
            "bridge_out_of_range", "Values outside their plausibility range, by sensor field", labels=["field"]
        )
        for name, count in sorted(s.out_of_range.items()):
            outside.add_metric([name], count)
        yield outside
        yield GaugeMetricFamily("bridge_in_flight", "Messages received, not yet confirmed by Kafka", value=s.in_flight)
        yield GaugeMetricFamily("bridge_buffer_fill", "In flight / buffer size (1 = MQTT held back)", s.buffer_fill)
        yield GaugeMetricFamily("bridge_mqtt_connected", "1 while connected to the MQTT broker", int(s.connected))
        yield GaugeMetricFamily(
            "bridge_mqtt_subscribed", "1 while the broker granted the subscription", int(s.subscribed)
        )
        yield GaugeMetricFamily("bridge_bytes_held", "Bytes of messages received, not yet confirmed", s.bytes_held)
        yield GaugeMetricFamily(
            "bridge_reading_paused", "1 while bytes held exceed max_buffer_bytes", int(s.reading_paused)
        )
        yield GaugeMetricFamily(
            "bridge_dlq_held", "Rejected messages neither the DLQ nor the parking file took", s.dlq_held
        )


class Metrics:
    """Stats, the produce-latency histogram, and the registry that exposes them."""

    def __init__(self, buffer_size: int) -> None:
        self.stats = Stats(buffer_size)
        self.registry = CollectorRegistry()
        self.registry.register(StatsCollector(self.stats))
        self.produce_latency = Histogram(
            "bridge_produce_latency_seconds",
            "From produce() to Kafka's delivery report",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def serve(self, port: int, health: Health, host: str) -> None:
        serve(port, health, self.registry, host)
