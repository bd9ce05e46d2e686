"""Where the predictor's time goes, one log line every 10 s: the first thing to read when lag grows.

`N predictions in 10 s (x/s), b batches of n on average; ms per batch: read, decode, windows, model, ood,
produce, deliver, commit`: each phase is timed where it runs (`with progress.phase("model"): ...`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


class Progress:
    """Seconds per named phase and predictions per batch, logged every `every` seconds, then reset."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._since = time.monotonic()
        self._seconds: dict[str, float] = collections.defaultdict(float)
        self._predictions = self._batches = 0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] += time.perf_counter() - started

    def batch_done(self, predictions: int) -> None:
        self._predictions += predictions
        self._batches += 1
        elapsed = time.monotonic() - self._since
        if elapsed < self.every:
            return
        phases = ", ".join(f"{name} {1000 * s / self._batches:.0f}" for name, s in self._seconds.items())
        log.info(
            "%d predictions in %.0f s (%.0f/s), %d batches of %.0f on average; ms per batch: %s",
            self._predictions, elapsed, self._predictions / elapsed, self._batches,
            self._predictions / self._batches, phases,
        )  # fmt: skip
        self._since, self._predictions, self._batches = time.monotonic(), 0, 0
        self._seconds.clear()
