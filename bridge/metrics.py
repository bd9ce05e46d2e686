"""The bridge's Prometheus metrics and the counters behind its progress log line.

The hot path bumps plain integers on `Stats` (one thread owns them); a custom collector turns them into
Prometheus samples when the endpoint is scraped, so counting costs nothing per message beyond an addition.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
            f"in flight {self.in_flight} ({self.buffer_fill:.0%} of {self.buffer_size}), "
            f"redelivered {self.redelivered}, retries {self.retries}, mqtt {'up' if self.connected else 'DOWN'}"
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

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
            log.info("metrics on http://0.0.0.0:%d/metrics", port)
