"""Shadow evaluation: the registry's challenger (ml/registry.py) scored beside the champion on the same readings,
its predictions written to the shadow topic (ML_SHADOW_TOPIC, default car-sensor-predictions-shadow), never to the
product's topic. The promotion gate (ml/gate.py) judges the two on the readings both predicted.

- Which challenger: the model watcher (ml/serving/model_watcher.py) reads the champion and the challenger from one
  read of the registry's aliases and loads the challenger beside the champion; between two batches the loop hands
  a change over (a new challenger, or none any more: promoted, rejected, or it failed to load, which is logged).
  A promotion arrives as the new champion and no challenger in the same step: the product switches, the shadow
  stops. The challenger is not scored while it is the served model itself, nor when its feature list differs
  from the champion's (logged): the rings hold the champion's features.
- Its windows: the rings hold the last L readings of every car, L the longest window of champion and challenger
  (ml/serving/batch.py), and each model is called on the last W rows of its reading's window: exactly the window
  a ring of its own W gives (ml/serving/scoring.py). A challenger whose window is longer than the champion's
  therefore renews the rings when it is registered, and again when it is rejected (every owned partition's
  history re-read from Kafka once, as for a new champion of another window); one of a window up to the
  champion's, or promoted, renews nothing. The rings' length decides restarts of a car's sequence and which
  content hashes are redeliveries for both; a reading's missing feature is at the champion's training mean.
- Its records: schemas/car_failure_prediction.avsc, key car_id, its own model_version, horizon, training range
  (the OOD score) and threshold (its metadata's: ML_THRESHOLD overrides the served model's only), the same
  suppression rule with its own W.
- Delivery: produced after the batch's product predictions (so its model call runs while those are on their way)
  through a producer of its own, and waited for before the batch's offsets are committed: a crash before the
  commit predicts both again (at least once, duplicates by (car_id, seq)). A broken shadow topic never stops the
  product: shadow records Kafka does not confirm within SHADOW_WAIT_S are logged, counted and given up, the batch
  is committed, and the shadow pauses for SHADOW_PAUSE_S (the product waits at most that once per pause). A
  shadow topic that cannot be created at the start (e.g. the secured mode's predictor may create none) turns
  shadow scoring off, logged once.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException

from common.errors import KafkaError
from common.kafka import ensure_topics
from ml.artifact import LoadedModel
from ml.serving import metrics
from ml.serving.scoring import ModelScorer, Pushed
from ml.serving.settings import PredictorSettings
from ml.serving.writer import PredictionWriter

log = logging.getLogger(__name__)

SHADOW_WAIT_S = 10.0
"""Most seconds a batch waits for its shadow predictions' confirmations (after the product's): a healthy topic
confirms in milliseconds; a broken one must not hold the product."""
SHADOW_PAUSE_S = 60.0
"""Seconds without shadow predictions after Kafka did not confirm some: a broken shadow topic costs the product
one wait per pause, not one per batch."""


class Challenger:
    """The challenger scored beside the champion, or none. Pure: no Kafka."""

    def __init__(self, ood_threshold: float, topic: str) -> None:
        self.ood_threshold = ood_threshold
        self.topic = topic
        self.loaded: LoadedModel | None = None
        """The registry's challenger as the watcher loaded it."""
        self.scorer: ModelScorer | None = None
        """Set while it is scored."""
        self._refused: tuple[str, str] | None = None  # (challenger, champion) whose features differ: logged once

    @property
    def window(self) -> int:
        """The window the rings must hold for it; 0 while nothing is scored."""
        return self.scorer.window if self.scorer is not None else 0

    def use(self, model: LoadedModel | None, champion: ModelScorer | None) -> None:
        """The registry's challenger changed: `model`, or none."""
        self.loaded = model
        self.match(champion)

    def match(self, champion: ModelScorer | None) -> None:
        """Score the loaded challenger beside `champion` when it can be (see the module's docstring)."""
        model, before = self.loaded, self.scorer
        if model is None or champion is None:
            self.scorer = None
        elif model.version == champion.version:
            self.scorer = None  # promoted: the product serves it
        elif model.features != champion.features:
            if self._refused != (model.version, champion.version):
                self._refused = (model.version, champion.version)
                log.error(
                    "challenger %s is not scored in the shadow: its features differ from champion %s's, which the "
                    "windows hold",
                    model.version,
                    champion.version,
                )
            self.scorer = None
        elif before is None or before.version != model.version:
            self.scorer = ModelScorer(model, model.threshold, self.ood_threshold)
        after = self.scorer
        if (before and before.version) == (after and after.version):
            return
        metrics.set_challenger_version(after.version if after else None)
        if after is not None:
            log.info(
                "scoring challenger %s in the shadow (window %d, horizon %d, threshold %.3f) -> %s",
                after.version, after.window, after.horizon, after.threshold, self.topic,
            )  # fmt: skip
        elif before is not None:
            log.info("shadow scoring of challenger %s stopped", before.version)

    def predict(self, pushed: Pushed | None) -> list[dict]:
        """Its prediction records of a batch (none while nothing is scored)."""
        if self.scorer is None or pushed is None:
            return []
        probabilities = self.scorer.probabilities(pushed)
        return self.scorer.records(pushed, probabilities, self.scorer.ood_scores(pushed))


class ShadowOutput:
    """The shadow topic: its producer, its delivery rule (see the module's docstring) and its counts."""

    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self.topic = settings.shadow_topic
        self.writer = PredictionWriter(
            settings.kafka_bootstrap_servers,
            settings.kafka_security,
            settings.shadow_topic,
            settings.dlq_topic,
            settings.topic,
            settings.schema_registry_url,
        )
        self.usable = True
        """False when the topic could not be created: nothing is scored in the shadow."""
        self._paused_until = 0.0  # monotonic: after Kafka did not confirm shadow predictions
        self._produced = 0  # of the batch in flight

    def ensure_topic(self, partitions: int) -> None:
        """Create the shadow topic like the product's (as many partitions as the readings)."""
        s = self.settings
        try:
            ensure_topics(s.kafka_bootstrap_servers, s.kafka_security, {self.topic: partitions})
        except (KafkaError, KafkaException) as exc:
            self.usable = False
            log.error(
                "shadow topic %s cannot be created, no challenger will be scored in the shadow: %s", self.topic, exc
            )

    def produce(self, challenger: Challenger, pushed: Pushed | None) -> None:
        """The challenger's predictions of a batch, produced (none while paused or unusable)."""
        self._produced = 0
        if not self.usable or time.monotonic() < self._paused_until:
            return
        predictions = challenger.predict(pushed)
        self.writer.predictions(predictions)
        self._produced = len(predictions)

    def deliver(self) -> None:
        """Wait for the batch's shadow predictions; what Kafka does not confirm is given up (logged, counted)."""
        if not self._produced:
            return
        failure = self.writer.deliver(SHADOW_WAIT_S)
        if failure is None:
            return
        self.writer.drop_pending()
        self._produced = 0
        self._paused_until = time.monotonic() + SHADOW_PAUSE_S
        metrics.SHADOW_UNDELIVERED.inc()
        log.error(
            "shadow predictions to %s not delivered (%s): given up, the batch is committed all the same; no shadow "
            "predictions for %.0f s",
            self.topic,
            failure,
            SHADOW_PAUSE_S,
        )

    def count_delivered(self) -> None:
        """The batch was committed: its shadow predictions count as delivered."""
        metrics.SHADOW_PREDICTIONS.inc(self._produced)

    def close(self) -> None:
        self.writer.close()
