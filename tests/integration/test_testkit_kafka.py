"""The test kit's Kafka reads against the real Kafka (scripts/testkit/kafka.py): a topic read to its end by the
consumer's positions, which get past transaction markers and aborted records that no reader ever receives, and a
topic read until a condition holds while it is being written."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaException, Producer

from scripts.testkit.kafka import end_offsets, read_to_end, read_until, unique


@pytest.fixture
def transactional(kafka_bootstrap, topic_factory):
    """Three partitions written by a transactional producer.
    0: a0-a3 committed (marker at 4), x0-x2 aborted (5-7, marker at 8), b0-b1 committed (9-10, marker at 11):
       high watermark 12, ending in a commit marker.
    1: y0-y2 aborted (0-2, marker at 3): high watermark 4, and not one record a reader receives.
    2: nothing."""
    topic = topic_factory("kit-txn", 3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique("kit-txn")})
    producer.init_transactions(30)
    for partition, values, commit in (
        (0, ["a0", "a1", "a2", "a3"], True),
        (0, ["x0", "x1", "x2"], False),
        (1, ["y0", "y1", "y2"], False),
        (0, ["b0", "b1"], True),
    ):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value.encode(), partition=partition)
        producer.flush(30)  # aborted records reach the log too, then their abort marker
        producer.commit_transaction(30) if commit else producer.abort_transaction(30)
    return topic


def positions(messages: list) -> list[tuple[int, int, str]]:
    return [(m.partition(), m.offset(), m.value().decode()) for m in messages]


def test_a_topic_ending_in_transaction_markers_is_read_to_its_end(kafka_bootstrap, transactional) -> None:
    ends = end_offsets(kafka_bootstrap, transactional)
    assert ends == {0: 12, 1: 4, 2: 0}
    messages = read_to_end(kafka_bootstrap, transactional, timeout=60)
    committed = [(0, 0, "a0"), (0, 1, "a1"), (0, 2, "a2"), (0, 3, "a3"), (0, 9, "b0"), (0, 10, "b1")]
    assert positions(messages) == committed
    # No record sits at any partition's end - 1: a reader waiting for it, or counting records up to the end
    # offsets, would wait forever; read_to_end got there on the consumer's positions.
    assert {(p, o) for p, o, _ in committed}.isdisjoint({(p, end - 1) for p, end in ends.items()})


def test_a_start_offset_skips_what_lies_before_it(kafka_bootstrap, transactional) -> None:
    assert positions(read_to_end(kafka_bootstrap, transactional, start={0: 5})) == [(0, 9, "b0"), (0, 10, "b1")]
    assert read_to_end(kafka_bootstrap, transactional, start={0: 12, 1: 4}) == []


def test_a_read_that_does_not_reach_the_end_names_the_partitions_behind(kafka_bootstrap, transactional) -> None:
    with pytest.raises(TimeoutError, match=r"not read to their end within 0 s: 0 at 0 of 12, 1 at 0 of 4$"):
        read_to_end(kafka_bootstrap, transactional, timeout=0)


def test_a_topic_that_does_not_exist_is_an_error(kafka_bootstrap) -> None:
    with pytest.raises(KafkaException):
        read_to_end(kafka_bootstrap, unique("kit-absent"), timeout=10)


def test_read_until_follows_a_topic_while_it_is_written(kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("kit-follow", 2)

    def write_later() -> None:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(50):
            producer.produce(topic, f"v{i}".encode(), partition=i % 2)
            if i == 24:
                producer.flush(30)
                time.sleep(1.0)
        producer.flush(30)

    writer = threading.Thread(target=write_later)
    writer.start()
    messages = read_until(kafka_bootstrap, topic, lambda messages: len(messages) >= 50, timeout=60)
    writer.join()
    assert sorted(m.value() for m in messages) == sorted(f"v{i}".encode() for i in range(50))
    # A condition that never holds: what came by the timeout, for the caller to assert on.
    assert len(read_until(kafka_bootstrap, topic, lambda messages: False, timeout=3)) == 50
