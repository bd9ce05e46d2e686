"""The predictor's partition readers (ml/source.py), both implementations, against the real Kafka: exact ranges,
one-record ranges (tensorflow-io's kernel reads nothing for those on its own), and one reader per partition."""

import pytest

from ml.source import ConfluentPartitionReader, TfioPartitionReader

READERS = [TfioPartitionReader, ConfluentPartitionReader]


@pytest.fixture
def two_partitions(kafka_bootstrap, topic_factory, producer):
    topic = topic_factory("predict-reader", partitions=2)
    for i in range(60):
        producer.produce(topic, value=f"p{i % 2}-v{i // 2}".encode(), key=f"k{i}".encode(), partition=i % 2)
    producer.flush(30)
    return topic


@pytest.mark.parametrize("reader_class", READERS, ids=["tfio", "confluent"])
def test_reads_exactly_the_range_asked_for(kafka_bootstrap, two_partitions, reader_class):
    reader = reader_class(kafka_bootstrap, two_partitions, 1)
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
    readers = [reader_class(kafka_bootstrap, two_partitions, p) for p in (0, 1)]
    try:
        for partition, reader in enumerate(readers):
            assert [r.value for r in reader.read(0, 30)] == [f"p{partition}-v{i}".encode() for i in range(30)]
    finally:
        for reader in readers:
            reader.close()
