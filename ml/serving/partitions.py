"""The partitions one predictor owns in its consumer group: membership, positions, rebuilds, reads, commits.

Why this shape: tensorflow-io's group dataset can neither commit nor seek, so it cannot give at-least-once
delivery. Here a confluent-kafka consumer owns the group: it subscribes, every partition it is given is paused at
once (poll() then keeps the membership alive without fetching), and the data of the owned partitions is read
with bounded reads [position, high watermark) through ml/source.py's partition readers. A batch's end offsets are
committed only after the loop (ml/serving/loop.py) saw all of its predictions confirmed by Kafka; otherwise the
batch is rewound and read again.

Rebalance callbacks run inside poll(), which the loop only calls between batches, when nothing is in flight: a
revoked partition has nothing left to commit. An assigned partition is only noted there (`pending`); the loop
takes it on (`take_on`: its committed offset, a reader) right after poll(), where Kafka not answering is retried
like any other step. Raised inside the callback, such an error left the partition assigned but never read.

History comes back one way: a newly owned partition's cars, every owned partition's after a rewind (the windows
then hold readings that will be read again) or a new model window, and the cars evicted under the per-car state
bound that are back in a batch (ml/serving/ring_buffer.py) all get their windows refilled from up to
`rebuild_records` records before where prediction resumes (`_refill`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from common.kafka import consumer_config, watermarks
from ml.serving import metrics
from ml.serving.batch import BatchPredictor
from ml.serving.settings import PredictorSettings
from ml.source import ConfluentPartitionReader, RawRecord, TfioPartitionReader, partition_reader

log = logging.getLogger(__name__)
# How long a watermark query is asked again while a partition's leader moves: a new leader is elected within a
# broker session of the cluster (2.5 s, scripts/runtime/kafka_node.py), after a new quorum leader is elected (1 to 2
# s) when the dead broker led the quorum too; twice that for a loaded machine.
LEADER_MOVE_S = 10.0


@dataclass
class PartitionState:
    partition: int
    reader: TfioPartitionReader | ConfluentPartitionReader
    committed: int
    position: int
    rebuilt: bool = False
    leader_moved: bool = False
    """A watermark query was asked again (the partition's leader died): the reader's client may still fetch from
    the dead one until its metadata catches up (3 s in `make chaos BROKERS=3`); a new client learns the new one."""


@dataclass
class Batch:
    """Records read from the owned partitions, and the offset each partition is read up to."""

    records: list[RawRecord] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)
    starts: dict[int, int] = field(default_factory=dict)
    backlog: bool = False
    """Some partition had more records than one read takes (`max_batch`)."""


class Partitions:
    """The owned partitions. `on_revoke(partition)` runs for each partition taken away (revoked, or lost when
    the session expired), after its reader is closed: the windows forget that partition's cars."""

    def __init__(self, settings: PredictorSettings, on_revoke: Callable[[int], None]) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.on_revoke = on_revoke
        self.owned: dict[int, PartitionState] = {}
        self.pending: set[int] = set()
        """Partitions assigned and not yet taken on (`take_on`)."""
        self._closing = False
        overrides = {"session.timeout.ms": settings.session_timeout_ms}
        if settings.instance_id:
            overrides["group.instance.id"] = settings.instance_id
        self.consumer = Consumer(
            consumer_config(settings.kafka_bootstrap_servers, settings.kafka_security, settings.group_id, **overrides)
        )

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._lost)

    def poll(self) -> None:
        """Rebalance callbacks and errors; the partitions are paused, so no record comes back."""
        message = self.consumer.poll(0)
        if message is not None and message.error() is not None:
            if is_fatal(message.error()):  # e.g. fenced by a member with the same group.instance.id
                raise KafkaException(message.error())
            log.warning("consumer: %s", message.error().str())

    def topic_partitions(self) -> int:
        """How many partitions the topic has (1 when the broker does not say): the output topic gets as many."""
        metadata = self.consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        return len(metadata.partitions) if metadata and metadata.partitions else 1

    def close(self) -> None:
        """Leave the group, releasing every owned partition first; a second call does nothing.

        consumer.close() still serves the rebalance events queued since the last poll(): when the other member
        left just before this one was stopped, an assignment of its partitions. Nothing of ours may fail there: an
        exception raised inside a rebalance callback comes out of close() as confluent's KafkaError object, which
        is no exception class, so no `except` catches it and a clean stop exits 1 (as it did when the callback
        asked Kafka for committed offsets and a client being destroyed answered _DESTROY). So everything is
        released here, and while closing the callbacks only log."""
        if self._closing:
            return
        self._closing = True
        self._release(list(self.owned))
        self.pending.clear()
        self.consumer.close()

    # -- ownership ---------------------------------------------------------------------------------------------

    def _watermarks(self, partition: int, timeout: float = 30.0) -> tuple[int, int]:
        # A leader that moves (a broker of a cluster died) is asked again for a while; a Kafka that stays away is
        # the loop's outage (logged, read again from the commits).
        moving_for = time.monotonic() + LEADER_MOVE_S
        state = self.owned.get(partition)

        def asked_again(error: str) -> None:
            if state is not None:
                state.leader_moved = True

        tp = TopicPartition(self.topic, partition)
        return watermarks(self.consumer, tp, moving_for, timeout=timeout, asked_again=asked_again)

    def _new_reader(self, partition: int) -> TfioPartitionReader | ConfluentPartitionReader:
        settings = self.settings
        return partition_reader(
            settings.kafka_bootstrap_servers, settings.kafka_security, self.topic, partition, settings.reader
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:  # served by consumer.close(), which is leaving the group: confluent-kafka applies it
            log.info(
                "partitions %s assigned while leaving the group: not taken on",
                sorted(tp.partition for tp in partitions),
            )
            return
        consumer.assign(partitions)
        consumer.pause(partitions)  # data is read by the partition readers; poll() only keeps the membership
        self.pending.update(tp.partition for tp in partitions)

    def take_on(self, timeout: float = 30.0) -> None:
        """Start reading the pending partitions from their committed offsets (the earliest retained without one).
        Raises KafkaException when Kafka does not answer: what was not taken on stays pending for the next call."""
        if not self.pending:
            return
        asked = [TopicPartition(self.topic, p) for p in sorted(self.pending)]
        for tp in self.consumer.committed(asked, timeout=timeout):
            low, _ = self._watermarks(tp.partition, timeout)
            start = tp.offset if tp.offset >= 0 else low
            reader = self._new_reader(tp.partition)
            self.owned[tp.partition] = PartitionState(tp.partition, reader, committed=start, position=start)
            self.pending.discard(tp.partition)
            log.info("assigned partition %d, resuming at offset %d", tp.partition, start)
        metrics.ASSIGNED.set(len(self.owned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self._closing:  # while closing, everything was released before consumer.close()
            self._release([tp.partition for tp in partitions])

    def _release(self, partitions: list[int]) -> None:
        """Partitions taken away, or let go when leaving: readers closed, their cars forgotten."""
        for partition in partitions:
            self.pending.discard(partition)
            state = self.owned.pop(partition, None)
            if state is None:
                continue
            state.reader.close()
            self.on_revoke(partition)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(str(partition))
            log.info("partition %d revoked at committed offset %d", partition, state.committed)
        metrics.ASSIGNED.set(len(self.owned))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions %s lost (session expired); another predictor may own them now",
            [p.partition for p in partitions],
        )
        self._on_revoke(consumer, partitions)

    # -- history -----------------------------------------------------------------------------------------------

    def forget_history(self) -> None:
        """Every owned partition's cars need their history again (the windows started empty)."""
        for state in self.owned.values():
            state.rebuilt = False

    def rebuild(self, predictor: BatchPredictor) -> None:
        """Refill the windows of every newly assigned partition's cars (and of all of them after
        `forget_history`) from up to `rebuild_records` records just before the partition's committed offset."""
        for state in list(self.owned.values()):
            if not state.rebuilt:
                self._rebuild(state, predictor)

    def _rebuild(self, state: PartitionState, predictor: BatchPredictor) -> None:
        predictor.forget(state.partition, keep_evicted=True)
        start, used = self._refill(state, predictor, state.committed)
        state.rebuilt = True
        if state.committed > start:
            log.info(
                "partition %d: rebuilt history from %d records [%d, %d); %d car(s) have fewer than %d readings "
                "(their windows are padded)",
                state.partition,
                used,
                start,
                state.committed,
                predictor.short_cars(state.partition),
                predictor.window,
            )
        else:
            log.info(
                "partition %d: no records before offset %d; cars start with padded windows", state.partition, start
            )

    def rebuild_returning(self, batch: Batch, cars: dict[int, set[str]], predictor: BatchPredictor) -> None:
        """Cars evicted under the state bound and back in `batch` (per partition) get their history the way a
        newly owned partition does, from the records just before the batch, so that their next prediction sees a
        full window."""
        for partition, returning in cars.items():
            state = self.owned.get(partition)
            if state is None:
                continue
            end = batch.starts[partition]
            start, used = self._refill(state, predictor, end, returning)
            metrics.RETURNED.inc(len(returning))
            log.info(
                "partition %d: %d evicted car(s) back; history re-read from [%d, %d): %d readings, %d car(s) with "
                "fewer than %d (padded)",
                partition,
                len(returning),
                start,
                end,
                used,
                predictor.short_of(returning),
                predictor.window,
            )

    def _refill(
        self, state: PartitionState, predictor: BatchPredictor, end: int, cars: set[str] | None = None
    ) -> tuple[int, int]:
        """Push up to `rebuild_records` records before `end` into the windows (of `cars` only, when given):
        (first offset read, readings pushed)."""
        low, _ = self._watermarks(state.partition)
        start = max(low, end - self.settings.rebuild_records)
        used = 0
        for chunk_start in range(start, end, self.settings.max_batch):
            chunk = state.reader.read(chunk_start, min(chunk_start + self.settings.max_batch, end))
            used += predictor.refill(state.partition, chunk, cars)
        return start, used

    # -- batches -----------------------------------------------------------------------------------------------

    def read(self) -> Batch:
        """Up to `max_batch` records of every owned partition from its position on; positions move past them."""
        batch = Batch()
        for state in self.owned.values():
            low, high = self._watermarks(state.partition)
            if state.leader_moved:
                self._reopen(state)
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
            batch.backlog |= stop < high
            batch.records.extend(state.reader.read(state.position, stop))
            batch.starts[state.partition] = state.position
            batch.ends[state.partition] = stop
            state.position = stop
        return batch

    def _reopen(self, state: PartitionState) -> None:
        log.info("partition %d: its leader moved; reading it through a new client", state.partition)
        reader = self._new_reader(state.partition)  # first: a client that cannot be made leaves the old one
        state.reader.close()
        state.reader, state.leader_moved = reader, False

    def commit(self, ends: dict[int, int]) -> None:
        """Commit a delivered batch's end offsets of the partitions still owned; a failed commit (e.g. a rebalance
        started) is logged: the next owner reads those records again (duplicates, no loss)."""
        owned = {p: end for p, end in ends.items() if p in self.owned}
        if not owned:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, end) for p, end in owned.items()], asynchronous=False
            )
        except KafkaException as exc:
            log.warning("commit of %s failed: %s", owned, exc.args[0].str())
            return
        for p, end in owned.items():
            self.owned[p].committed = end

    def rewind_all(self) -> None:
        """After a step that failed midway (Kafka unavailable): every owned partition from its committed offset."""
        for state in self.owned.values():
            self._rewind(state)

    def rewind(self, ends: dict[int, int]) -> None:
        """A batch was not delivered: its partitions are read again from their committed offsets."""
        for p in ends:
            if p in self.owned:
                state = self.owned[p]
                log.warning("partition %d: predictions not confirmed; re-reading from offset %d", p, state.committed)
                self._rewind(state)

    @staticmethod
    def _rewind(state: PartitionState) -> None:
        # The windows already hold the readings past the commit: read again, they would count as duplicates and be
        # predicted on windows that end later than they do. The history is rebuilt up to the commit instead.
        if state.position != state.committed:
            state.position = state.committed
            state.rebuilt = False


def is_fatal(error: KafkaError) -> bool:
    """librdkafka's fatal errors (a fenced static member, a fatal idempotence error) end the client: no retry
    helps. A consumer reports one as a message error with the code _FATAL, which itself says fatal() False."""
    return error.fatal() or error.code() == KafkaError._FATAL
