"""`python -m ml predict` over readings written in transactions, against the real Kafka: every committed reading is
predicted, no aborted one, and the group's commits reach the end of each partition, transaction markers included.

A commit or abort marker occupies an offset that no consumer ever receives as a message. The confluent reader
used to wait for a record at the end of a range that a marker held ("stalled at offset 5"), and the predictor
retried that read forever.
"""

from __future__ import annotations

import collections
import time

import pytest
from confluent_kafka import Producer

from scripts.testkit.predictor import WAIT_S, Stream, covered
from simulator.fleet import generate_readings


def write_in_transactions(stream: Stream, committed: list[dict], aborted: list[dict], size: int = 10) -> None:
    """Transactions of `size` readings, committed; after every second one, one of 2 aborted readings."""
    producer = Producer({"bootstrap.servers": stream.bootstrap, "transactional.id": f"txn-{stream.input}"})
    producer.init_transactions(30)

    def transaction(readings: list[dict], commit: bool) -> None:
        producer.begin_transaction()
        for reading in readings:
            producer.produce(stream.input, stream.codec.encode(reading), reading["car_id"].encode())
        producer.flush(30)  # aborted records reach the log too, then their abort marker
        producer.commit_transaction(30) if commit else producer.abort_transaction(30)

    for k, i in enumerate(range(0, len(committed), size)):
        transaction(committed[i : i + size], commit=True)
        if k % 2 and aborted[2 * k : 2 * k + 2]:
            transaction(aborted[2 * k : 2 * k + 2], commit=False)


@pytest.mark.containers
@pytest.mark.parametrize("reader", ["confluent", "tfio"])
def test_the_predictor_reads_a_transactional_topic_to_its_end(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, model_dir, predictors, reader
):
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    readings = list(generate_readings(cars=6, readings_per_car=20, seed=17))
    aborted = [{**r, "car_id": f"aborted-{r['car_id']}"} for r in generate_readings(cars=2, readings_per_car=6)]
    write_in_transactions(stream, readings, aborted)
    ends = stream.high_watermarks(2)
    assert sum(ends) > len(readings), "markers hold offsets of their own"
    predictor = predictors(stream, model_dir, ML_READER=reader, ML_MAX_BATCH="25")

    predictions = stream.collect(covered(readings))
    counts = collections.Counter((p["car_id"], p["seq"]) for p in predictions)
    assert set(counts) == {(r["car_id"], r["seq"]) for r in readings}, f"missing:\n{predictor.log()[-3000:]}"
    assert not [p for p in predictions if p["car_id"].startswith("aborted-")]
    deadline = time.monotonic() + WAIT_S
    while stream.committed(2) != ends:  # the last range ends in a marker: it is committed past too
        assert time.monotonic() < deadline, f"committed {stream.committed(2)}, ends {ends}"
        time.sleep(0.2)
    duplicates = sum(n - 1 for n in counts.values())
    print(f"{reader}: {len(readings)} readings, {sum(ends)} offsets, {duplicates} duplicate predictions")
    if reader == "confluent":
        assert duplicates == 0
    else:  # tensorflow-io's kernel reads one record past a range whose last offset is a marker (ml/serving/README)
        assert duplicates <= sum(ends) // 25 + 2
    assert "stalled" not in predictor.log()
    predictor.stop_ok()
