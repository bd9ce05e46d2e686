"""Bounded reads of a Kafka topic into decoded records: the ONLY module that imports tensorflow_io.

Two readers, selected by ML_READER / --reader, both feeding tf.data:
- `tfio`: tensorflow-io's Kafka kernel, the stack's reference path (unmaintained since 0.37.1, so kept here);
- `confluent`: a confluent-kafka consumer behind `tf.data.Dataset.from_generator`.

Both read the same `TopicRange` (per partition: start offset inclusive, end offset exclusive) and yield chunks
{message, key, partition, offset}; `read_records` decodes them with AvroCodec (both framings). The ranges come from
confluent-kafka's metadata calls (watermarks, offsets for a time), which tensorflow-io does not offer.

The predictor reads the same two ways, one partition at a time and batch after batch (`partition_reader`). Every
workaround for tensorflow-io's kernel lives in one class, `TfioPartitionReader`, which both kinds of read use.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from common.avro import AvroCodec
from common.errors import ConfigError, DecodeError, KafkaError
from common.kafka import client_config, consumer_config
from common.schemas import READING
from common.settings import KafkaSecurity
from common.topics import ML_READER_GROUP_PREFIX

log = logging.getLogger(__name__)

READERS = ("tfio", "confluent")
CHUNK = 4096
# librdkafka waits fetch.wait.max.ms (500 ms) for more data on every fetch; tensorflow-io's kernel fetches once
# per chunk, which made a bounded read cost half a second per 1024 records. The range is known: never wait long.
FETCH_WAIT_MS = 10
TFIO_CONFIGURATION = [f"fetch.wait.max.ms={FETCH_WAIT_MS}", "enable.auto.commit=false"]
# The predictor's readers are re-assigned for every read, which drops what librdkafka fetched ahead since the last
# one: by default it fetches ahead continuously (until 100,000 records wait), so every record was fetched and
# decompressed twice. Fetching ahead only while nothing waits costs a third less CPU per record (13 µs against
# 17 to 22 in a read loop at 10,000 records/s, the producer's CPU included).
NO_FETCH_AHEAD = {"queued.min.messages": 1}
STALL_TIMEOUT_S = 30.0
CONSUME_WAIT_S = 0.1  # short: a range may end in a transaction marker, which no consume() call ever returns
# A tfio read that ends short is read again (TfioPartitionReader.read): until 5 reads that bring no more, 0.2 s apart,
# about the time a new leader's high watermark takes to catch up with its followers' fetches.
SHORT_READ_TRIES = 5
SHORT_READ_WAIT_S = 0.2
CHUNK_SPEC = {
    "message": tf.TensorSpec([None], tf.string),
    "key": tf.TensorSpec([None], tf.string),
    "partition": tf.TensorSpec([None], tf.int64),
    "offset": tf.TensorSpec([None], tf.int64),
}


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int
    """Exclusive: the partition's end (high watermark) when the range was resolved, or an earlier bound."""

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class TopicRange:
    topic: str
    partitions: tuple[PartitionRange, ...]

    @property
    def count(self) -> int:
        return sum(p.count for p in self.partitions)

    def start_offsets(self) -> dict[str, int]:
        return {str(p.partition): p.start for p in self.partitions}

    def end_offsets(self) -> dict[str, int]:
        return {str(p.partition): p.end for p in self.partitions}


@dataclass(frozen=True)
class SourceRecord:
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]


@dataclass
class ReadResult:
    records: list[SourceRecord]
    rejected: int
    seconds: float


@dataclass(slots=True)
class RawRecord:
    """One undecoded record, so that a record that does not decode can go to the DLQ as it was. Not frozen: one is
    made per record read, and a frozen dataclass's __init__ costs 0.4 µs more (0.53 against 0.15)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


def _group(kind: str) -> str:
    """A throw-away group id of the readers (never joined, never committed), under the prefix the ACLs name."""
    return f"{ML_READER_GROUP_PREFIX}{kind}-{uuid.uuid4().hex[:8]}"


def _metadata_consumer(bootstrap: str, security: KafkaSecurity) -> Consumer:
    return Consumer(consumer_config(bootstrap, security, _group("range")))


def _reader_consumer(bootstrap: str, security: KafkaSecurity, **overrides: Any) -> Consumer:
    """A consumer to assign (never subscribe) to ranges: no group membership, no commits, short fetch waits."""
    return Consumer(
        consumer_config(bootstrap, security, _group("reader"), **{"fetch.wait.max.ms": FETCH_WAIT_MS, **overrides})
    )


def resolve_range(
    bootstrap: str,
    security: KafkaSecurity,
    topic: str,
    start_offset: int | None = None,
    start_time_ms: int | None = None,
    max_per_partition: int | None = None,
    timeout: float = 30.0,
    last_per_partition: int | None = None,
) -> TopicRange:
    """From a start offset (clamped to the retained range; None means the earliest) or the first record at or after
    `start_time_ms`, to the current end of every partition; `last_per_partition` starts each partition at most
    that many records before its end (the recent stretch `python -m ml drift` reads)."""
    consumer = _metadata_consumer(bootstrap, security)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            reason = metadata.error.str() if metadata is not None and metadata.error else "no partitions"
            raise ConfigError(f"cannot read topic {topic!r}: {reason}")
        ranges = []
        for partition in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            start = low if start_offset is None else min(max(start_offset, low), high)
            if start_time_ms is not None:
                found = consumer.offsets_for_times([TopicPartition(topic, partition, start_time_ms)], timeout=timeout)
                start = high if found[0].offset < 0 else max(start, found[0].offset)
            if last_per_partition is not None:
                start = max(start, high - last_per_partition)
            end = high if max_per_partition is None else min(high, start + max_per_partition)
            ranges.append(PartitionRange(partition, start, end))
    except KafkaException as exc:
        error = exc.args[0]
        raise KafkaError(f"cannot resolve offsets of {topic!r}: {error.str()}", error.code()) from exc
    finally:
        consumer.close()
    result = TopicRange(topic, tuple(ranges))
    log.info("range of %s: %d records, %s", topic, result.count, [(p.partition, p.start, p.end) for p in ranges])
    return result


# -- tensorflow-io ------------------------------------------------------------------------------------------------
# What tensorflow-io 0.37.1 (unmaintained) gets wrong, worked around once, for both the bounded reads (training,
# drift, the seed's form) and the predictor's partition reads: `TfioPartitionReader` and `_lone_record`.


def _lone_record(start: int, stop: int) -> tuple[int, int]:
    """(offset to ask the kernel for, records to drop from what it returns) to read [start, stop).

    The kernel reads until it has seen offset stop-1 counting from `start` itself, so it returns nothing for a
    one-record range: a lone record is asked for with the record before it (dropped) or, at offset 0, from the
    beginning of the partition."""
    if stop - start != 1:
        return start, 0
    return (start - 1, 1) if start > 0 else (OFFSET_BEGINNING, 0)


def _tfio_chunks(part: PartitionRange) -> tuple[np.ndarray, ...]:
    """(start, first offset to ask for, stop, records to drop) per chunk of [start, end); a one-record tail joins
    the chunk before it, so only a one-record range is read with `_lone_record`'s overlap."""
    starts = list(range(part.start, part.end, CHUNK))
    stops = [*starts[1:], part.end]
    if len(starts) > 1 and stops[-1] - starts[-1] == 1:
        starts.pop()
        stops.pop(-2)
    asked = [_lone_record(start, stop) for start, stop in zip(starts, stops, strict=True)]
    firsts, skips = [first for first, _ in asked], [skip for _, skip in asked]
    return tuple(np.array(column, dtype=np.int64) for column in (starts, firsts, stops, skips))


class TfioPartitionReader:
    """tensorflow-io's Kafka kernel on one partition, kept open until `close()`; its librdkafka client never
    commits. `tensors` reads inside a tf.data pipeline (the bounded reads), `read` eagerly (the predictor).

    - A unique shared_name: eager TensorFlow caches a kernel per set of attributes, so without one every init
      returns the SAME resource, and readers of two partitions would silently read one partition twice.
    - `fetch.wait.max.ms` is short (TFIO_CONFIGURATION): the kernel fetches once per chunk.
    - A one-record range is read with one record of overlap (`_lone_record`).
    - A named resource (and its librdkafka client) lives until it is destroyed: `close()` destroys it.
    """

    def __init__(self, bootstrap: str, security: KafkaSecurity, topic: str, partition: int, **overrides: Any) -> None:
        from tensorflow_io.python.ops import core_ops

        self._read = core_ops.io_kafka_readable_read
        self.partition = partition
        # librdkafka underneath reads the same properties: the servers and the identity of the settings
        client = client_config(bootstrap, security, **{"group.id": _group("reader"), **overrides})
        metadata = [*TFIO_CONFIGURATION, *(f"{key}={value}" for key, value in client.items())]
        self._resource = core_ops.io_kafka_readable_init(
            topic, partition, offset=0, metadata=metadata, shared_name=f"ml-reader-{uuid.uuid4().hex}"
        )

    def tensors(self, first: Any, stop: Any, skip: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """(messages, keys) from offset `first` up to `stop`, less the first `skip` (`_lone_record` gives both);
        integers or tensors, so that a tf.data map can call it."""
        chunk = self._read(self._resource, start=first, stop=stop)
        return chunk.message[skip:], chunk.key[skip:]

    def read(self, start: int, stop: int) -> list[RawRecord]:
        """Every record with start <= offset < stop (stop at most the high watermark).

        The kernel returns what it has at the first end-of-partition event it meets, which can come before `stop`:
        after a leader change the new leader's high watermark may still stand below the one `stop` was taken from
        (`make chaos BROKERS=3` lost a prediction to it). A short read is read again whole (the kernel gives no
        offsets, so where a short read ended is unknown when transaction markers hold offsets), SHORT_READ_WAIT_S
        apart, until it is complete or SHORT_READ_TRIES reads in a row brought no more; what is still missing then
        is held by transaction markers (the kernel never returns them) or was not served, and is logged."""
        if stop <= start:
            return []
        keys, messages = self._chunk(start, stop)
        tries = 0
        while len(keys) < stop - start and tries < SHORT_READ_TRIES:
            time.sleep(SHORT_READ_WAIT_S)
            again = self._chunk(start, stop)
            if len(again[0]) > len(keys):
                (keys, messages), tries = again, 0
            else:
                tries += 1
        if len(keys) < stop - start:
            log.warning(
                "partition %d: read [%d, %d) returned %d records; the other %d offsets hold transaction markers or "
                "records this broker did not serve",
                self.partition,
                start,
                stop,
                len(keys),
                stop - start - len(keys),
            )
        # The kernel returns no offsets: records are consecutive unless the topic holds transaction markers or
        # was compacted, where an offset counted too low only makes a DLQ header imprecise.
        pairs = zip(keys, messages, strict=True)
        return [RawRecord(self.partition, start + i, key or None, value) for i, (key, value) in enumerate(pairs)]

    def _chunk(self, start: int, stop: int) -> tuple[Any, Any]:
        """(keys, messages) of one kernel read of [start, stop), as numpy arrays."""
        first, skip = _lone_record(start, stop)
        try:
            chunk = self._read(self._resource, start=first, stop=stop)
        except tf.errors.OpError as exc:
            where = f"partition {self.partition} [{start}, {stop})"
            raise KafkaError(f"tensorflow-io read of {where} failed: {exc}") from exc
        # Sliced as numpy arrays: an eager tensor's slice costs a quarter of a millisecond of CPU, as much as the
        # read itself (measured on 1-record reads at the log's end).
        return chunk.key.numpy()[skip:], chunk.message.numpy()[skip:]

    def close(self) -> None:
        if self._resource is not None:
            tf.raw_ops.DestroyResourceOp(resource=self._resource, ignore_lookup_error=True)
            self._resource = None


# -- bounded reads (training, drift, the seed's form) ----------------------------------------------------------


def _tfio_partition(reader: TfioPartitionReader, part: PartitionRange) -> tf.data.Dataset:
    """tensorflow-io's bounded Kafka read of one partition, in chunks.

    `tfio.IODataset.from_kafka(start=...)` builds its chunk indices from offset 0, so it ignores `start` and
    always reads the partition from its beginning (tensorflow-io 0.37.1). This uses the same kernels with the
    chunks of [start, end)."""
    bounds = tf.data.Dataset.from_tensor_slices(_tfio_chunks(part))

    def read(start: tf.Tensor, first: tf.Tensor, stop: tf.Tensor, skip: tf.Tensor) -> dict[str, tf.Tensor]:
        message, key = reader.tensors(first, stop, skip)
        count = tf.shape(message, out_type=tf.int64)[0]
        return {
            "message": message,
            "key": key,
            "partition": tf.fill([count], tf.constant(part.partition, tf.int64)),
            "offset": start + tf.range(count, dtype=tf.int64),
        }

    return bounds.map(read)


def _positions(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """The consumer's position (next offset to deliver) per partition, negative before the first fetch.

    A range is done when its partition's position reaches its end, not when a record at end-1 was seen: that offset
    may hold a transaction marker (or an aborted or compacted record), which is never delivered as a message,
    while the position moves past it."""
    return {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in partitions])}


def _confluent_chunks(
    bootstrap: str, security: KafkaSecurity, topic_range: TopicRange
) -> Iterator[dict[str, np.ndarray]]:
    """A plain consumer assigned to the range (no group membership, no commits), in chunks of up to CHUNK."""
    pending = {p.partition: p for p in topic_range.partitions if p.count > 0}
    if not pending:
        return
    consumer = _reader_consumer(bootstrap, security)
    try:
        consumer.assign([TopicPartition(topic_range.topic, p.partition, p.start) for p in pending.values()])
        last_progress = time.monotonic()
        while pending:
            batch = consumer.consume(num_messages=CHUNK, timeout=CONSUME_WAIT_S)
            rows: list[tuple[bytes, bytes, int, int]] = []
            for message in batch:
                if message.error() is not None:
                    raise KafkaError(f"read of {topic_range.topic} failed: {message.error().str()}")
                part = pending.get(message.partition())
                if part is None or message.offset() >= part.end:
                    continue
                rows.append((message.value() or b"", message.key() or b"", message.partition(), message.offset()))
            for partition, position in _positions(consumer, topic_range.topic, list(pending)).items():
                if position >= pending[partition].end:
                    del pending[partition]
            if batch:
                last_progress = time.monotonic()
            elif pending and time.monotonic() - last_progress > STALL_TIMEOUT_S:
                raise KafkaError(
                    f"read of {topic_range.topic} stalled: no record for {STALL_TIMEOUT_S:.0f} s, "
                    f"still waiting for partitions {sorted(pending)}"
                )
            if rows:
                messages, keys, partitions, offsets = zip(*rows, strict=True)
                yield {
                    "message": np.array(messages, dtype=object),
                    "key": np.array(keys, dtype=object),
                    "partition": np.array(partitions, dtype=np.int64),
                    "offset": np.array(offsets, dtype=np.int64),
                }
    finally:
        consumer.close()


@contextmanager
def raw_dataset(
    bootstrap: str, security: KafkaSecurity, topic_range: TopicRange, reader: str = "tfio"
) -> Iterator[tf.data.Dataset]:
    """The undecoded records of the range as a tf.data pipeline of chunks: each element holds up to CHUNK records
    as vectors {message, key, partition, offset} (`.unbatch()` gives one record per element). The readers'
    Kafka clients are closed when the block ends."""
    if reader == "confluent":
        yield tf.data.Dataset.from_generator(
            lambda: _confluent_chunks(bootstrap, security, topic_range), output_signature=CHUNK_SPEC
        )
        return
    if reader != "tfio":
        raise ConfigError(f"unknown reader {reader!r}: choose one of {', '.join(READERS)}")
    readers: list[TfioPartitionReader] = []
    try:
        dataset = tf.data.Dataset.from_tensors({k: tf.zeros([0], s.dtype) for k, s in CHUNK_SPEC.items()}).take(0)
        for part in (p for p in topic_range.partitions if p.count):
            readers.append(TfioPartitionReader(bootstrap, security, topic_range.topic, part.partition))
            dataset = dataset.concatenate(_tfio_partition(readers[-1], part))
        yield dataset
    finally:
        for reader in readers:
            reader.close()


def decode_chunk(codec: AvroCodec, chunk: dict[str, np.ndarray], topic: str) -> tuple[list[SourceRecord], int]:
    """Decode one batch of raw elements; a record that does not decode is logged with its position and skipped."""
    records, rejected = [], 0
    for message, key, partition, offset in zip(
        chunk["message"], chunk["key"], chunk["partition"], chunk["offset"], strict=True
    ):
        try:
            value = codec.decode(message)
        except DecodeError as exc:
            rejected += 1
            log.warning("skipping %s[%d]@%d: %s", topic, partition, offset, exc)
            continue
        records.append(SourceRecord(int(partition), int(offset), key or None, value))
    return records, rejected


def read_records(
    bootstrap: str,
    security: KafkaSecurity,
    topic_range: TopicRange,
    reader: str = "tfio",
    registry_url: str | None = None,
    schema: str = READING,
) -> ReadResult:
    """Read and decode the whole range (bounded: it ends at the range's end offsets)."""
    codec = AvroCodec(schema, topic_range.topic, registry_url)
    started = time.monotonic()
    records: list[SourceRecord] = []
    rejected = 0
    with raw_dataset(bootstrap, security, topic_range, reader) as dataset:
        for chunk in dataset.prefetch(2).as_numpy_iterator():
            decoded, bad = decode_chunk(codec, chunk, topic_range.topic)
            records.extend(decoded)
            rejected += bad
    seconds = time.monotonic() - started
    log.info(
        "read %d records of %s through %s in %.1f s (%d rejected)",
        len(records),
        topic_range.topic,
        reader,
        seconds,
        rejected,
    )
    return ReadResult(records, rejected, seconds)


# -- the predictor's reads ----------------------------------------------------------------------------------------
# The predictor owns group membership and commits with its own confluent-kafka consumer and reads the data of the
# partitions it owns batch after batch, [position, high watermark). A reader stays open per owned partition: one
# librdkafka client seeked for every read instead of a new client (and tf.data pipeline) per batch: a
# TfioPartitionReader (above) or a ConfluentPartitionReader.


class ConfluentPartitionReader:
    """A confluent-kafka consumer assigned (not subscribed) to one partition, re-assigned at `start` per read."""

    def __init__(self, bootstrap: str, security: KafkaSecurity, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._consumer = _reader_consumer(bootstrap, security, **NO_FETCH_AHEAD)

    def read(self, start: int, stop: int) -> list[RawRecord]:
        """Every record with start <= offset < stop (stop at most the high watermark, or the last stable offset
        that a read_committed client is given as such). Done when the position reaches `stop` (`_positions`):
        offsets holding transaction markers are never delivered."""
        records: list[RawRecord] = []
        if stop <= start:
            return records
        self._consumer.assign([TopicPartition(self.topic, self.partition, start)])
        position, waiting_since = start, time.monotonic()
        while position < stop:
            messages = self._consumer.consume(num_messages=min(CHUNK, stop - position), timeout=CONSUME_WAIT_S)
            for message in messages:
                if message.error() is not None:
                    raise KafkaError(f"read of {self.topic}[{self.partition}] failed: {message.error().str()}")
                if message.offset() < stop:
                    records.append(RawRecord(self.partition, message.offset(), message.key(), message.value()))
            moved = _positions(self._consumer, self.topic, [self.partition])[self.partition]
            if moved > position:
                position, waiting_since = moved, time.monotonic()
            elif time.monotonic() - waiting_since > STALL_TIMEOUT_S:
                raise KafkaError(f"read of {self.topic}[{self.partition}] stalled at offset {position}")
        return records

    def close(self) -> None:
        self._consumer.close()


def partition_reader(
    bootstrap: str, security: KafkaSecurity, topic: str, partition: int, reader: str = "tfio"
) -> TfioPartitionReader | ConfluentPartitionReader:
    """An open reader of one partition for repeated bounded reads (the predictor's batches)."""
    if reader == "tfio":
        return TfioPartitionReader(bootstrap, security, topic, partition, **NO_FETCH_AHEAD)
    if reader == "confluent":
        return ConfluentPartitionReader(bootstrap, security, topic, partition)
    raise ConfigError(f"unknown reader {reader!r}: choose one of {', '.join(READERS)}")
