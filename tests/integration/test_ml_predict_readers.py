"""The predictor's partition readers (ml/source.py), both implementations, against the real Kafka: exact ranges,
one-record ranges (tensorflow-io's kernel reads nothing for those on its own), one reader per partition, and
topics written in transactions (markers hold offsets that no read ever delivers)."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from confluent_kafka import Producer

from common import schemas
from common.avro import AvroCodec
from common.settings import PLAINTEXT
from ml.source import (
    STALL_TIMEOUT_S,
    ConfluentPartitionReader,
    TfioPartitionReader,
    read_records,
    resolve_range,
)
from simulator.fleet import generate_readings

READERS = [TfioPartitionReader, ConfluentPartitionReader]
RETURNS = TypeVar("RETURNS")


def without_stalling(read: Callable[[], RETURNS], what: str) -> RETURNS:
    """What `read()` returns. A read waiting for a record that a transaction marker holds raises its own `stalled`
    error after STALL_TIMEOUT_S (the failure this guards against); the deadline, twice that, only catches a read
    that never returns at all."""
    deadline = 2 * STALL_TIMEOUT_S
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(read).result(timeout=deadline)
    except TimeoutError:
        pytest.fail(f"{what} never returned ({deadline:.0f} s)")
    finally:
        pool.shutdown(wait=False)


@pytest.fixture
def two_partitions(kafka_bootstrap, topic_factory, producer):
    topic = topic_factory("predict-reader", partitions=2)
    for i in range(60):
        producer.produce(topic, value=f"p{i % 2}-v{i // 2}".encode(), key=f"k{i}".encode(), partition=i % 2)
    producer.flush(30)
    return topic


@pytest.mark.parametrize("reader_class", READERS, ids=["tfio", "confluent"])
def test_reads_exactly_the_range_asked_for(kafka_bootstrap, two_partitions, reader_class):
    reader = reader_class(kafka_bootstrap, PLAINTEXT, two_partitions, 1)
    try:
        for start, stop in [(0, 30), (0, 1), (1, 2), (29, 30), (5, 6), (10, 17), (3, 3)]:
            records = reader.read(start, stop)
            assert [r.value for r in records] == [f"p1-v{i}".encode() for i in range(start, stop)], (start, stop)
            assert [r.offset for r in records] == list(range(start, stop))
            assert {r.partition for r in records} <= {1}
        assert reader.read(0, 1)[0].key == b"k1"
    finally:
        reader.close()


@pytest.mark.parametrize("reader_class", READERS, ids=["tfio", "confluent"])
def test_readers_of_different_partitions_stay_apart(kafka_bootstrap, two_partitions, reader_class):
    readers = [reader_class(kafka_bootstrap, PLAINTEXT, two_partitions, p) for p in (0, 1)]
    try:
        for partition, reader in enumerate(readers):
            assert [r.value for r in reader.read(0, 30)] == [f"p{partition}-v{i}".encode() for i in range(30)]
    finally:
        for reader in readers:
            reader.close()


# -- transactions: markers occupy offsets that are never delivered as messages ----------------------------------------


@pytest.fixture
def transactional(kafka_bootstrap, topic_factory):
    """One partition written by a transactional producer: readings 0-3 committed (marker at 4), 5-8 aborted
    (marker at 9), 10-13 committed (marker at 14); high watermark 15, ending in a marker."""
    topic = topic_factory("predict-reader-txn", partitions=1)
    codec = AvroCodec(schemas.READING, topic)
    readings = list(generate_readings(cars=2, readings_per_car=6, seed=21))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"txn-{topic}"})
    producer.init_transactions(30)
    for part, commit in ((readings[:4], True), (readings[4:8], False), (readings[8:], True)):
        producer.begin_transaction()
        for reading in part:
            producer.produce(topic, codec.encode(reading), reading["car_id"].encode())
        producer.flush(30)  # an aborted transaction's records reach the log too, then its abort marker
        producer.commit_transaction(30) if commit else producer.abort_transaction(30)
    committed = readings[:4] + readings[8:]
    return (
        topic,
        codec,
        {offset: reading for offset, reading in zip([0, 1, 2, 3, 10, 11, 12, 13], committed, strict=True)},
    )


def _seqs(codec, records) -> list[tuple[str, int]]:
    return [(r["car_id"], r["seq"]) for r in (codec.decode(record.value) for record in records)]


@pytest.mark.containers
def test_the_transactional_fixture_ends_in_a_marker(kafka_bootstrap, transactional):
    topic, _, _ = transactional
    assert resolve_range(kafka_bootstrap, PLAINTEXT, topic).partitions[0].end == 15


@pytest.mark.parametrize("reader_class", READERS, ids=["tfio", "confluent"])
def test_a_range_ending_in_a_transaction_marker_is_read_to_its_end_without_stalling(
    kafka_bootstrap, transactional, reader_class
):
    """The confluent reader used to wait for a record at end-1 that a marker holds, and stalled for 30 s ("stalled
    at offset 5"). Ranges that end at the high watermark read every committed record, none aborted, and end."""
    topic, codec, committed = transactional
    reader = reader_class(kafka_bootstrap, PLAINTEXT, topic, 0)
    try:
        for start, stop in [(0, 15), (10, 15), (14, 15), (4, 15), (13, 15)]:
            records = without_stalling(lambda start=start, stop=stop: reader.read(start, stop), f"[{start}, {stop})")
            wanted = [committed[o] for o in sorted(committed) if start <= o < stop]
            assert _seqs(codec, records) == [(r["car_id"], r["seq"]) for r in wanted], (start, stop)
    finally:
        reader.close()


def test_the_confluent_reader_gives_exact_offsets_around_markers(kafka_bootstrap, transactional):
    topic, codec, committed = transactional
    reader = ConfluentPartitionReader(kafka_bootstrap, PLAINTEXT, topic, 0)
    try:
        for start, stop in [(0, 5), (0, 4), (4, 5), (3, 10), (5, 10), (9, 11), (0, 15)]:
            records = reader.read(start, stop)
            assert [r.offset for r in records] == [o for o in sorted(committed) if start <= o < stop], (start, stop)
            assert _seqs(codec, records) == [
                (committed[r.offset]["car_id"], committed[r.offset]["seq"]) for r in records
            ]
    finally:
        reader.close()


def test_the_tfio_reader_over_reads_at_most_one_record_past_a_marker_inside_the_topic(kafka_bootstrap, transactional):
    """tensorflow-io's kernel returns no offsets and reads until it sees a record at or past end-1: when end-1 is a
    marker with records after it, the next committed record comes too. Documented (ml/serving/README.md): the
    predictor then predicts that reading twice (a duplicate), never loses one."""
    topic, codec, committed = transactional
    reader = TfioPartitionReader(kafka_bootstrap, PLAINTEXT, topic, 0)
    try:
        records = reader.read(0, 5)  # 4 is the commit marker; 5-9 are aborted; 10 is the next committed record
        wanted = [(committed[o]["car_id"], committed[o]["seq"]) for o in (0, 1, 2, 3)]
        assert _seqs(codec, records) in (wanted, wanted + [(committed[10]["car_id"], committed[10]["seq"])])
    finally:
        reader.close()


@pytest.mark.parametrize("reader", ["tfio", "confluent"])
def test_a_bounded_read_of_a_transactional_topic_ends_at_its_end(kafka_bootstrap, transactional, reader):
    """The training reads (`read_records`) over [start, high watermark): every committed reading, none aborted."""
    topic, _, committed = transactional
    whole = resolve_range(kafka_bootstrap, PLAINTEXT, topic)
    result = without_stalling(lambda: read_records(kafka_bootstrap, PLAINTEXT, whole, reader), f"{topic} [0, 15)")
    assert [(r.value["car_id"], r.value["seq"]) for r in result.records] == [
        (committed[o]["car_id"], committed[o]["seq"]) for o in sorted(committed)
    ]
