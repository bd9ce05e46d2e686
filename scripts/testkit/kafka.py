"""Kafka for tests and the benchmark: unique names, topics made and deleted, a topic read to its end by positions,
and a topic read until a condition holds.

A partition's high watermark (read_committed: its last stable offset) counts transaction markers, and a marker is
never delivered as a message: a reader that waits for the message at end - 1, or counts messages up to the end
offset, waits forever when the topic ends in a commit or abort marker. `read_to_end` therefore stops on the
consumer's position, which librdkafka moves past markers and aborted records (also in a partition that holds
nothing else), never on the offsets of the messages it got.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from common.kafka import ASK_AGAIN_ON, consumer_config, watermarks
from common.settings import PLAINTEXT, KafkaSecurity


def unique(prefix: str) -> str:
    """`prefix` and 10 random hex digits: a topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# Asked again while the deadline allows: Kafka's own transient errors, and a cluster whose brokers have not all
# registered with the controller yet (it refuses the default replication of 3 until they have).
CREATE_AGAIN_ON = (*ASK_AGAIN_ON, "INVALID_REPLICATION_FACTOR")


def create_topic(bootstrap: str, name: str, partitions: int = 1, timeout: float = 60.0, **config: str) -> str:
    """Create `name` (the brokers' replication, as ensure_topics; topic `config` such as max.message.bytes),
    asking again on transient refusals until `timeout`; returns the name."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        topic = NewTopic(name, partitions, replication_factor=-1, config=config)
        try:
            admin.create_topics([topic], operation_timeout=10)[name].result(timeout=30)
            return name
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() == "TOPIC_ALREADY_EXISTS":  # an earlier ask's, which timed out on our side
                return name
            if error.name() not in CREATE_AGAIN_ON or time.monotonic() > deadline:
                raise
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    if names:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics(names).values():
            future.result(timeout=30)


def alter_topic_config(bootstrap: str, topic: str, **config: str | None) -> None:
    """Set the named topic settings (None: back to the broker's default), leaving the others as they are; the
    broker applies them asynchronously."""
    entries = [
        ConfigEntry(
            name,
            value,
            incremental_operation=AlterConfigOpType.DELETE if value is None else AlterConfigOpType.SET,
        )
        for name, value in config.items()
    ]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def read_to_end(
    bootstrap: str,
    topic: str,
    start: Mapping[int, int] | None = None,
    timeout: float = 60.0,
    security: KafkaSecurity = PLAINTEXT,
    **client: object,
) -> list[Message]:
    """Every record of `topic` from each partition's low watermark (or `start[partition]`) up to its high watermark
    as of the call, committed records only; in partition order, each partition's in offset order.

    A partition is done when the consumer's position reaches its end, whatever holds the last offsets (markers of
    committed or aborted transactions, aborted records). No group is joined and nothing is committed. `security`:
    the identity on a secured cluster; `client`: more librdkafka properties. After `timeout` seconds a TimeoutError
    names each partition that did not reach its end, with its position, and the consumer's last error."""
    consumer = Consumer(consumer_config(bootstrap, security, unique("read-to-end"), **client))
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        ends, begins = {}, {}
        deadline = time.monotonic() + timeout
        for partition in sorted(metadata.partitions):
            low, high = watermarks(consumer, TopicPartition(topic, partition), deadline)
            begins[partition] = max(low, (start or {}).get(partition, low))
            ends[partition] = high
        positions = {p: begins[p] for p in ends}
        left = {p for p in ends if positions[p] < ends[p]}
        if left:
            consumer.assign([TopicPartition(topic, p, positions[p]) for p in sorted(left)])
        by_partition: dict[int, list[Message]] = {p: [] for p in ends}
        last_error = None
        while left:
            if time.monotonic() > deadline:
                behind = ", ".join(f"{p} at {positions[p]} of {ends[p]}" for p in sorted(left))
                why = f"; the consumer's last error: {last_error}" if last_error else ""
                raise TimeoutError(f"{topic}: partitions not read to their end within {timeout:.0f} s: {behind}{why}")
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is not None:  # a broker away for a moment; one that refuses us never ends
                    last_error = message.error()
                    continue
                by_partition[message.partition()].append(message)
            for tp in consumer.position([TopicPartition(topic, p) for p in sorted(left)]):
                positions[tp.partition] = max(positions[tp.partition], tp.offset)
            left = {p for p in left if positions[p] < ends[p]}
        return [message for p in sorted(by_partition) for message in by_partition[p] if message.offset() < ends[p]]
    finally:
        consumer.close()


def read_until(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Message]], bool],
    timeout: float = 90.0,
    linger: float = 0.0,
    security: KafkaSecurity = PLAINTEXT,
    **client: object,
) -> list[Message]:
    """Records of `topic` from its start, read as they come (the topic may be written still, or not exist yet),
    until `until(messages)` holds, then `linger` seconds more (for late duplicates); what came by `timeout` when
    it never holds: the caller asserts on it."""
    consumer = Consumer(consumer_config(bootstrap, security, unique("read-until"), **client))
    consumer.subscribe([topic])
    messages: list[Message] = []
    stop_at, deadline = None, time.monotonic() + timeout
    try:
        while time.monotonic() < (stop_at or deadline):
            batch = [m for m in consumer.consume(num_messages=10_000, timeout=0.5) if m.error() is None]
            messages.extend(batch)
            if stop_at is None and batch and until(messages):
                stop_at = time.monotonic() + linger
    finally:
        consumer.close()
    return messages


def collect(bootstrap: str, topic: str, want: int, timeout: float = 90.0, linger: float = 3.0) -> list[Message]:
    """`read_until` `want` distinct (key, value) pairs came, then `linger` s for late duplicates."""

    def enough(messages: list[Message]) -> bool:
        return len({(m.key(), m.value()) for m in messages}) >= want

    return read_until(bootstrap, topic, enough, timeout=timeout, linger=linger)


def end_offsets(bootstrap: str, topic: str, security: KafkaSecurity = PLAINTEXT, **client: object) -> dict[int, int]:
    """Each partition's high watermark now (read_committed: its last stable offset)."""
    consumer = Consumer(consumer_config(bootstrap, security, unique("end-offsets"), **client))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        deadline = time.monotonic() + 60
        return {p: watermarks(consumer, TopicPartition(topic, p), deadline)[1] for p in sorted(partitions)}
    finally:
        consumer.close()
