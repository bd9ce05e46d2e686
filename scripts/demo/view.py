"""The demo's terminal view: a rich live screen on a terminal, plain periodic lines without one (CI, pipes).

It shows readings/s at each stage (MQTT, `car-sensor`, `car-sensor-predictions`), the latest predictions and
alerts, the model's metrics, and which phase the demo is in. Everything shown is read from the brokers by the
demo itself (scripts/demo/stream_watch.py), not taken from the services' word.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from scripts.demo.stream_watch import MqttCounter, StreamState, StreamWatcher


@dataclass
class DemoStatus:
    """What the orchestrator tells the view: the phase and the model. Written by one thread, read by another."""

    cars: int
    runtime: str
    phase: str = "starting"
    detail: str = ""
    started: float = field(default_factory=time.monotonic)
    model: dict[str, Any] | None = None
    log_dir: str = ""
    dashboard_url: str = ""

    def set_phase(self, phase: str, detail: str = "") -> None:
        self.phase, self.detail = phase, detail


def _metric(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


class DemoView:
    """Refreshes in a thread of its own until stopped; `plain` forces the line-per-interval form."""

    def __init__(
        self,
        status: DemoStatus,
        watcher: StreamWatcher | None,
        mqtt: MqttCounter | None,
        console: Console,
        plain: bool,
        interval: float = 5.0,
    ) -> None:
        self.status = status
        self.watcher = watcher
        self.mqtt = mqtt
        self.console = console
        self.plain = plain
        self.interval = interval if plain else 0.5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-view", daemon=True)

    def attach(self, watcher: StreamWatcher, mqtt: MqttCounter | None) -> None:
        self.watcher, self.mqtt = watcher, mqtt

    def start(self) -> DemoView:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        if self.plain:
            while not self._stop.wait(self.interval):
                print(self.line(), flush=True)  # one line each, never wrapped to a guessed width
            return
        with Live(self.render(), console=self.console, refresh_per_second=2, transient=False) as live:
            while not self._stop.wait(self.interval):
                live.update(self.render())

    # -- the plain form ------------------------------------------------------------------------------------------

    def line(self) -> str:
        s = self.status
        elapsed = time.monotonic() - s.started
        parts = [f"[{elapsed:5.0f} s] {s.phase}" + (f" ({s.detail})" if s.detail else "")]
        if self.mqtt is not None:
            parts.append(f"MQTT {self.mqtt.rate():,.0f}/s ({self.mqtt.count:,})")
        if self.watcher is not None:
            readings, predictions = self.watcher.rates()
            seen, predicted, alerts = self.watcher.read(
                lambda st: (len(st.readings), len(st.predictions), st.alert_count)
            )
            parts.append(f"car-sensor {readings:,.0f}/s ({seen:,})")
            parts.append(f"predictions {predictions:,.0f}/s ({predicted:,}), alerts {alerts:,}")
        return " | ".join(parts)

    # -- the rich form -------------------------------------------------------------------------------------------

    def render(self) -> Layout:
        layout = Layout()
        layout.split_column(Layout(self._header(), size=3), Layout(name="body"))
        layout["body"].split_row(Layout(name="left"), Layout(name="right"))
        layout["left"].split_column(Layout(self._stages(), size=9), Layout(self._model()))
        layout["right"].split_column(Layout(self._latest()), Layout(self._alerts()))
        return layout

    def _header(self) -> Panel:
        s = self.status
        elapsed = time.monotonic() - s.started
        text = Text.assemble(
            ("car-stream-ml demo  ", "bold"),
            (f"{s.cars:,} cars, {s.runtime} runtime, {elapsed:.0f} s  ", "dim"),
            (s.phase, "bold cyan"),
            (f"  {s.detail}" if s.detail else "", "cyan"),
            (f"\n dashboard {s.dashboard_url}" if s.dashboard_url else "", "bold green"),
        )
        return Panel(text)

    def _stages(self) -> Panel:
        table = Table(expand=True, box=None)
        table.add_column("stage")
        table.add_column("per second", justify="right")
        table.add_column("total", justify="right")
        if self.mqtt is not None:
            table.add_row("simulator → MQTT", f"{self.mqtt.rate():,.0f}", f"{self.mqtt.count:,}")
        if self.watcher is not None:
            readings, predictions = self.watcher.rates()
            seen, predicted, alerts, dups = self.watcher.read(
                lambda st: (len(st.readings), len(st.predictions), st.alert_count, st.duplicates)
            )
            table.add_row("bridge → Kafka car-sensor", f"{readings:,.0f}", f"{seen:,}")
            table.add_row("ml predict → car-sensor-predictions", f"{predictions:,.0f}", f"{predicted:,}")
            table.add_row("alerts (failure predicted)", "", f"{alerts:,}")
            if dups:
                table.add_row("duplicate predictions", "", f"{dups:,}")
        return Panel(table, title="readings through the pipeline")

    def _model(self) -> Panel:
        model = self.status.model
        if not model:
            return Panel(Text("no model yet: collecting readings, then training", style="dim"), title="model")
        table = Table(expand=True, box=None)
        table.add_column("test set")
        table.add_column("model", justify="right")
        table.add_column("baseline", justify="right")
        metrics, baseline = model.get("metrics", {}), model.get("baseline", {})
        for name in ("pr_auc", "roc_auc", "precision", "recall", "f1"):
            table.add_row(name, _metric(metrics.get(name)), _metric(baseline.get(name)))
        training = model.get("training", {})
        about = Text(
            f"version {model.get('version')}, window {model.get('window')}, horizon {model.get('horizon')}, "
            f"threshold {_metric(model.get('threshold'))}\ntrained on {training.get('records', '?'):,} readings "
            f"of {training.get('cars', '?')} cars",
            style="dim",
        )
        return Panel(Group(about, table), title="model")

    def _predictions_table(self, rows: list, title: str) -> Panel:
        table = Table(expand=True, box=None)
        for column in ("car", "seq", "probability", "failure predicted"):
            table.add_column(column, justify="right" if column != "car" else "left")
        for (car, seq, _event_time), prediction in rows:
            style = "bold red" if prediction.predicted else ""
            table.add_row(
                car, str(seq), f"{prediction.probability:.3f}", "ALERT" if prediction.predicted else "-", style=style
            )
        return Panel(table, title=title)

    def _latest(self) -> Panel:
        rows = [] if self.watcher is None else self.watcher.read(lambda st: list(st.latest))
        return self._predictions_table(rows, "latest predictions")

    def _alerts(self) -> Panel:
        rows = [] if self.watcher is None else self.watcher.read(lambda st: list(st.alerts))
        return self._predictions_table(rows, "latest alerts")


def state_line(state: StreamState) -> str:
    return f"{len(state.readings):,} readings, {len(state.predictions):,} predictions, {state.alert_count:,} alerts"
