"""Hot reload: a background thread watches the model directory and loads the version to serve while the predictor
keeps predicting with the current one; the predictor swaps models between two batches.

The version to serve is ml/registry.py's `serving_version`: the registry's champion alias, else the newest complete
version. A version is loaded whenever it differs from the one served, newer or not, so that a promotion and a
rollback switch a running predictor. Versions are renamed into place only when complete (ml/artifact.py) and the
aliases are replaced whole (ml/registry.py), so what is named is always whole. A version that fails to load is
logged and skipped, and the current model keeps serving, until another version is to be served.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import CarStreamError
from ml import artifact
from ml.registry import serving_version

log = logging.getLogger(__name__)


class ModelWatcher:
    def __init__(self, model_dir: str | Path, interval: float) -> None:
        self.model_dir = Path(model_dir)
        self.interval = interval
        self._served: str | None = None  # the version loaded last (handed to the loop, or waiting to be)
        self._failed: str | None = None  # a version that failed to load: not tried again while it stays named
        self._complaint: str | None = None  # why the version to serve is unknown, logged once while it lasts
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
        """The model loaded since the last call, if any."""
        with self._lock:
            model, self._ready = self._ready, None
        return model

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._look()

    def _look(self) -> None:
        try:
            path = serving_version(self.model_dir)
        except (OSError, CarStreamError) as exc:  # a registry file unreadable: keep serving the current model
            if str(exc) != self._complaint:
                log.error("cannot tell which model to serve from %s, keeping the current one: %s", self.model_dir, exc)
                self._complaint = str(exc)
            return
        self._complaint = None
        if path is None:
            return
        if path.name != self._failed:
            self._failed = None  # named again later, it is tried again
        if path.name in (self._served, self._failed):
            return
        try:
            model = artifact.load(path)
            warm_up_s = model.warm_up()
        except Exception as exc:  # a broken artifact must not stop the predictor; keep serving the current one
            log.error("cannot load model %s, keeping the current one: %s", path, exc)
            self._failed = path.name
            return
        log.info(
            "model %s loaded from %s (window %s), warmed up in %.0f ms",
            model.version, path, model.metadata.get("window"), 1000 * warm_up_s,
        )  # fmt: skip
        self._served, self._failed = path.name, None
        with self._lock:
            self._ready = model
