"""A clean stop on SIGINT and SIGTERM: the signal sets an event that the publishing loop checks."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set `stop` on SIGINT/SIGTERM while inside; the previous handlers come back on exit. Outside the main
    thread (a caller running the simulator from Python) signals stay the caller's business."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            log.warning("%s again: still finishing in-flight messages", signal.Signals(signum).name)
        else:
            log.info("%s received: stopping after the in-flight messages", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
