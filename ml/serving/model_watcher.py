"""Hot reload: a background thread watches the model directory and loads a newer version while the predictor
keeps predicting with the current one; the predictor swaps models between two batches.

Versions are sortable UTC times and each is renamed into place only when complete (ml/artifact.py), so the
newest directory is always whole. A version that fails to load is logged and skipped until a newer one appears.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ml import artifact

log = logging.getLogger(__name__)


class ModelWatcher:
    def __init__(self, model_dir: str | Path, interval: float) -> None:
        self.model_dir = Path(model_dir)
        self.interval = interval
        self._seen: str | None = None
        self._ready: artifact.LoadedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def wait_first(self, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> artifact.LoadedModel | None:
        """Block until a model can be loaded (logging while there is none), or until `stop` is set; `beat` is called
        on each look (waiting is no hang)."""
        logged = -math.inf
        while not stop.is_set():
            beat()
            self._look()
            model = self.take()
            if model is not None:
                return model
            if time.monotonic() - logged > 30:
                log.warning("no model in %s yet; waiting for `python -m ml train` to publish one", self.model_dir)
                logged = time.monotonic()
            stop.wait(min(self.interval, 1.0))
        return None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> artifact.LoadedModel | None:
        """The newer model loaded since the last call, if any."""
        with self._lock:
            model, self._ready = self._ready, None
        return model

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._look()

    def _look(self) -> None:
        try:
            path = artifact.latest(self.model_dir)
        except OSError as exc:
            log.warning("cannot list %s: %s", self.model_dir, exc)
            return
        if path is None or path.name == self._seen or (self._seen and path.name < self._seen):
            return
        self._seen = path.name
        try:
            model = artifact.load(path)
            warm_up_s = model.warm_up()
        except Exception as exc:  # a broken artifact must not stop the predictor; keep serving the current one
            log.error("cannot load model %s, keeping the current one: %s", path, exc)
            return
        log.info(
            "model %s loaded from %s (window %s), warmed up in %.0f ms",
            model.version, path, model.metadata.get("window"), 1000 * warm_up_s,
        )  # fmt: skip
        with self._lock:
            self._ready = model
