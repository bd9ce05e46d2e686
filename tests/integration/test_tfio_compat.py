"""tensorflow-io 0.37.1 carries librdkafka 1.5.0 (2020). These reads decide which Kafka version the stack runs:
Kafka 4.x removed the old protocol versions it needs (KIP-896); 3.9.x keeps them."""

import gc

import tensorflow_io as tfio


def _produce(producer, topic, count, partitions):
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % partitions)
    producer.flush(30)


def test_bounded_read_of_one_partition(kafka_bootstrap, topic_factory, producer):
    topic = topic_factory("tfio-bounded", partitions=2)
    _produce(producer, topic, 100, partitions=2)
    dataset = tfio.IODataset.from_kafka(topic, partition=1, start=0, servers=kafka_bootstrap)
    values = [item.message.numpy() for item in dataset]
    keys = [item.key.numpy() for item in dataset]
    assert values == [f"v{i}".encode() for i in range(1, 100, 2)]
    assert keys == [f"k{i}".encode() for i in range(1, 100, 2)]


def test_group_dataset_reads_every_partition_with_keys(kafka_bootstrap, topic_factory, producer, group_id):
    topic = topic_factory("tfio-group", partitions=2)
    _produce(producer, topic, 100, partitions=2)
    dataset = tfio.experimental.streaming.KafkaGroupIODataset(
        topics=[topic],
        group_id=group_id,
        servers=kafka_bootstrap,
        stream_timeout=3000,
        configuration=["auto.offset.reset=earliest", "session.timeout.ms=7000", "max.poll.interval.ms=8000"],
    )
    pairs = sorted((key.numpy(), value.numpy()) for value, key in dataset)
    del dataset  # closes its librdkafka consumer now, not at interpreter exit after the broker is gone
    gc.collect()
    assert pairs == sorted((f"k{i}".encode(), f"v{i}".encode()) for i in range(100))
