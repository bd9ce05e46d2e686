"""The streaming predictor: consumer-group membership and commits with confluent-kafka, reads through a partition
reader (tensorflow-io by default), model calls in batches, predictions back to Kafka.

Why this shape: tensorflow-io's group dataset can neither commit nor seek, so it cannot give at-least-once
delivery. Here a confluent-kafka consumer owns the group: it subscribes, every partition it is given is paused at
once (poll() then keeps the membership alive without fetching), and the data of the owned partitions is read
with bounded reads [position, high watermark) through ml/source.py's partition readers. After a batch's predictions are
all confirmed by Kafka, the batch's end offsets are committed. A crash before that commit means the batch is read
and predicted again: at least one prediction per reading, duplicates recognisable by (car_id, seq).

Rebalance callbacks run inside consumer.poll(), which the loop only calls between batches, when nothing is in
flight: a revoked partition has nothing left to commit.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import operator
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from common import schemas
from common.avro import AvroCodec
from common.errors import DecodeError
from common.kafka import consumer_config, ensure_topics
from ml.artifact import LoadedModel
from ml.features import CONTENT_HASH
from ml.ood import OodScorer, OodScores, describe, out_of_range
from ml.serving import metrics
from ml.serving.model_watcher import ModelWatcher
from ml.serving.ring_buffer import CarWindows
from ml.serving.settings import PredictorSettings
from ml.serving.writer import PredictionWriter
from ml.source import ConfluentPartitionReader, RawRecord, TfioPartitionReader, partition_reader

log = logging.getLogger(__name__)
alerts = logging.getLogger("ml.alerts")

MODEL_BATCH = 8192  # windows per model call: bounds the memory of one call, big enough to amortise its overhead
LATENCY_SAMPLES = 200  # end-to-end latency observations per batch


@dataclass
class PartitionState:
    partition: int
    reader: TfioPartitionReader | ConfluentPartitionReader
    committed: int
    position: int
    rebuilt: bool = False


@dataclass
class Batch:
    """Records read from the owned partitions, and the offset each partition is read up to."""

    records: list[RawRecord] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)


class Progress:
    """Where the time of the batches goes, logged every `every` seconds: the first thing to read when lag grows."""

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


class Repeats:
    """Which cars to log now: a car is logged when it enters a state (an alert, data out of distribution), then
    every `repeat` seconds while it stays in it. A log line for every reading of such a car would drown the log."""

    def __init__(self, repeat: float) -> None:
        self.repeat = repeat
        self._last: dict[str, float] = {}

    def due(self, car: str, now: float) -> bool:
        if now - self._last.get(car, -np.inf) < self.repeat:
            return False
        self._last[car] = now
        return True

    def left(self, cars: Iterable[str]) -> None:
        """These cars are out of the state: their next entry is logged at once."""
        if self._last:
            for car in set(cars) & self._last.keys():
                del self._last[car]


class Predictor:
    def __init__(self, settings: PredictorSettings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.topic = settings.topic
        self.codec = AvroCodec(schemas.READING, self.topic, settings.schema_registry_url)
        self.partitions: dict[int, PartitionState] = {}
        self.model: LoadedModel | None = None
        self.windows: CarWindows | None = None
        self.features: list[str] = []
        self.threshold = 0.5
        self.horizon = 0
        self.ood = OodScorer(self.features, None, None)
        self.alerting = Repeats(settings.alert_repeat)
        self.out_of_distribution = Repeats(settings.alert_repeat)
        self.rate = metrics.RateMeter()
        self.progress = Progress()
        self.watcher = ModelWatcher(settings.model_dir, settings.reload_interval)
        overrides = {"session.timeout.ms": settings.session_timeout_ms}
        if settings.instance_id:
            overrides["group.instance.id"] = settings.instance_id
        self.consumer = Consumer(consumer_config(settings.kafka_bootstrap_servers, settings.group_id, **overrides))
        self.writer = PredictionWriter(
            settings.kafka_bootstrap_servers,
            settings.output_topic,
            settings.dlq_topic,
            self.topic,
            settings.schema_registry_url,
        )

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        metrics.serve_metrics(self.settings.metrics_port)
        model = self.watcher.wait_first(self.stop)
        if model is None:
            return 0
        self._use_model(model)
        self.watcher.start()
        self._ensure_output_topics()
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._lost)
        log.info("predicting %s -> %s in group %s", self.topic, self.settings.output_topic, self.settings.group_id)
        try:
            while not self.stop.is_set():
                self._step()
        finally:
            self._close()
        return 0

    def _step(self) -> None:
        message = self.consumer.poll(0)  # rebalance callbacks and errors; the partitions are paused
        if message is not None and message.error() is not None:
            log.warning("consumer: %s", message.error().str())
        model = self.watcher.take()
        if model is not None:
            self._use_model(model)
        for state in list(self.partitions.values()):
            if not state.rebuilt:
                self._rebuild(state)
        with self.progress.phase("read"):
            batch = self._read()
        if batch.records:
            self._predict(batch)
        elif batch.ends:
            self._commit(batch.ends)  # only undecodable records, delivered to the DLQ
        else:
            self.stop.wait(self.settings.idle_wait)

    def _close(self) -> None:
        log.info("stopping: leaving group %s", self.settings.group_id)
        self.watcher.stop()
        self.writer.close()
        for state in self.partitions.values():
            state.reader.close()
        self.consumer.close()

    def _ensure_output_topics(self) -> None:
        metadata = self.consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        partitions = len(metadata.partitions) if metadata and metadata.partitions else 1
        ensure_topics(self.settings.kafka_bootstrap_servers, {self.settings.output_topic: partitions})

    # -- model ---------------------------------------------------------------------------------------------------

    def _use_model(self, model: LoadedModel) -> None:
        meta = model.metadata
        features, window = list(meta["features"]), int(meta["window"])
        if self.windows is None or features != self.features or window != self.windows.window:
            if self.windows is not None:
                log.info("model %s has another window or features: rebuilding every car's history", model.version)
            self.windows = CarWindows(window, len(features))
            self.features = features
            for state in self.partitions.values():
                state.rebuilt = False
        self.model = model
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

    # -- partitions ------------------------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        consumer.pause(partitions)  # data is read by the partition readers; poll() only keeps the membership
        for tp in consumer.committed(partitions, timeout=30):
            low, _ = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=30)
            start = tp.offset if tp.offset >= 0 else low
            reader = partition_reader(
                self.settings.kafka_bootstrap_servers, self.topic, tp.partition, self.settings.reader
            )
            self.partitions[tp.partition] = PartitionState(tp.partition, reader, committed=start, position=start)
            log.info("assigned partition %d, resuming at offset %d", tp.partition, start)
        metrics.ASSIGNED.set(len(self.partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            state = self.partitions.pop(tp.partition, None)
            if state is None:
                continue
            state.reader.close()
            if self.windows is not None:
                self.windows.reset_group(tp.partition)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(str(tp.partition))
            log.info("partition %d revoked at committed offset %d", tp.partition, state.committed)
        metrics.ASSIGNED.set(len(self.partitions))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions %s lost (session expired); another predictor may own them now",
            [p.partition for p in partitions],
        )
        self._on_revoke(consumer, partitions)

    def _rebuild(self, state: PartitionState) -> None:
        """Refill the windows of a new partition's cars from the records just before its committed offset."""
        assert self.windows is not None
        self.windows.reset_group(state.partition)
        low, _ = self.consumer.get_watermark_offsets(TopicPartition(self.topic, state.partition), timeout=30)
        start = max(low, state.committed - self.settings.rebuild_records)
        used = 0
        for chunk_start in range(start, state.committed, self.settings.max_batch):
            chunk = state.reader.read(chunk_start, min(chunk_start + self.settings.max_batch, state.committed))
            readings = [reading for _, reading in self._decode(chunk, dead_letter=False)]
            self.windows.push(*self._columns(readings), group=state.partition, windows=False)
            used += len(readings)
        state.rebuilt = True
        if state.committed > start:
            log.info(
                "partition %d: rebuilt history from %d records [%d, %d); %d car(s) have fewer than %d readings "
                "(their windows are padded)",
                state.partition,
                used,
                start,
                state.committed,
                self.windows.short_cars(state.partition),
                self.windows.window,
            )
        else:
            log.info(
                "partition %d: no records before offset %d; cars start with padded windows", state.partition, start
            )

    # -- the batch -------------------------------------------------------------------------------------------------

    def _read(self) -> Batch:
        batch = Batch()
        for state in self.partitions.values():
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, state.partition), timeout=30)
            if state.position < low:
                log.error(
                    "partition %d: offsets %d..%d were deleted by retention before they were predicted",
                    state.partition,
                    state.position,
                    low - 1,
                )
                state.position = low
            metrics.LAG.labels(partition=str(state.partition)).set(high - state.position)
            if high <= state.position:
                continue
            stop = min(high, state.position + self.settings.max_batch)
            batch.records.extend(state.reader.read(state.position, stop))
            batch.ends[state.partition] = stop
            state.position = stop
        return batch

    def _decode(self, records: list[RawRecord], dead_letter: bool = True) -> list[tuple[RawRecord, dict]]:
        decoded = []
        for record in records:
            try:
                decoded.append((record, self.codec.decode(record.value)))
            except DecodeError as exc:
                if dead_letter:
                    self.writer.dead_letter(record, str(exc))
                    metrics.DLQ.inc()
        return decoded

    def _columns(self, readings: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(car ids, seqs, feature rows, whether seq is a content hash) of decoded readings."""
        values = operator.itemgetter(*self.features)
        rows = np.array([values(reading) for reading in readings], dtype=np.float32)
        rows = rows.reshape(len(readings), len(self.features))
        seqs = np.array([r["seq"] for r in readings], dtype=np.int64)
        hashed = np.array([r.get("seq_origin") == CONTENT_HASH for r in readings], dtype=bool)
        return [r["car_id"] for r in readings], seqs, rows, hashed

    def _predict(self, batch: Batch) -> None:
        assert self.windows is not None and self.model is not None
        with self.progress.phase("decode"):
            decoded = self._decode(batch.records)
        readings = [reading for _, reading in decoded]
        by_partition: dict[int, list[int]] = {}
        for i, (record, _) in enumerate(decoded):
            by_partition.setdefault(record.partition, []).append(i)
        with self.progress.phase("windows"):
            cars, seqs, rows, hashed = self._columns(readings)
            windows = np.empty((len(readings), self.windows.window, self.windows.features), dtype=np.float32)
            for partition, indices in by_partition.items():
                windows[indices] = self.windows.push(
                    [cars[i] for i in indices], seqs[indices], rows[indices], hashed[indices], group=partition
                )
        with self.progress.phase("model"):
            probabilities = self._call_model(windows)
        with self.progress.phase("ood"):
            ood = self.ood.score(rows, out_of_range(readings))
        predicted_at = int(time.time() * 1000)
        predictions = [
            {
                "car_id": reading["car_id"],
                "seq": reading["seq"],
                "event_time": reading["event_time"],
                "predicted_at": predicted_at,
                "failure_probability": float(probability),
                "failure_predicted": bool(probability >= self.threshold),
                "model_version": self.model.version,
                "horizon": self.horizon,
                "ood_score": score,
                "out_of_distribution": flagged,
                "ood_features": ood.features_of(i) if flagged else [],
            }
            for i, (reading, probability, score, flagged) in enumerate(
                zip(readings, probabilities, ood.score.tolist(), ood.flagged.tolist(), strict=True)
            )
        ]
        with self.progress.phase("produce"):
            self.writer.predictions(predictions)
        with self.progress.phase("deliver"):
            delivered = self.writer.deliver()
        if not delivered:
            self._rewind(batch.ends)
            return
        with self.progress.phase("commit"):
            self._commit(batch.ends)
        self._account(predictions, ood)
        self.progress.batch_done(len(predictions))

    def _call_model(self, windows: np.ndarray) -> np.ndarray:
        assert self.model is not None
        if not len(windows):
            return np.empty(0, dtype=np.float32)
        started = time.perf_counter()
        parts = [self.model.predict(windows[i : i + MODEL_BATCH]) for i in range(0, len(windows), MODEL_BATCH)]
        metrics.MODEL_LATENCY.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(windows))
        return np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1) for p in parts])

    def _commit(self, ends: dict[int, int]) -> None:
        owned = {p: end for p, end in ends.items() if p in self.partitions}
        if not owned:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, end) for p, end in owned.items()], asynchronous=False
            )
        except KafkaException as exc:  # e.g. a rebalance started: the next owner re-reads (duplicates, no loss)
            log.warning("commit of %s failed: %s", owned, exc.args[0].str())
            return
        for p, end in owned.items():
            self.partitions[p].committed = end

    def _rewind(self, ends: dict[int, int]) -> None:
        for p in ends:
            if p in self.partitions:
                state = self.partitions[p]
                log.warning("partition %d: predictions not confirmed; re-reading from offset %d", p, state.committed)
                state.position = state.committed

    def _account(self, predictions: list[dict], ood: OodScores) -> None:
        metrics.PREDICTIONS.inc(len(predictions))
        self.rate.update(len(predictions))
        # A bounded sample per batch keeps the histograms unbiased without a Python call per prediction.
        for p in random.sample(predictions, min(len(predictions), LATENCY_SAMPLES)):
            metrics.END_TO_END.observe((p["predicted_at"] - p["event_time"]) / 1000)
            metrics.OOD_SCORE.observe(p["ood_score"])
        flagged = int(ood.flagged.sum())
        if flagged:
            metrics.OOD.inc(flagged)
            for name, count in zip(ood.names, ood.outside.sum(axis=0).tolist(), strict=True):
                if count:
                    metrics.OOD_FEATURES.labels(feature=name).inc(count)
        now = time.monotonic()
        alerting = [p for p in predictions if p["failure_predicted"]]
        metrics.ALERTS.inc(len(alerting))
        # a car back under the threshold (back in distribution) is logged again at its next crossing
        self.alerting.left(p["car_id"] for p in predictions if not p["failure_predicted"])
        self.out_of_distribution.left(p["car_id"] for p in predictions if not p["out_of_distribution"])
        for p in alerting:
            if self.alerting.due(p["car_id"], now):
                note = f" ({describe(p['ood_features'])})" if p["out_of_distribution"] else ""
                alerts.warning(
                    "ALERT car %s: failure probability %.3f >= %.3f (seq %d, model %s, horizon %d readings)%s",
                    p["car_id"], p["failure_probability"], self.threshold, p["seq"], p["model_version"], p["horizon"],
                    note,
                )  # fmt: skip
        for p in predictions if flagged else ():
            if p["out_of_distribution"] and self.out_of_distribution.due(p["car_id"], now):
                alerts.warning(
                    "car %s: %s (ood score %.2f > %.2f, seq %d, model %s): its failure probability %.3f means little",
                    p["car_id"], describe(p["ood_features"]), p["ood_score"], self.settings.ood_threshold, p["seq"],
                    p["model_version"], p["failure_probability"],
                )  # fmt: skip
