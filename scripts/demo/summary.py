"""The demo's closing summary: what the live fleet published, what reached Kafka, what got a prediction (the
delivery guarantees), and what the alerts did in failure episodes of the simulator's ground truth (ml/episodes.py,
via scripts/demo/live_episodes.py): episodes warned ahead or missed, the median lead, false alerts per healthy
car-hour, and apart from them the alerts suppressed because the car itself reported a failure. The live fleet
runs at a speed-up, and event_time is simulated time: so are the lead and the hours."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scripts.demo.live_episodes import live_episodes
from scripts.demo.stream_watch import StreamWatcher

VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}Z$")


def latest_model_metadata(model_dir: Path) -> dict[str, Any] | None:
    """metadata.json of the newest complete version in `model_dir` (versions sort by name; a version being
    written has a hidden temporary name until it is complete)."""
    if not model_dir.is_dir():
        return None
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name))
    for version in reversed(versions):
        try:
            return json.loads((version / "metadata.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))])


@dataclass
class DemoResult:
    cars: int
    plan: str
    log_dir: str
    speedup: float
    """Simulated seconds per wall-clock second of the live fleet."""
    published: int = 0
    mqtt_messages: int = 0
    in_kafka: int = 0
    predicted: int = 0
    missing: int = 0
    duplicates: int = 0
    alerts: int = 0
    suppressed_readings: int = 0
    """Predictions at or above the threshold whose alert the predictor suppressed (alert_suppressed)."""
    live_seconds: float = 0.0
    bridge_to_prediction_p50_ms: float | None = None
    bridge_to_prediction_p99_ms: float | None = None
    episodes: int | None = None
    """Failure episodes of the live run with a judged reading in their warning stretch (None: no model horizon)."""
    episodes_warned: int | None = None
    episodes_missed: int | None = None
    median_lead_s: float | None = None
    """Simulated seconds from the first alert in the H readings before an onset to the onset."""
    false_alerts: int | None = None
    healthy_car_hours: float | None = None
    false_alerts_per_healthy_car_hour: float | None = None
    suppressed_alerts: int | None = None
    """Alarms on readings in a failure the car reported or within the model's W readings after it (ml/episodes.py):
    neither false nor true alarms."""
    live_start_offsets: dict[str, int] = field(default_factory=dict)
    """Partition -> first offset of the live fleet's readings on the readings topic."""
    model: dict[str, Any] | None = None
    serving: str = "python"
    """The program that served the model: python (python -m ml predict) or java (ml/streams/)."""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    """The model registry's decisions of the live phase (`--continual`): registrations, promotions, rejections."""
    interrupted: bool = False
    error: str | None = None

    def take(self, watcher: StreamWatcher) -> None:
        """Count what the watcher saw of the live fleet and measure the alerts in episodes of its ground truth."""

        def collect(state: Any) -> tuple[Any, ...]:
            return (
                dict(state.readings),
                state.alerts_by_reading(),
                state.duplicates,
                state.latencies_ms("kafka_time"),
            )

        readings, alerts, self.duplicates, latencies = watcher.read(collect)
        self.in_kafka = len(readings)
        self.predicted = len(alerts)
        self.missing = self.in_kafka - self.predicted
        self.alerts = sum(predicted for predicted, _ in alerts.values())
        self.suppressed_readings = sum(suppressed for _, suppressed in alerts.values())
        self.bridge_to_prediction_p50_ms = percentile(latencies, 50)
        self.bridge_to_prediction_p99_ms = percentile(latencies, 99)
        horizon, window = (self.model or {}).get("horizon"), (self.model or {}).get("window")
        if horizon is not None and window is not None and alerts:
            for name, value in live_episodes(readings, alerts, int(horizon), int(window)).items():
                setattr(self, name, value)

    @property
    def complete(self) -> bool:
        """Every live reading reached Kafka and got a prediction, and there was at least one."""
        return self.error is None and self.predicted > 0 and self.missing == 0 and self.in_kafka >= self.published

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = (
            None
            if self.model is None
            else {
                **{k: self.model.get(k) for k in ("version", "window", "horizon", "threshold", "metrics", "baseline")},
                "training": {k: self.model.get("training", {}).get(k) for k in ("strategy", "workers")},
            }
        )
        data["complete"] = self.complete
        return data


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_summary(result: DemoResult, console: Console) -> None:
    table = Table(title="demo summary (live fleet)", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    measured = result.episodes is not None
    simulated = f"simulated, {result.speedup:g}x"
    rows = [
        ("cars", result.cars),
        ("live seconds", round(result.live_seconds, 1)),
        ("readings published by the simulator", result.published),
        ("readings in car-sensor", result.in_kafka),
        ("readings with a prediction", result.predicted),
        ("readings without a prediction", result.missing),
        ("duplicate predictions", result.duplicates),
        ("alerts (failure predicted)", result.alerts),
        ("failure episodes in the live run", result.episodes),
        (
            "episodes warned ahead / missed",
            f"{result.episodes_warned:,} / {result.episodes_missed:,}" if measured else None,
        ),
        (f"median lead, s ({simulated})", result.median_lead_s),
        (
            f"false alerts per healthy car-hour ({simulated})",
            f"{_fmt(result.false_alerts_per_healthy_car_hour)} ({result.false_alerts:,} in "
            f"{_fmt(result.healthy_car_hours)} h)"
            if measured
            else None,
        ),
        (
            "alerts suppressed, the car reported a failure: readings / alarms",
            f"{result.suppressed_readings:,} / {result.suppressed_alerts:,}" if measured else None,
        ),
        (
            "bridge -> prediction p50 / p99 ms",
            f"{_fmt(result.bridge_to_prediction_p50_ms)} / {_fmt(result.bridge_to_prediction_p99_ms)}",
        ),
    ]
    if result.model:
        metrics = result.model.get("metrics", {})
        episodes = metrics.get("episodes") or {}
        bar = (result.model.get("baseline") or {}).get("pr_auc")
        workers = result.model.get("training", {}).get("workers") or 1
        trained = f"trained on {workers} workers" if workers > 1 else "trained in one process"
        rows.append(
            ("model version, served by", f"{result.model.get('version')}, {trained}, served by {result.serving}")
        )
        rows.append(("model test PR-AUC (gradient boosting)", f"{_fmt(metrics.get('pr_auc'))} ({_fmt(bar)})"))
        rows.append(
            (
                "model test episodes warned / median lead s / false alerts per car-hour",
                f"{episodes.get('warned', '-')} of {episodes.get('episodes', '-')} / "
                f"{_fmt(episodes.get('median_lead_s'))} / {_fmt(episodes.get('false_alerts_per_healthy_car_hour'))}",
            )
        )
    for name, value in rows:
        table.add_row(name, _fmt(value))
    console.print(table)
    for decision in result.decisions:
        console.print(f"decision {decision['action']} {decision['version']}: {decision['reason']}", highlight=False)
    console.print(f"plan: {result.plan}\nlogs: {result.log_dir}/", highlight=False)
    if result.error:
        console.print(f"[bold red]error:[/] {result.error}")
    elif result.interrupted:
        console.print("[yellow]interrupted: the figures cover what ran until then[/]")
    elif result.complete:
        console.print(f"[bold green]every one of the {result.in_kafka:,} live readings got a prediction[/]")
    else:
        console.print(f"[bold red]{result.missing:,} live readings got no prediction within the drain timeout[/]")
