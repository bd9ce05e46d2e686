"""The continual trainer: when to train a challenger on the readings of the live topic, and training it.

When (`due`, checked every ML_CHECK_INTERVAL seconds once the history read its backlog), in this order, with the
champion in service and no challenger pending (one waits for the judge's verdict; a challenger at a time):
1. drift: at least ML_RETRAIN_DRIFT_SHARE of the newest readings (ML_DRIFT_READINGS of them, arrived since the
   last training; at least a tenth of them) lie out of the champion's training distribution (ml/ood.py: a value
   ML_OOD_THRESHOLD widths beyond the training range, a field the bridge flagged out of range, or one missing).
   The fleet moved: new units, a new sensor, new cars; the champion answers such readings with confident numbers.
2. episodes: at least ML_RETRAIN_EPISODES failure episodes started after the newest reading that any version in the
   model folder was trained on (its metadata's training.time_range.last): failures no model has learned from.
3. period: ML_RETRAIN_PERIOD seconds since the last training (since the start for the first).
and never sooner than ML_RETRAIN_MIN_INTERVAL seconds after the last training started (or failed).

How (`train_challenger`): the history's readings (history.py) through the same split, fit, calibration and report
as `python -m ml train` (ml/training/train.py fit_and_evaluate), with the champion's window and horizon, so that
the judge compares two models of one label; warm-started from the champion's learned layers (ML_WARM_START, the
default: ml/README.md gives the measurement) or from random weights. The version is saved in the model folder and
registered as the challenger with the trigger as its reason: the registry never serves a pending challenger
(ml/registry.py), the predictor scores it in the shadow and the judge decides.

Without a champion the registry adopts the version in service (register and promote, reason "adopted"); without
any version there is nothing to retrain (`python -m ml train` makes the first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from common.schemas import SENSOR_FIELDS
from ml import artifact
from ml.continual.history import History
from ml.continual.settings import ContinualSettings
from ml.ood import OodScorer
from ml.registry import Decision, Registry, serving_version

log = logging.getLogger(__name__)

Kind = Literal["drift", "episodes", "period"]
MIN_DRIFT_SHARE_OF_WINDOW = 0.1
"""The drift check speaks once the window holds at least this share of ML_DRIFT_READINGS readings."""


@dataclass(frozen=True)
class Trigger:
    kind: Kind
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def drift_share(history: History, champion_metadata: dict[str, Any], threshold: float) -> tuple[float, int]:
    """(share of the history's recent readings out of the champion's training distribution, how many readings)."""
    rows, flags = history.recent()
    if len(rows) == 0:
        return 0.0, 0
    features = list(champion_metadata["features"])
    columns = [SENSOR_FIELDS.index(name) for name in features]
    values = rows[:, columns].astype(np.float64)
    scores = OodScorer.from_metadata(champion_metadata, threshold).score(values, flags, missing=np.isnan(values))
    return float(scores.flagged.mean()), len(rows)


def trained_through(model_dir: Path) -> int:
    """The newest event time (epoch ms) any version of the folder was trained on; 0 without one."""
    newest = 0
    for version in artifact.versions(model_dir):
        if version not in _TRAINED_THROUGH:
            try:
                last = artifact.read_metadata(version)["training"]["time_range"]["last"]
            except (artifact.ArtifactError, KeyError, TypeError):
                continue
            _TRAINED_THROUGH[version] = _epoch_ms(last)
        newest = max(newest, _TRAINED_THROUGH[version])
    return newest


# A version is written once (its folder renamed into place complete), so what it was trained on is read once: the
# check runs every ML_CHECK_INTERVAL seconds over a folder that only grows.
_TRAINED_THROUGH: dict[Path, int] = {}


def _epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def due(
    settings: ContinualSettings,
    drift: tuple[float, int],
    new_episodes: int,
    since_last_training: float,
) -> Trigger | None:
    """The first trigger that holds (drift, episodes, period), or None. `drift`: (share, readings scored)."""
    share, scored = drift
    enough = scored >= max(1, int(settings.drift_readings * MIN_DRIFT_SHARE_OF_WINDOW))
    if enough and share >= settings.retrain_drift_share:
        return Trigger(
            "drift",
            f"drift: {share:.0%} of the newest {scored} readings lie out of the champion's training distribution "
            f"(retrain at {settings.retrain_drift_share:.0%})",
            {"drift_share": round(share, 4), "drift_readings": scored},
        )
    if new_episodes >= settings.retrain_episodes:
        return Trigger(
            "episodes",
            f"episodes: {new_episodes} failure episodes started after every reading any version was trained on "
            f"(retrain at {settings.retrain_episodes})",
            {"new_episodes": new_episodes},
        )
    if settings.retrain_period > 0 and since_last_training >= settings.retrain_period:
        return Trigger(
            "period",
            f"period: {since_last_training:.0f} s since the last training "
            f"(retrain every {settings.retrain_period:.0f} s)",
            {"seconds_since_training": round(since_last_training, 1)},
        )
    return None


def adopt_champion(registry: Registry) -> str | None:
    """The registry's champion; without one, the version in service adopted (registered and promoted); None when
    the folder holds no version to serve."""
    aliases = registry.aliases()
    if aliases.champion is not None:
        return aliases.champion
    serving = serving_version(registry.model_dir)
    if serving is None:
        return None
    if aliases.challenger is None:
        reason = "adopted: the version in service when continual training started"
        registry.register_challenger(serving.name, reason)
        registry.promote(reason, judged=serving.name)
    return serving.name


def train_challenger(
    settings: ContinualSettings, records: list[dict[str, Any]], champion: Path, trigger: Trigger
) -> tuple[Path, dict[str, Any]]:
    """Train on `records` with the champion's window and horizon, save the version; (its path, the figures of its
    registration: the trigger's, the start, the offline report's headline)."""
    from ml.features import series_from_records
    from ml.training.train import fit_and_evaluate, save_trained

    metadata = artifact.read_metadata(champion)
    fit = settings.model_copy(update={"window": int(metadata["window"]), "horizon": int(metadata["horizon"])})
    series = series_from_records(records)
    start = {"from": "random weights"}
    initial = None
    if settings.warm_start:
        initial = _warm_start(champion, start)
    source = {"topic": settings.topic, "reader": "continual", "records": len(records), "trigger": trigger.kind}
    started = time.monotonic()
    trained = fit_and_evaluate(series, fit, source, initial=initial)
    trained.metadata["training"]["start"] = start
    path = save_trained(trained, settings.model_dir)
    lstm = trained.report["models"]["lstm"]
    figures = {
        **trigger.figures,
        "trigger": trigger.kind,
        "start": start,
        "seconds": round(time.monotonic() - started, 1),
        "readings": len(records),
        "cars": trained.metadata["training"]["cars"],
        "offline": {"pr_auc": lstm["pr_auc"], **trained.report["operating_point"]["models"]["lstm"]},
    }
    return path, figures


def _warm_start(champion: Path, start: dict[str, Any]) -> Callable[[Any], None]:
    """The initial-weights hook that copies the champion's learned layers; `start` records what it did."""
    import keras

    from ml.training.model import copy_learned_weights

    source = keras.saving.load_model(champion / artifact.KERAS_FILE, compile=False)

    def initial(model: keras.Model) -> None:
        copied = copy_learned_weights(source, model)
        start.update({"from": f"champion {champion.name}" if copied else "random weights", "layers": copied})
        if not copied:
            log.warning("warm start: no layer of %s fits the new model (other features): random weights", champion.name)

    return initial


class Retrainer:
    """Checks `due` every ML_CHECK_INTERVAL seconds (`check()`, from the judge's loop) and trains in a thread of its
    own, so that reading the topics and judging go on meanwhile; `publish` hears each registration."""

    def __init__(
        self,
        settings: ContinualSettings,
        registry: Registry,
        history: History,
        publish: Callable[[Decision], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.history = history
        self.publish = publish
        self.clock = clock
        self.last_started = clock()  # the period and the minimum interval count from the start
        self.next_check = clock()
        self.trainings = 0
        self._thread: threading.Thread | None = None
        self._said = ""

    @property
    def training(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check(self) -> Trigger | None:
        """Start a training when one is due; the trigger that started it, or None."""
        now = self.clock()
        if now < self.next_check or self.training:
            return None
        self.next_check = now + self.settings.check_interval
        champion = adopt_champion(self.registry)
        if champion is None:
            return self._say(f"nothing to retrain: {self.registry.model_dir} holds no version (python -m ml train)")
        challenger = self.registry.challenger()
        if challenger is not None:
            return self._say(f"challenger {challenger} is pending: the judge's verdict comes first")
        since = now - self.last_started
        if since < self.settings.retrain_min_interval and self.trainings:
            return None
        metadata = artifact.read_metadata(self.registry.model_dir / champion)
        drift = drift_share(self.history, metadata, self.settings.ood_threshold)
        new_episodes = self.history.onsets_after(trained_through(self.registry.model_dir))
        trigger = due(self.settings, drift, new_episodes, since)
        if trigger is None:
            return self._say(
                f"no retraining: {drift[0]:.0%} of {drift[1]} recent readings out of distribution, {new_episodes} new "
                f"failure episodes, {since:.0f} s since the last training; history {self.history.counts()}"
            )
        records = self.history.records()
        log.info("retraining (%s) on %d readings of %d cars, from champion %s", trigger.reason, len(records),
                 self.history.counts()["cars"], champion)  # fmt: skip
        self.history.forget_recent()
        self.last_started, self.trainings = now, self.trainings + 1
        champion_dir = self.registry.model_dir / champion
        self._thread = threading.Thread(
            target=self._train, args=(records, champion_dir, trigger), name="continual-training", daemon=True
        )
        self._thread.start()
        return trigger

    def _train(self, records: list[dict[str, Any]], champion: Path, trigger: Trigger) -> None:
        from ml.training.dataset import TrainingDataError

        try:
            path, figures = train_challenger(self.settings, records, champion, trigger)
            decision = self.registry.register_challenger(path.name, trigger.reason, figures)
        except TrainingDataError as exc:
            log.warning("no challenger: %s; next try in %.0f s at the earliest", exc,
                        self.settings.retrain_min_interval)  # fmt: skip
            return
        except Exception:  # a failed training must not stop the judge; the next trigger tries again
            log.exception("training a challenger failed; next try in %.0f s at the earliest",
                          self.settings.retrain_min_interval)  # fmt: skip
            return
        log.info("challenger %s registered (%s): %s", decision.version, trigger.kind, figures)
        self.publish(decision)

    def _say(self, text: str) -> None:
        """Log a state once, and again only when it changes."""
        if text != self._said:
            self._said = text
            log.info("%s", text)
        return None
