"""The streaming predictor: consumer-group membership and commits with confluent-kafka, reads through a partition
reader (tensorflow-io by default), model calls in batches, predictions back to Kafka.

Each step, between batches and so with nothing in flight: rebalance callbacks run and newly assigned partitions
are taken on (ml/serving/partitions.py), a newer model or challenger is swapped in (ml/serving/model_watcher.py),
newly owned partitions get their cars' history rebuilt, then one batch is read from the owned partitions, predicted
(ml/serving/batch.py) and written (ml/serving/writer.py); the registry's challenger, when there is one, is scored
on the same windows and written to the shadow topic (ml/serving/shadow.py). After a batch's predictions are all
confirmed by Kafka, the batch's end offsets are committed, then its alerts are counted and logged in episodes
(ml/serving/alerts.py). A crash before that commit means the batch is read and predicted again: at least one
prediction per reading, duplicates recognisable by (car_id, seq). Cars that were evicted under the per-car state
bound and are back in a batch get their history re-read from Kafka before it is predicted.

A batch whose predictions Kafka does not confirm is not committed: it is rewound (its partitions' history rebuilt
up to the commit) and handled like Kafka not answering, below.

When Kafka does not answer (a broker restart, a leader moving: watermarks, reads or commits fail), or the schema
registry does not (a record's schema cannot be fetched: not the record's fault, so not dead-lettered), the step is
abandoned, every owned partition is read again from its committed offset, and the loop waits with a growing
pause (up to 10 s) and tries again, logging once every 30 s; it never exits for it. A fatal client error (fenced by
another member with the same static id) ends the client for good: the predictor exits 1 for a supervisor to restart.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import KafkaException

from common.errors import KafkaError, RegistryUnavailable
from common.health import Health
from common.kafka import ensure_topics
from common.lifecycle import EXIT_FAILED, EXIT_OK
from ml.artifact import LoadedModel
from ml.serving import metrics
from ml.serving.alerts import AlertLog
from ml.serving.batch import BatchPredictor, use_model_threads
from ml.serving.model_watcher import ChallengerChange, ModelWatcher
from ml.serving.partitions import Batch, Partitions, is_fatal
from ml.serving.progress import Progress
from ml.serving.settings import PredictorSettings
from ml.serving.shadow import ShadowOutput
from ml.serving.writer import PredictionWriter
from ml.source import RawRecord

log = logging.getLogger(__name__)

OUTAGE_LOG_EVERY_S = 30.0
MAX_OUTAGE_PAUSE_S = 10.0
GC_YOUNG_ALLOCATIONS = 100_000
"""Allocations between two collections of the youngest generation (Python's default: 700). A batch holds
hundreds of thousands of records, readings and predictions, all freed by reference counting; collected every 700
allocations, they were scanned again and again while alive (measured offline on batches of 2,500 on 2 busy cores:
5 to 25 µs of CPU per reading)."""


class Predictor:
    """One predictor of the group, run until `stop` is set; the parts it ties together own the state."""

    def __init__(self, settings: PredictorSettings, stop: threading.Event) -> None:
        use_model_threads(settings.model_threads)  # before the first model is loaded
        self.settings = settings
        self.stop = stop
        self.progress = Progress()
        self.rate = metrics.RateMeter()
        self.watcher = ModelWatcher(settings.model_dir, settings.reload_interval)
        self.writer = PredictionWriter(
            settings.kafka_bootstrap_servers,
            settings.kafka_security,
            settings.output_topic,
            settings.dlq_topic,
            settings.topic,
            settings.schema_registry_url,
        )
        self.shadow = ShadowOutput(settings)
        self.batch_predictor = BatchPredictor(settings, self.progress, self._dead_letter)
        self.partitions = Partitions(settings, on_revoke=self.batch_predictor.forget)
        self.alerts = AlertLog(settings.alert_repeat, settings.ood_threshold)
        self._outage_since: float | None = None  # while Kafka does not answer: when it started
        self._outage_logged = 0.0
        self._outage_pause = 0.5
        self._model_loaded = self._in_group = False
        self._read_at = 0.0  # when the last read began (monotonic)
        self._backlog = False  # it left records behind: read again at once
        self.health = Health(settings.stall_seconds, self.not_ready)

    def not_ready(self) -> str | None:
        """What keeps the predictor from predicting now (readiness, /readyz), or None."""
        if not self._model_loaded:
            return f"no model loaded yet (waiting for one in {self.settings.model_dir})"
        if not self._in_group:
            return f"not subscribed in group {self.settings.group_id} yet"
        if self._outage_since is not None:
            return f"Kafka or the schema registry does not answer ({time.monotonic() - self._outage_since:.0f} s)"
        return None

    def run(self) -> int:
        metrics.serve_metrics(self.settings.metrics_port, self.health, self.settings.metrics_host)
        model = self.watcher.wait_first(self.stop, self.health.beat)
        if model is None:
            return EXIT_OK
        self._use_models(model, self.watcher.take_challenger())
        gc.freeze()  # TensorFlow's and the model's objects live as long as the process: out of every scan
        gc.set_threshold(GC_YOUNG_ALLOCATIONS, *gc.get_threshold()[1:])
        self.watcher.start()
        partitions = self.partitions.topic_partitions()
        s = self.settings
        ensure_topics(s.kafka_bootstrap_servers, s.kafka_security, {s.output_topic: partitions})
        self.shadow.ensure_topic(partitions)
        self.partitions.subscribe()
        self._in_group = True
        log.info(
            "predicting %s -> %s in group %s", self.settings.topic, self.settings.output_topic, self.settings.group_id
        )
        try:
            while not self.stop.is_set():
                self.health.beat()
                try:
                    self._step()
                except (KafkaException, KafkaError, RegistryUnavailable) as exc:
                    if _fatal(exc):
                        log.error(
                            "Kafka client failed for good (%s); exiting so that a supervisor starts the predictor "
                            "again (what was not committed is read again)",
                            exc,
                        )
                        return EXIT_FAILED
                    self._kafka_unavailable(exc)
                    continue
                self._kafka_answers()
        finally:
            self._close()
        return EXIT_OK

    def _kafka_unavailable(self, exc: Exception) -> None:
        """Nothing of the abandoned step is committed: read every owned partition again from its commit."""
        self.partitions.rewind_all()
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since, self._outage_pause = now, 0.5
        if now - self._outage_logged >= OUTAGE_LOG_EVERY_S:
            self._outage_logged = now
            log.warning(
                "Kafka or the schema registry does not answer (%.0f s so far), retrying: %s",
                now - self._outage_since,
                exc,
            )
        metrics.KAFKA_ERRORS.inc()
        self.stop.wait(self._outage_pause)
        self._outage_pause = min(MAX_OUTAGE_PAUSE_S, self._outage_pause * 2)

    def _kafka_answers(self) -> None:
        if self._outage_since is not None:
            log.info(
                "Kafka and the schema registry answer again after %.0f s; going on",
                time.monotonic() - self._outage_since,
            )
            self._outage_since, self._outage_logged = None, 0.0

    def _step(self) -> None:
        lingering = self._read_at + self.settings.batch_linger - time.monotonic()
        if not self._backlog and self.stop.wait(lingering):  # a batch gathers (ML_BATCH_LINGER) unless records wait
            return
        self.partitions.poll()
        self.partitions.take_on()
        self._use_models(self.watcher.take(), self.watcher.take_challenger())
        self.partitions.rebuild(self.batch_predictor)
        self._read_at = time.monotonic()
        with self.progress.phase("read"):
            batch = self.partitions.read()
        self._backlog = batch.backlog
        if batch.records:
            self._predict(batch)
        elif batch.ends:
            self.partitions.commit(batch.ends)  # offsets that held no record (transaction markers, compaction)
        else:
            self.stop.wait(self.settings.idle_wait)

    def _use_models(self, model: LoadedModel | None, challenger: ChallengerChange | None) -> None:
        renewed = False
        if model is not None:
            self._model_loaded = True
            renewed = self.batch_predictor.use_model(model)
        if challenger is not None:
            renewed |= self.batch_predictor.use_challenger(challenger.model)
        if renewed:
            self.partitions.forget_history()

    def _predict(self, batch: Batch) -> None:
        decoded = self.batch_predictor.decode(batch.records)
        returning = self.batch_predictor.returning(decoded)
        if returning:
            with self.progress.phase("rebuild"):
                self.partitions.rebuild_returning(batch, returning, self.batch_predictor)
        scored = self.batch_predictor.predict(decoded)
        with self.progress.phase("produce"):
            self.writer.predictions(scored.predictions)
        with self.progress.phase("shadow"):  # the challenger's model call while the product's records are on their way
            self.shadow.produce(self.batch_predictor.challenger, scored.pushed)
        with self.progress.phase("deliver"):
            failure = self.writer.deliver()
            self.shadow.deliver()
        if failure is not None:
            metrics.UNDELIVERED.inc()
            self.partitions.rewind(batch.ends)
            raise KafkaError(failure)  # retried after a growing pause, like Kafka not answering: never in a spin
        with self.progress.phase("commit"):
            self.partitions.commit(batch.ends)
        metrics.count_delivered(scored.predictions, scored.ood, self.rate)
        self.shadow.count_delivered()
        self.alerts.account(scored, self.batch_predictor.threshold)
        self.progress.batch_done(len(scored.predictions))

    def _dead_letter(self, record: RawRecord, reason: str) -> None:
        """A record that does not decode goes to the DLQ with its key and bytes; it is committed like the rest."""
        self.writer.dead_letter(record, reason)
        metrics.DLQ.inc()

    def _close(self) -> None:
        log.info("stopping: leaving group %s", self.settings.group_id)
        self.watcher.stop()
        self.writer.close()
        self.shadow.close()
        self.partitions.close()


def _fatal(exc: Exception) -> bool:
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, ConfluentKafkaError) and is_fatal(error)
