"""What a run reports: a live progress line while it runs (rich, on a terminal; a log line every 10 s
otherwise) and a summary at the end."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

log = logging.getLogger(__name__)

TERMINAL_REFRESH_S = 0.25
LOG_EVERY_S = 10.0


@dataclass
class RunStats:
    """Counters the publishing loop keeps up to date."""

    published: int = 0
    acknowledged: int = 0
    failures: int = 0
    failure_readings: int = 0
    skipped: int = 0
    lag_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    cpu_started: float = field(default_factory=time.process_time)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class RunSummary:
    """The end of a run. `acknowledged` counts QoS 1 acknowledgements (QoS 0: messages written out);
    `unacknowledged` is what was still in flight when the drain timed out."""

    mode: str
    qos: int
    cars: int
    published: int
    acknowledged: int
    unacknowledged: int
    dropped: int
    failures: int
    failure_readings: int
    skipped: int
    seconds: float
    msgs_per_s: float
    cpu_us_per_msg: float
    """CPU time of this process per published reading: simulation, encoding and MQTT together."""
    stopped_by: str

    def line(self) -> str:
        return (
            f"{self.mode}: published {self.published:,} readings of {self.cars:,} cars in {self.seconds:.1f} s "
            f"({self.msgs_per_s:,.0f} msg/s, qos {self.qos}, {self.cpu_us_per_msg:.0f} us CPU each); "
            f"acknowledged {self.acknowledged:,}, "
            f"unacknowledged {self.unacknowledged:,}, dropped {self.dropped:,}; failures {self.failures:,} "
            f"({self.failure_readings:,} failure readings); skipped rows {self.skipped:,}; stopped by {self.stopped_by}"
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


class ProgressLine:
    """Messages sent, the current rate, failures so far, acknowledgements pending and the lag behind schedule."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.label = label
        console = Console(file=sys.stderr)
        self._live = (
            Live(console=console, auto_refresh=False, transient=False) if enabled and console.is_terminal else None
        )
        self._log_lines = enabled and self._live is None
        self._last_update = 0.0
        self._last_count = 0
        self._last_time = time.monotonic()
        self._rate = 0.0
        if self._live is not None:
            self._live.start()

    def update(self, stats: RunStats, pending: int, force: bool = False) -> None:
        now = time.monotonic()
        every = TERMINAL_REFRESH_S if self._live is not None else LOG_EVERY_S
        if not force and now - self._last_update < every:
            return
        if now > self._last_time:
            self._rate = (stats.published - self._last_count) / (now - self._last_time)
        self._last_update, self._last_time, self._last_count = now, now, stats.published
        text = (
            f"{self.label}: sent {stats.published:,} | {self._rate:,.0f} msg/s | failures {stats.failures:,} "
            f"| in flight {pending:,} | behind schedule {stats.lag_s:.1f} s"
        )
        if self._live is not None:
            self._live.update(Text(text), refresh=True)
        elif self._log_lines:
            log.info("%s", text)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
