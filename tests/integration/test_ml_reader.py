"""The training reader against the real Kafka: both implementations (tensorflow-io, confluent-kafka) read the
same bounded range, decode both Avro framings, skip what does not decode, and windows never mix cars."""

import numpy as np
import pytest
from confluent_kafka import Producer

from common.avro import AvroCodec
from common.schemas import READING, SENSOR_FIELDS
from common.settings import PLAINTEXT
from ml.features import gather_windows, series_from_records, window_ends
from ml.source import read_records, resolve_range
from scripts.testkit.readings import as_in_kafka, write_readings
from simulator.fleet import generate_readings

CONFLUENT_SCHEMA_ID = (7).to_bytes(4, "big")


def generated(cars: int, per_car: int, seed: int) -> list[dict]:
    """Simulated readings as a reader returns them: the fields the simulator does not write (out_of_range and
    seq_origin, since the readings schema's version 2) at their defaults."""
    return [as_in_kafka(reading) for reading in generate_readings(cars, per_car, seed=seed)]


def confluent_framed(codec: AvroCodec, reading: dict) -> bytes:
    """The Confluent wire format (magic 0, schema id) around the same Avro body, as a registry-backed bridge writes."""
    return b"\x00" + CONFLUENT_SCHEMA_ID + codec.encode(reading)[10:]


@pytest.fixture
def mixed_topic(kafka_bootstrap, topic_factory):
    """3 partitions of 80 readings; every third reading in the Confluent framing, one record that is not Avro at all."""
    topic = topic_factory("ml-reader", partitions=3)
    codec = AvroCodec(READING, topic)
    readings = generated(6, 40, seed=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, reading in enumerate(readings):
        value = confluent_framed(codec, reading) if i % 3 == 0 else codec.encode(reading)
        partition = int(reading["car_id"][-1]) % 3  # two cars per partition, as the key would spread them
        producer.produce(topic, key=reading["car_id"].encode(), value=value, partition=partition)
        if i == 100:
            producer.produce(topic, key=b"car-00001", value=b"not avro at all", partition=0)
    producer.flush(30)
    return topic, readings


@pytest.mark.parametrize("reader", ["tfio", "confluent"])
def test_reader_returns_every_record_of_the_range_decoded(kafka_bootstrap, mixed_topic, reader):
    topic, readings = mixed_topic
    topic_range = resolve_range(kafka_bootstrap, PLAINTEXT, topic)
    assert topic_range.count == len(readings) + 1
    result = read_records(kafka_bootstrap, PLAINTEXT, topic_range, reader)
    assert result.rejected == 1
    assert sorted((r["car_id"], r["seq"]) for r in (x.value for x in result.records)) == sorted(
        (r["car_id"], r["seq"]) for r in readings
    )
    assert {x.value["car_id"] for x in result.records} == {x.key.decode() for x in result.records}
    by_key = {(r["car_id"], r["seq"]): r for r in readings}
    assert all(by_key[(x.value["car_id"], x.value["seq"])] == x.value for x in result.records)
    positions = sorted((x.partition, x.offset) for x in result.records)
    assert len(set(positions)) == len(positions)


def test_both_readers_agree_on_positions_and_a_start_offset(kafka_bootstrap, mixed_topic):
    topic, _ = mixed_topic
    kafka = (kafka_bootstrap, PLAINTEXT)
    topic_range = resolve_range(*kafka, topic, start_offset=20)
    assert all(p.start == 20 for p in topic_range.partitions)
    tfio, confluent = (
        {(x.partition, x.offset): x.value for x in read_records(*kafka, topic_range, reader).records}
        for reader in ("tfio", "confluent")
    )
    assert tfio == confluent
    assert min(offset for _, offset in tfio) == 20
    assert len(tfio) == topic_range.count - 1  # the record that is not Avro is skipped


def test_a_start_time_starts_at_the_first_record_at_or_after_it(kafka_bootstrap, topic_factory):
    topic = topic_factory("ml-reader-time", partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    codec = AvroCodec(READING, topic)
    readings = generated(2, 10, seed=1)
    for i, reading in enumerate(readings):
        producer.produce(topic, key=reading["car_id"].encode(), value=codec.encode(reading), timestamp=1000 * (i + 1))
    producer.flush(30)
    topic_range = resolve_range(kafka_bootstrap, PLAINTEXT, topic, start_time_ms=5500)
    assert topic_range.start_offsets() == {"0": 5}
    result = read_records(kafka_bootstrap, PLAINTEXT, topic_range, "tfio")
    assert [x.value for x in result.records] == readings[5:]


def test_windows_from_kafka_never_mix_cars(kafka_bootstrap, topic_factory):
    """Cars interleaved in one partition, as the bridge writes them; each window is one car's consecutive seq."""
    topic = topic_factory("ml-reader-cars", partitions=1)
    readings = list(generate_readings(4, 30, seed=5))
    assert [r["car_id"] for r in readings[:4]] == ["car-00001", "car-00002", "car-00003", "car-00004"]
    write_readings(kafka_bootstrap, PLAINTEXT, topic, readings, partitions=1)
    records = read_records(kafka_bootstrap, PLAINTEXT, resolve_range(kafka_bootstrap, PLAINTEXT, topic), "tfio").records
    assert len({x.partition for x in records}) == 1
    series = series_from_records([x.value for x in records])
    ends = window_ends(series, 8)
    assert len(ends) == 4 * (30 - 8 + 1)
    cars = series.car_ids[ends[:, None] + np.arange(-7, 1)]
    seqs = series.seq[ends[:, None] + np.arange(-7, 1)]
    assert (cars == cars[:, :1]).all()
    assert (np.diff(seqs, axis=1) == 1).all()
    # The features in each window are that car's readings in order, not a neighbour's.
    by_key = {(r["car_id"], r["seq"]): r for r in readings}
    windows = gather_windows(series.features, ends, 8)
    first = [by_key[(cars[0, i], seqs[0, i])]["speed"] for i in range(8)]
    np.testing.assert_allclose(windows[0, :, SENSOR_FIELDS.index("speed")], first)


@pytest.mark.parametrize("reader", ["tfio", "confluent"])
def test_one_record_ranges_are_read(kafka_bootstrap, topic_factory, reader):
    """tensorflow-io's kernel returns nothing for a one-record read; the reader must still return the record."""
    topic = topic_factory("ml-reader-one", partitions=2)
    readings = generated(1, 5, seed=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    codec = AvroCodec(READING, topic)
    producer.produce(topic, value=codec.encode(readings[0]), partition=0)
    for reading in readings:
        producer.produce(topic, value=codec.encode(reading), partition=1)
    producer.flush(30)
    kafka = (kafka_bootstrap, PLAINTEXT)
    whole = read_records(*kafka, resolve_range(*kafka, topic), reader).records
    assert sorted((x.partition, x.offset, x.value["seq"]) for x in whole) == [(0, 0, 0)] + [(1, i, i) for i in range(5)]
    last = read_records(*kafka, resolve_range(*kafka, topic, start_offset=4), reader).records
    assert [(x.partition, x.offset, x.value) for x in last] == [(1, 4, readings[4])]
