"""What the dashboard learns besides the topics: the services' Prometheus metrics, the predictors' consumer lag
(their group's committed offsets against the end of the readings topic) and the serving model's report.

`Sampler` polls the first two in one thread, once a second, and keeps the chart's history: readings/s per stage
and the lag, one point a second for `history_seconds`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
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
        self._previous: tuple[float, dict[str, float | None]] | None = None
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
        for endpoint in self.endpoints:
            endpoint.scrape()
        lag = self._lag()
        now = time.time()
        totals = self.totals()
        point: dict[str, Any] = {"t": now, "lag": lag}  # unrounded: rate x interval gives back the records
        if self._previous is not None:
            then, before = self._previous
            for stage, _ in STAGES:
                if totals[stage] is None or before[stage] is None or now <= then:
                    point[stage] = None
                else:  # a counter that went back (a service restarted) gives no rate for that second
                    delta = totals[stage] - before[stage]
                    point[stage] = round(delta / (now - then), 2) if delta >= 0 else None
        self._previous = (now, totals)
        with self.lock:
            self.lag = lag
            if len(point) > 2:
                self.history.append(point)

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
            latest = self.history[-1] if self.history else {}
        return [
            {"name": name, "label": label, "total": totals[name], "rate": latest.get(name)} for name, label in STAGES
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


class ModelReports:
    """The serving model's metadata, report and plots from the model folder, read once per version."""

    def __init__(self, model_dir: str) -> None:
        self.root = Path(model_dir)
        self._cache: dict[str, dict[str, Any] | None] = {}

    def describe(self, version: str | None) -> dict[str, Any] | None:
        if version is None:
            return None
        if version not in self._cache:
            self._cache[version] = self._read(version)
        return self._cache[version] or {"version": version, "metrics": [], "plots": [], "verdict": None}

    def plot(self, version: str, name: str) -> Path | None:
        """The path of a plot of a version's report, or None: only `<model_dir>/<version>/report/<name>.png`."""
        if not (SAFE_NAME.match(version) and SAFE_NAME.match(name) and name.endswith(".png")):
            return None
        path = self.root / version / "report" / name
        return path if path.is_file() else None

    def _read(self, version: str) -> dict[str, Any] | None:
        folder = self.root / version
        if not SAFE_NAME.match(version) or not (folder / "metadata.json").is_file():
            return None
        try:
            metadata = json.loads((folder / "metadata.json").read_text())
            report_file = folder / "report" / "report.json"
            report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        except (OSError, ValueError) as exc:
            log.warning("model %s: its metadata or report does not read: %s", version, exc)
            return None
        return {
            "version": version,
            "created_at": metadata.get("created_at"),
            "threshold": metadata.get("threshold"),
            "horizon": metadata.get("horizon"),
            "window": metadata.get("window"),
            "verdict": report.get("verdict"),
            "metrics": report_metrics(report),
            "plots": [
                {"title": path.stem.replace("_", " "), "url": f"/model/{version}/{path.name}"}
                for path in sorted((folder / "report").glob("*.png"))
            ],
        }


REPORT_ROWS = (
    ("PR-AUC", None, "pr_auc"),
    ("ROC-AUC", None, "roc_auc"),
    ("precision", None, "precision"),
    ("recall", None, "recall"),
    ("episodes warned", "episodes", "warned_share"),
    ("median lead (s)", "episodes", "median_lead_s"),
    ("false alerts / car-hour", "episodes", "false_alerts_per_healthy_car_hour"),
)


def report_metrics(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's held-out figures of the LSTM beside gradient boosting (ml/training/report.py)."""
    models = report.get("models") or {}
    if "lstm" not in models:
        return []

    def value(model: str, part: str | None, key: str) -> Any:
        source = models.get(model) or {}
        return (source.get(part) or {}).get(key) if part else source.get(key)

    return [{"name": name, "lstm": value("lstm", p, k), "gbm": value("gbm", p, k)} for name, p, k in REPORT_ROWS]
