"""One batch of records in, one prediction per reading out: the served model, every car's window, OOD scores.

The records are decoded (one that does not decode goes to `dead_letter`, the DLQ, and the next one flows), each
reading enters its car's ring (ml/serving/ring_buffer.py) and gets the window that ends at it, the model is called
(in slices of artifact.SIGNATURE_BATCH windows), and each reading is scored against the served model's training range
(ml/ood.py). A reading whose car reported a failure in it or in its previous W readings gets no alert (ml/episodes.py:
"the car told us"): failure_predicted false, alert_suppressed true where the probability reached the threshold.
Nothing here talks to Kafka: the loop (ml/serving/loop.py) delivers the predictions and commits.

The windows are sized by the models scored (their metadata's window and features), never by the settings: the
rings hold the longest window of the champion and of the challenger scored in the shadow (ml/serving/shadow.py),
and each model takes its last W rows (ml/serving/scoring.py). When that length or the feature list changes (a new
champion, a challenger of a longer window registered or cleared), the rings start empty and the loop has every
partition's history rebuilt.
Their memory is bounded by ML_MAX_STATE_BYTES (ml/serving/ring_buffer.py); cars evicted under it and seen again
are `returning`: the loop has their history re-read (ml/serving/partitions.py) before `predict`.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from common import schemas
from common.avro import AvroCodec
from common.errors import DecodeError
from common.schemas import SEQ_FROM_CONTENT
from ml.artifact import LoadedModel
from ml.features import fill_missing, missing_values
from ml.ood import OodScores, out_of_range
from ml.serving import metrics
from ml.serving.progress import Progress
from ml.serving.ring_buffer import CarWindows
from ml.serving.scoring import ModelScorer, Pushed
from ml.serving.settings import PredictorSettings
from ml.serving.shadow import Challenger
from ml.source import RawRecord

log = logging.getLogger(__name__)

UNLABELLED = -1
"""`Scored.failure` of a reading whose failure_occurred is null: real data carries no ground truth."""


def use_model_threads(threads: int) -> None:
    """TensorFlow's thread pools for the model calls (ML_MODEL_THREADS, 0: its default). Set before TensorFlow's
    first operation: its pools are sized once."""
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:  # TensorFlow already ran an operation in this process
        log.warning("TensorFlow's threads are set already, ML_MODEL_THREADS=%d not applied: %s", threads, exc)


class Scored(NamedTuple):
    """A batch's prediction records, their OOD scores, and the readings' ground truth for the alert log (the
    prediction schema does not carry it: a prediction says what the model thinks, not what happened)."""

    predictions: list[dict]
    ood: OodScores
    failure: np.ndarray
    """int8 per prediction: the reading's failure_occurred (1 or 0), UNLABELLED where it is null."""
    ordered: np.ndarray
    """bool per prediction: seq is the sender's sequence number, not a content hash (which counts nothing)."""
    pushed: Pushed | None = None
    """The batch as it entered the rings: what the challenger is scored on (ml/serving/shadow.py)."""


class BatchPredictor:
    """The served model (the champion), the challenger scored in the shadow, and the last L readings of every car
    of the owned partitions, L the longest window of the two (a car's partition is its group in the windows, so that
    a revoked partition's cars can be forgotten together)."""

    def __init__(
        self, settings: PredictorSettings, progress: Progress, dead_letter: Callable[[RawRecord, str], None]
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.dead_letter = dead_letter
        self.decoder = AvroCodec(schemas.READING, settings.topic, settings.schema_registry_url)
        self.scorer: ModelScorer | None = None
        """The served model (the champion): its predictions are the product."""
        self.challenger = Challenger(settings.ood_threshold, settings.shadow_topic)
        self.windows: CarWindows | None = None
        self.features: list[str] = []
        self.mean = np.zeros(0, dtype=np.float32)
        """The served model's training mean per feature: the value of a feature a reading lacks (ml/features.py)."""

    @property
    def threshold(self) -> float:
        assert self.scorer is not None
        return self.scorer.threshold

    def use_model(self, model: LoadedModel) -> bool:
        """Serve `model` from the next batch on. True when the windows start empty (the first model, or another
        longest window or feature list): every owned partition's history must be rebuilt."""
        threshold = self.settings.threshold if self.settings.threshold is not None else model.threshold
        self.scorer = ModelScorer(model, threshold, self.settings.ood_threshold)
        self.mean = np.asarray(model.metadata["scaling"]["mean"], dtype=np.float32)
        metrics.set_model_version(model.version)
        log.info(
            "serving model %s (window %d, horizon %d, threshold %.3f)",
            model.version,
            model.window,
            model.horizon,
            threshold,
        )
        self.challenger.match(self.scorer)
        return self._fit_windows()

    def use_challenger(self, model: LoadedModel | None) -> bool:
        """Score `model` in the shadow from the next batch on (None: no challenger any more). True when the windows
        start empty (its window is longer than the champion's, or was): every owned partition's history must be
        rebuilt."""
        self.challenger.use(model, self.scorer)
        return self._fit_windows() if self.scorer is not None else False

    def _fit_windows(self) -> bool:
        """Rings of the longest window scored and the served model's features; new ones when either changed."""
        assert self.scorer is not None
        length, features = max(self.scorer.window, self.challenger.window), self.scorer.features
        renewed = self.windows is None or features != self.features or length != self.windows.window
        if renewed:
            if self.windows is not None:
                log.info(
                    "the windows now hold %d readings of %d features (the longest window scored): rebuilding every "
                    "car's history",
                    length,
                    len(features),
                )
            self.windows = self._new_windows(length, len(features))
            self.features = features
        return renewed

    def _new_windows(self, window: int, features: int) -> CarWindows:
        """Windows within ML_MAX_STATE_BYTES, but never fewer cars than one partition's read (ML_MAX_BATCH): the
        cars of one push are never evicted while their windows are built."""
        idle = self.settings.car_idle_seconds
        windows = CarWindows(
            window,
            features,
            self.settings.max_state_bytes,
            idle_ms=int(idle * 1000) if idle > 0 else None,
            min_cars=self.settings.max_batch,
        )
        log.info(
            "per-car state: at most %d cars of %d readings (%d bytes each) in %d MiB; idle cars evicted after %s",
            windows.max_cars,
            window,
            windows.car_bytes,
            self.settings.max_state_bytes // 2**20,
            f"{idle:.0f} s of event time" if idle > 0 else "never",
        )
        if CarWindows.bytes_for(window, features, windows.max_cars) > self.settings.max_state_bytes:
            log.warning(
                "ML_MAX_STATE_BYTES holds fewer cars than one read of ML_MAX_BATCH (%d): raised to that",
                self.settings.max_batch,
            )
        return windows

    @property
    def window(self) -> int:
        assert self.windows is not None
        return self.windows.window

    def forget(self, partition: int, keep_evicted: bool = False) -> None:
        """Drop the history of a partition's cars: revoked or lost, or about to be rebuilt (`keep_evicted`: its
        evicted cars are still recognised when they return)."""
        if self.windows is not None:
            self.windows.reset_group(partition, keep_evicted)
            self._state_metrics()

    def refill(self, partition: int, records: list[RawRecord], cars: set[str] | None = None) -> int:
        """Push the readings of a partition's records (of `cars` only, when given) into their cars' windows without
        predicting them (a rebuild); a record that does not decode is skipped. Returns how many readings it
        pushed."""
        assert self.windows is not None
        if cars is not None:  # the key is the car id: decode only what may be theirs (a record without key too)
            keys = {car.encode() for car in cars}
            records = [record for record in records if record.key is None or record.key in keys]
        readings = [reading for _, reading in self._decode(records, dead_letter=False)]
        if cars is not None:
            readings = [reading for reading in readings if reading["car_id"] in cars]
        cars_, seqs, rows, hashed, times, _ = self._columns(readings)
        failed = _failure(readings) == 1
        self.windows.push(cars_, seqs, rows, hashed, group=partition, windows=False, times=times, failed=failed)
        self._state_metrics()
        return len(readings)

    def returning(self, decoded: list[tuple[RawRecord, dict]]) -> dict[int, set[str]]:
        """Per partition, the cars of a decoded batch that were evicted and are back: their history is re-read
        (ml/serving/partitions.py) before the batch is predicted. The batch's other cars are kept meanwhile."""
        assert self.windows is not None
        returning = set(self.windows.arriving([reading["car_id"] for _, reading in decoded]))
        found: dict[int, set[str]] = {}
        for record, reading in decoded:
            if reading["car_id"] in returning:
                found.setdefault(record.partition, set()).add(reading["car_id"])
        return found

    def short_of(self, cars: set[str]) -> int:
        """How many of `cars` have fewer than W readings."""
        assert self.windows is not None
        return sum(self.windows.readings_of(car) < self.windows.window for car in cars)

    def short_cars(self, partition: int) -> int:
        """Cars of the partition with fewer than W readings: their windows are padded."""
        assert self.windows is not None
        return self.windows.short_cars(partition)

    def decode(self, records: list[RawRecord]) -> list[tuple[RawRecord, dict]]:
        """The batch's readings beside their records; a record that does not decode goes to the DLQ."""
        with self.progress.phase("decode"):
            return self._decode(records)

    def predict(self, decoded: list[tuple[RawRecord, dict]]) -> Scored:
        """The served model's prediction records (prediction schema) of every decoded reading, in the order read,
        with their OOD scores and the readings' ground truth."""
        assert self.scorer is not None
        with self.progress.phase("windows"):
            pushed = self._push(decoded)
        with self.progress.phase("model"):
            probabilities = self._call_model(pushed)
        with self.progress.phase("ood"):
            ood = self.scorer.ood_scores(pushed)
        predictions = self.scorer.records(pushed, probabilities, ood)
        return Scored(predictions, ood, pushed.failure, ~pushed.hashed, pushed)

    def _push(self, decoded: list[tuple[RawRecord, dict]]) -> Pushed:
        """Each reading into its car's ring, per partition, and the window that ends at it."""
        assert self.windows is not None
        readings = [reading for _, reading in decoded]
        by_partition: dict[int, list[int]] = {}
        for i, (record, _) in enumerate(decoded):
            by_partition.setdefault(record.partition, []).append(i)
        cars, seqs, rows, hashed, times, missing = self._columns(readings)
        failure = _failure(readings)
        windows = np.empty((len(readings), self.windows.window, self.windows.features), dtype=np.float32)
        since_failure = np.zeros(len(readings), dtype=np.int64)
        for partition, indices in by_partition.items():
            since = np.zeros(len(indices), dtype=np.int64)
            windows[indices] = self.windows.push(
                [cars[i] for i in indices],
                seqs[indices],
                rows[indices],
                hashed[indices],
                group=partition,
                times=times[indices],
                failed=failure[indices] == 1,
                since_failure=since,
            )
            since_failure[indices] = since
        self._state_metrics()
        return Pushed(cars, seqs, times, rows, missing, out_of_range(readings), hashed, failure, windows, since_failure)

    def _decode(self, records: list[RawRecord], dead_letter: bool = True) -> list[tuple[RawRecord, dict]]:
        decoded = []
        for record in records:
            try:
                decoded.append((record, self.decoder.decode(record.value)))
            except DecodeError as exc:
                if dead_letter:
                    self.dead_letter(record, str(exc))
        return decoded

    def _columns(self, readings: list[dict]) -> tuple[list[str], *tuple[np.ndarray, ...]]:
        """(car ids, seqs, feature rows, whether seq is a content hash, event times, missing features) of decoded
        readings; a missing feature's value is its training mean."""
        values = operator.itemgetter(*self.features)
        rows = np.array([values(reading) for reading in readings], dtype=np.float32)
        rows = rows.reshape(len(readings), len(self.features))
        missing = missing_values(readings, self.features, rows)
        rows = fill_missing(rows, missing, self.mean)
        seqs = np.array([r["seq"] for r in readings], dtype=np.int64)
        hashed = np.array([r.get("seq_origin") == SEQ_FROM_CONTENT for r in readings], dtype=bool)
        times = np.array([r["event_time"] for r in readings], dtype=np.int64)
        return [r["car_id"] for r in readings], seqs, rows, hashed, times, missing

    def _state_metrics(self) -> None:
        assert self.windows is not None
        metrics.CARS_HELD.set(len(self.windows))
        metrics.STATE_BYTES.set(self.windows.nbytes)
        for reason, count in self.windows.take_evictions().items():
            if count:
                metrics.EVICTIONS.labels(reason=reason).inc(count)

    def _call_model(self, pushed: Pushed) -> np.ndarray:
        assert self.scorer is not None
        if not len(pushed.windows):
            return np.empty(0, dtype=np.float32)
        started = time.perf_counter()
        probabilities = self.scorer.probabilities(pushed)
        metrics.MODEL_LATENCY.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(pushed.windows))
        return probabilities


def _failure(readings: list[dict]) -> np.ndarray:
    """int8 per reading: its failure_occurred (1 or 0), UNLABELLED where it is null."""
    return np.array(
        [UNLABELLED if (f := r.get("failure_occurred")) is None else int(f) for r in readings], dtype=np.int8
    )
