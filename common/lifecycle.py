"""How every entry point runs, stops and exits: one way for the simulator, the bridge, the trainer and the predictor.

Exit codes (`run_main`):
- 0: done, or stopped on request after finishing what was in flight;
- 1: failed: a fault the service could not ride out (it logged why);
- 2: a usage or configuration error (`CarStreamError`): one line `error: ...` on stderr, no traceback;
- 130: interrupted: Ctrl-C, or SIGTERM in a batch job, cut the work short.

Signals:
- a long-running service (simulator, bridge, predictor) runs inside `stop_on_signals(event)`: SIGTERM and SIGINT
  set the event, the service finishes what is in flight (publishes, deliveries, the current batch) and returns 0;
  a second signal is logged and changes nothing (SIGKILL is the way to cut it short);
- a batch job (training) calls `interrupt_on_signals()`: SIGTERM raises KeyboardInterrupt like Ctrl-C, so its
  `finally` blocks clean up (a half-written artifact is removed) and it exits 130.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from common.errors import CarStreamError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: threading.Event, finishing: str = "what is in flight") -> Iterator[threading.Event]:
    """Set `stop` on SIGINT/SIGTERM while inside; the previous handlers come back on exit. Outside the main thread
    (a caller running a service from Python) signals stay the caller's business."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: still finishing %s (SIGKILL cuts it short)", name, finishing)
        else:
            log.info("%s received: stopping after %s", name, finishing)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupt_on_signals() -> None:
    """For batch jobs: SIGTERM behaves like Ctrl-C (KeyboardInterrupt), so cleanup in `finally` runs."""

    def interrupt(signum: int, _frame: object) -> None:
        log.info("%s received: interrupting", signal.Signals(signum).name)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Run an entry point and exit with the codes above."""
    try:
        code = main()
    except CarStreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or EXIT_OK)
