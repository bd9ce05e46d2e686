"""What the dashboard learns besides the topics: the services' Prometheus metrics and the predictors' consumer lag
(their group's committed offsets against the end of the readings topic). The model's report: dashboard/model.py.

`Sampler` polls the first two in one thread, once a second, and keeps the chart's history: readings/s per stage
and the lag, one point a second for `history_seconds`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from common.errors import ConfigError
from common.kafka import consumer_config
from dashboard.fleet import Fleet
from dashboard.settings import DashboardSettings

log = logging.getLogger(__name__)

STAGES = (("mqtt_in", "MQTT in (bridge)"), ("car_sensor", "car-sensor"), ("predictions", "predictions"))
SCRAPE_TIMEOUT_S = 2.0
RATE_WINDOW_S = 5.0  # the stages' rates: over the last 5 s (the chart keeps one point a second)
# Per service name, the counter whose total is a stage's: summed over every endpoint of that name.
STAGE_COUNTERS = {"bridge": ("mqtt_in", "bridge_received")}
SAFE_NAME = re.compile(r"^[\w.-]+$")
# Its label `program` says which program serves the model: python (python -m ml predict) or java (ml/streams/).
SERVING_INFO = "predictor_serving_info"


def parse_metrics_urls(text: str) -> list[tuple[str, str]]:
    """`name=url[,name=url]` as (name, url) pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--metrics-urls: {item!r} is not name=http://host:port/metrics")
        pairs.append((name.strip(), url.strip()))
    return pairs


@dataclass
class Endpoint:
    name: str
    url: str
    up: bool = False
    error: str | None = None
    samples: dict[str, float] = field(default_factory=dict)
    program: str | None = None  # the serving program, when this is a predictor's endpoint

    def scrape(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT_S) as response:
                text = response.read().decode()
            samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
            self.samples = {sample.name: sample.value for sample in samples if not sample.labels}
            self.program = next((s.labels.get("program") for s in samples if s.name == SERVING_INFO), None)
            self.up, self.error = True, None
        except (OSError, ValueError) as exc:
            self.up, self.error, self.samples, self.program = False, str(exc)[:200], {}, None


def rates(
    before: tuple[float, dict[str, float | None]], after: tuple[float, dict[str, float | None]]
) -> dict[str, float | None]:
    """Each stage's records per second between two samples (time, totals); None where a total is unknown or went
    back (a service restarted)."""
    (then, old), (now, new) = before, after
    result: dict[str, float | None] = {}
    for stage, _ in STAGES:
        delta = None if new[stage] is None or old[stage] is None or now <= then else new[stage] - old[stage]
        result[stage] = round(delta / (now - then), 2) if delta is not None and delta >= 0 else None
    return result


def spread_rates(
    history: Sequence[dict[str, Any]], known: dict[str, tuple[float, float]], point: dict[str, Any]
) -> None:
    """Sets each stage's rate in `point`: records per second since the stage's last known total (`known`, updated
    here). The points since then that have no rate get the same one: a total unknown for a while (a scrape that
    timed out on a busy machine) spreads its records over the gap, so the chart's rates times their intervals still
    sum to the records each stage carried. A total that went back (a service restarted) gives no rate."""
    now = point["t"]
    for stage, _ in STAGES:
        total, last = point["totals"][stage], known.get(stage)
        rate = None
        if total is not None:
            if last is not None and total >= last[1] and now > last[0]:
                rate = round((total - last[1]) / (now - last[0]), 2)
                for earlier in reversed(history):
                    if earlier["t"] <= last[0]:
                        break
                    if earlier.get(stage) is None:
                        earlier[stage] = rate
            known[stage] = (now, total)
        point[stage] = rate


def window_rates(history: Sequence[dict[str, Any]], seconds: float) -> dict[str, float | None]:
    """Each stage's rate over the last `seconds` of the history (its newest point against the newest one at least
    that much older, or the oldest): a pipeline that carries its records in bursts (a busy machine, a bridge
    holding MQTT back) has 1 s windows with none while the records flow, and its rate must not read 0 then."""
    if len(history) < 2:
        return {}
    latest = history[-1]
    base = next((p for p in reversed(history) if p["t"] <= latest["t"] - seconds), history[0])
    return rates((base["t"], base["totals"]), (latest["t"], latest["totals"]))


class Sampler:
    """Once a second: scrape the endpoints, read the lag, add a point to the history."""

    def __init__(self, settings: DashboardSettings, fleet: Fleet) -> None:
        self.settings = settings
        self.fleet = fleet
        self.endpoints = [Endpoint(name, url) for name, url in parse_metrics_urls(settings.metrics_urls)]
        # Asks for the predictors' committed offsets (OffsetFetch) without ever joining their group. Not the
        # AdminClient: its list_consumer_group_offsets crashes the process (SIGSEGV, librdkafka 2.16) when the
        # group's coordinator is not known yet, as on a fresh Kafka.
        self.offsets = Consumer(
            consumer_config(settings.kafka_bootstrap_servers, settings.kafka_security, settings.predictor_group)
        )
        self.lock = threading.Lock()
        self.history: deque[dict[str, Any]] = deque(maxlen=settings.history_seconds)
        self.lag: int | None = None
        self.lag_error: str | None = None
        self._known: dict[str, tuple[float, float]] = {}  # per stage: its last known total and when
        self._sampled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.offsets.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def sample(self) -> None:
        # The counters first, at one instant: the bridges' and the feed's totals of one sample cover the same
        # second. The lag's Kafka calls come after (they took up to seconds, which once skewed the windows).
        for endpoint in self.endpoints:
            endpoint.scrape()
        totals = self.totals()
        now = time.time()
        lag = self._lag()
        point: dict[str, Any] = {"t": now, "lag": lag, "totals": totals}  # unrounded: rate x interval = records
        with self.lock:
            spread_rates(self.history, self._known, point)
            self.lag = lag
            if self._sampled:  # the first sample only sets where the rates start
                self.history.append(point)
            self._sampled = True

    def totals(self) -> dict[str, float | None]:
        """The running total of each stage: MQTT in from the bridges' counters, the topics from the feed."""
        with self.fleet.lock:
            totals: dict[str, float | None] = {
                "car_sensor": self.fleet.records["readings"],
                "predictions": self.fleet.records["predictions"],
            }
        for service, (stage, counter) in STAGE_COUNTERS.items():
            mine = [e for e in self.endpoints if e.name == service]
            values = [e.samples.get(counter + "_total") for e in mine]
            totals[stage] = sum(values) if mine and None not in values else None
        return totals

    def _lag(self) -> int | None:
        """Records of the readings topic the predictors' group has not committed yet (None: unknown)."""
        topic, group = self.settings.readings_topic, self.settings.predictor_group
        try:
            metadata = self.offsets.list_topics(topic, timeout=5).topics[topic]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            partitions = [TopicPartition(topic, p) for p in metadata.partitions]
            committed = [tp for tp in self.offsets.committed(partitions, timeout=5) if tp.offset >= 0]
            if not committed:
                self.lag_error = f"group {group} has committed nothing on {topic}"
                return None
            ends = {tp.partition: self.offsets.get_watermark_offsets(tp, timeout=5)[1] for tp in committed}
        except KafkaException as exc:
            self.lag_error = str(exc)[:200]
            return None
        self.lag_error = None
        return sum(max(0, ends[tp.partition] - tp.offset) for tp in committed)

    # -- for the page ---------------------------------------------------------------------------------------------

    def stages(self) -> list[dict[str, Any]]:
        totals = self.totals()
        with self.lock:
            window = window_rates(self.history, RATE_WINDOW_S)
        return [
            {"name": name, "label": label, "total": totals[name], "rate": window.get(name)} for name, label in STAGES
        ]

    def chart(self) -> dict[str, list]:
        with self.lock:
            points = list(self.history)
        series = ["t", *(name for name, _ in STAGES), "lag"]
        return {name: [p.get(name) for p in points] for name in series}

    def services(self) -> list[dict[str, Any]]:
        return [{"name": e.name, "url": e.url, "up": e.up, "error": e.error} for e in self.endpoints]

    def serving(self) -> str | None:
        """The program that serves the model, as the predictors' metrics say; None while none answers."""
        return " and ".join(sorted({e.program for e in self.endpoints if e.program})) or None
