"""Hot reload: a background thread watches the model directory and loads the version to serve while the predictor
keeps predicting with the current one; the predictor swaps models between two batches.

The version to serve is ml/registry.py's `serving_version`: the registry's champion alias, else the newest complete
version. A version is loaded whenever it differs from the one served, newer or not, so that a promotion and a
rollback switch a running predictor. Versions are renamed into place only when complete (ml/artifact.py) and the
aliases are replaced whole (ml/registry.py), so what is named is always whole. A version that fails to load is
logged and skipped, and the current model keeps serving, until another version is to be served.

The registry's challenger is read from the same aliases (ml/registry.py's `in_service`) and loaded in the same
look, for the predictor to score in the shadow (ml/serving/shadow.py). Its changes are handed over by
`take_challenger()`: a new challenger loaded, or none once the registry names none (promoted, rejected) or the one
it names fails to load (logged; tried again when it is named again). What one look finds is handed over at once,
so a promotion is taken as the new champion and no challenger together.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import CarStreamError
from ml import artifact
from ml.registry import in_service

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChallengerChange:
    """The challenger to score changed: `model`, or None when there is none to score any more."""

    model: artifact.LoadedModel | None


class ModelWatcher:
    def __init__(self, model_dir: str | Path, interval: float) -> None:
        self.model_dir = Path(model_dir)
        self.interval = interval
        self._served: str | None = None  # the version loaded last (handed to the loop, or waiting to be)
        self._failed: str | None = None  # a version that failed to load: not tried again while it stays named
        self._complaint: str | None = None  # why the version to serve is unknown, logged once while it lasts
        self._ready: artifact.LoadedModel | None = None
        self._challenger: str | None = None  # the challenger loaded last (handed over, or waiting to be)
        self._challenger_failed: str | None = None  # as _failed, for the challenger
        self._ready_challenger: ChallengerChange | None = None
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

    def take_challenger(self) -> ChallengerChange | None:
        """The challenger's change since the last call, if any."""
        with self._lock:
            change, self._ready_challenger = self._ready_challenger, None
        return change

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._look()

    def _look(self) -> None:
        try:
            named = in_service(self.model_dir)
        except (OSError, CarStreamError) as exc:  # a registry file unreadable: keep serving the current model
            if str(exc) != self._complaint:
                log.error("cannot tell which model to serve from %s, keeping the current one: %s", self.model_dir, exc)
                self._complaint = str(exc)
            return
        self._complaint = None
        model = self._champion(named.serving)
        challenger = self._challenger_change(named.challenger)
        with self._lock:
            if model is not None:
                self._ready = model
            if challenger is not None:
                self._ready_challenger = challenger

    def _champion(self, path: Path | None) -> artifact.LoadedModel | None:
        """The version to serve, loaded when it differs from the one served."""
        if path is None:
            return None
        if path.name != self._failed:
            self._failed = None  # named again later, it is tried again
        if path.name in (self._served, self._failed):
            return None
        model = _load(path, "keeping the current one")
        if model is None:
            self._failed = path.name
            return None
        self._served, self._failed = path.name, None
        return model

    def _challenger_change(self, path: Path | None) -> ChallengerChange | None:
        """A change of the challenger to score: another one loaded, or none (cleared, or it failed to load)."""
        name = path.name if path is not None else None
        if name != self._challenger_failed:
            self._challenger_failed = None
        if name == self._challenger or (name is not None and name == self._challenger_failed):
            return None
        model = _load(path, "not scoring it in the shadow") if path is not None else None
        if model is None and name is not None:
            self._challenger_failed = name
            if self._challenger is None:
                return None  # nothing was scored: nothing changes
        self._challenger = name if model is not None else None
        return ChallengerChange(model)


def _load(path: Path, otherwise: str) -> artifact.LoadedModel | None:
    """The version at `path` loaded and warmed up; None when that fails (logged: a broken artifact must not stop the
    predictor)."""
    try:
        model = artifact.load(path)
        warm_up_s = model.warm_up()
    except Exception as exc:
        log.error("cannot load model %s, %s: %s", path, otherwise, exc)
        return None
    log.info(
        "model %s loaded from %s (window %s), warmed up in %.0f ms",
        model.version, path, model.metadata.get("window"), 1000 * warm_up_s,
    )  # fmt: skip
    return model
