"""One publishing run, shared by the live and the replay mode: signal handling, the MQTT connection pool, the
progress line, and at the end the drain of in-flight messages and the summary."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack

from common.lifecycle import stop_on_signals
from simulator.publisher import FleetPublisher
from simulator.reporting import ProgressLine, RunStats, RunSummary
from simulator.settings import PublishSettings

log = logging.getLogger(__name__)


class PublishSession:
    """Use as a context manager: connects on enter (SIGINT/SIGTERM then set `stop`), disconnects on exit."""

    def __init__(
        self,
        settings: PublishSettings,
        connections: int,
        label: str,
        stop: threading.Event | None,
        cars: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.label = label
        self.stop = stop or threading.Event()
        self.stats = RunStats()
        self.publisher = FleetPublisher(settings, connections, self.stop, cars)
        self.progress: ProgressLine | None = None
        self._exit = ExitStack()

    def __enter__(self) -> PublishSession:
        with ExitStack() as stack:
            stack.enter_context(stop_on_signals(self.stop, "the in-flight messages"))
            stack.enter_context(self.publisher)
            self.progress = ProgressLine(self.settings.progress, self.label)
            stack.callback(self.progress.close)
            self._exit = stack.pop_all()
        # Rates count from the first message, not from connecting.
        self.stats.started, self.stats.cpu_started = time.monotonic(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def publish(self, slot: int, topic: str, payload: bytes) -> bool:
        """Publish one reading; False when stopping (it was not sent)."""
        if not self.publisher.publish(slot, topic, payload):
            return False
        self.stats.published += 1
        return True

    def show(self) -> None:
        assert self.progress is not None
        self.progress.update(self.stats, self.publisher.outstanding)

    def finish(self, cars: int, stopped_by: str) -> RunSummary:
        """Wait for in-flight messages (up to the drain timeout), then sum the run up."""
        publisher, stats = self.publisher, self.stats
        if not publisher.drain(self.settings.drain_timeout):
            log.warning(
                "%d messages still unacknowledged after %.0f s", publisher.outstanding, self.settings.drain_timeout
            )
        stats.acknowledged = publisher.done
        assert self.progress is not None
        self.progress.update(stats, publisher.outstanding, force=True)
        seconds = stats.elapsed_s
        cpu_s = time.process_time() - stats.cpu_started
        return RunSummary(
            mode=self.label,
            qos=self.settings.qos,
            cars=cars,
            published=stats.published,
            acknowledged=stats.acknowledged,
            unacknowledged=publisher.outstanding,
            dropped=publisher.dropped,
            failures=stats.failures,
            failure_readings=stats.failure_readings,
            skipped=stats.skipped,
            seconds=round(seconds, 3),
            msgs_per_s=round(stats.published / seconds, 1) if seconds > 0 else 0.0,
            cpu_us_per_msg=round(cpu_s / stats.published * 1e6, 1) if stats.published else 0.0,
            stopped_by=stopped_by,
        )
