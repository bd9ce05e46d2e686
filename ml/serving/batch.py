"""One batch of records in, one prediction per reading out: the served model, every car's window, OOD scores.

The records are decoded (one that does not decode goes to `dead_letter`, the DLQ, and the next one flows), each
reading enters its car's ring (ml/serving/ring_buffer.py) and gets the window that ends at it, the model is called
(in slices of artifact.SIGNATURE_BATCH windows), and each reading is scored against the served model's training range
(ml/ood.py). A reading whose car reported a failure in it or in its previous W readings gets no alert (ml/episodes.py:
"the car told us"): failure_predicted false, alert_suppressed true where the probability reached the threshold.
Nothing here talks to Kafka: the loop (ml/serving/loop.py) delivers the predictions and commits.

The windows are sized by the served model (its metadata's window and features), never by the settings. A model
with another window or feature list starts them empty, and the loop has every partition's history rebuilt.
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
from ml.ood import OodScorer, OodScores, out_of_range
from ml.serving import metrics
from ml.serving.progress import Progress
from ml.serving.ring_buffer import CarWindows
from ml.serving.settings import PredictorSettings
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


class BatchPredictor:
    """The served model and the last W readings of every car of the owned partitions (a car's partition is its
    group in the windows, so that a revoked partition's cars can be forgotten together)."""

    def __init__(
        self, settings: PredictorSettings, progress: Progress, dead_letter: Callable[[RawRecord, str], None]
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.dead_letter = dead_letter
        self.decoder = AvroCodec(schemas.READING, settings.topic, settings.schema_registry_url)
        self.model: LoadedModel | None = None
        self.windows: CarWindows | None = None
        self.features: list[str] = []
        self.mean = np.zeros(0, dtype=np.float32)
        """The model's training mean per feature: the value of a feature a reading lacks (ml/features.py)."""
        self.threshold = 0.5
        self.horizon = 0
        self.ood = OodScorer(self.features, None, None)

    def use_model(self, model: LoadedModel) -> bool:
        """Serve `model` from the next batch on. True when the windows start empty (the first model, or one with
        another window or feature list): every owned partition's history must be rebuilt."""
        meta = model.metadata
        features, window = list(meta["features"]), int(meta["window"])
        renewed = self.windows is None or features != self.features or window != self.windows.window
        if renewed:
            if self.windows is not None:
                log.info("model %s has another window or features: rebuilding every car's history", model.version)
            self.windows = self._new_windows(window, len(features))
            self.features = features
        self.model = model
        self.mean = np.asarray(meta["scaling"]["mean"], dtype=np.float32)
        self.threshold = self.settings.threshold if self.settings.threshold is not None else float(meta["threshold"])
        self.horizon = int(meta["horizon"])
        self.ood = OodScorer.from_metadata(meta, self.settings.ood_threshold)
        metrics.set_model_version(model.version)
        log.info(
            "serving model %s (window %d, horizon %d, threshold %.3f)",
            model.version,
            window,
            self.horizon,
            self.threshold,
        )
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
        """The prediction records (prediction schema) of every decoded reading, in the order read, with their
        OOD scores and the readings' ground truth."""
        assert self.windows is not None and self.model is not None
        readings = [reading for _, reading in decoded]
        by_partition: dict[int, list[int]] = {}
        for i, (record, _) in enumerate(decoded):
            by_partition.setdefault(record.partition, []).append(i)
        with self.progress.phase("windows"):
            cars, seqs, rows, hashed, times, missing = self._columns(readings)
            failure = _failure(readings)
            windows = np.empty((len(readings), self.windows.window, self.windows.features), dtype=np.float32)
            suppressed = np.zeros(len(readings), dtype=bool)
            for partition, indices in by_partition.items():
                quiet = np.zeros(len(indices), dtype=bool)
                windows[indices] = self.windows.push(
                    [cars[i] for i in indices],
                    seqs[indices],
                    rows[indices],
                    hashed[indices],
                    group=partition,
                    times=times[indices],
                    failed=failure[indices] == 1,
                    suppressed=quiet,
                )
                suppressed[indices] = quiet
            self._state_metrics()
        with self.progress.phase("model"):
            probabilities = self._call_model(windows)
        with self.progress.phase("ood"):
            ood = self.ood.score(rows, out_of_range(readings), missing)
        # Python values (tolist) build the records several times faster than numpy scalars; the alert compares
        # the float32 probability as float64, as `float(p) >= threshold` does
        above = probabilities.astype(np.float64) >= self.threshold
        alert, quieted = above & ~suppressed, above & suppressed
        predicted_at, version, horizon = int(time.time() * 1000), self.model.version, self.horizon
        predictions = [
            {
                "car_id": car,
                "seq": seq,
                "event_time": event_time,
                "predicted_at": predicted_at,
                "failure_probability": probability,
                "failure_predicted": alerting,
                "model_version": version,
                "horizon": horizon,
                "ood_score": score,
                "out_of_distribution": flagged,
                "ood_features": ood.features_of(i) if flagged else [],
                "alert_suppressed": held_back,
            }
            for i, (car, seq, event_time, probability, alerting, score, flagged, held_back) in enumerate(
                zip(
                    cars,
                    seqs.tolist(),
                    times.tolist(),
                    probabilities.tolist(),
                    alert.tolist(),
                    ood.score.tolist(),
                    ood.flagged.tolist(),
                    quieted.tolist(),
                    strict=True,
                )
            )
        ]
        return Scored(predictions, ood, failure, ~hashed)

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

    def _call_model(self, windows: np.ndarray) -> np.ndarray:
        assert self.model is not None
        if not len(windows):
            return np.empty(0, dtype=np.float32)
        started = time.perf_counter()
        probabilities = self.model.predict(windows)  # in calls of at most artifact.SIGNATURE_BATCH windows
        metrics.MODEL_LATENCY.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(windows))
        return probabilities


def _failure(readings: list[dict]) -> np.ndarray:
    """int8 per reading: its failure_occurred (1 or 0), UNLABELLED where it is null."""
    return np.array(
        [UNLABELLED if (f := r.get("failure_occurred")) is None else int(f) for r in readings], dtype=np.int8
    )
