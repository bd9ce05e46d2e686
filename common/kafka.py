"""Kafka helpers: client configuration and topic creation, with confluent-kafka.

Every helper takes the identity (common/settings.py's KafkaSecurity) from its caller, who has it from the settings
its entry point built: nothing here reads the environment."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common.errors import KafkaError
from common.settings import KafkaSecurity

log = logging.getLogger(__name__)


def client_config(bootstrap_servers: str, security: KafkaSecurity, **overrides: Any) -> dict[str, Any]:
    """The base of every client: the servers and the identity the caller's settings hold (no environment read)."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, **security.client_config()}
    config.update(overrides)
    return config


def producer_config(bootstrap_servers: str, security: KafkaSecurity, **overrides: Any) -> dict[str, Any]:
    """A producer that neither loses nor duplicates on retry: idempotent, acks from all in-sync replicas."""
    config = {
        **client_config(bootstrap_servers, security),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    config.update(overrides)
    return config


def consumer_config(bootstrap_servers: str, security: KafkaSecurity, group_id: str, **overrides: Any) -> dict[str, Any]:
    config = {
        **client_config(bootstrap_servers, security),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    config.update(overrides)
    return config


def replication_for(brokers: int) -> tuple[int, int]:
    """The rule of every topic on `brokers` brokers: (replication factor, min.insync.replicas). Three copies where
    there are three brokers, and a write acknowledged to an acks=all producer only once two of them hold it, so
    that one broker lost loses nothing and writes go on without it; a single broker holds the one copy. The local
    runtime's brokers take it as their defaults (internal topics included), and ensure_topics leaves the
    replication to them."""
    replication = min(brokers, 3)
    return replication, max(1, replication - 1)


# A request in flight when librdkafka drops a connection (it replaces its bootstrap connections by the brokers it has
# learned, or a broker of a cluster went away), sent to a partition's leader that moved before the client's metadata
# caught up, or to a new leader whose high watermark has not caught up yet, fails with one of these (or times out,
# asked of a leader that died); the same request asked again, once the client's metadata names the new leader,
# answers.
ASK_AGAIN_ON = (
    "_DESTROY_BROKER",
    "_TRANSPORT",
    "NOT_CONTROLLER",
    "NOT_LEADER_FOR_PARTITION",
    "NOT_LEADER_OR_FOLLOWER",
    "LEADER_NOT_AVAILABLE",
    "OFFSET_NOT_AVAILABLE",
    "_TIMED_OUT",
)
ASK_AGAIN_EVERY_S = 0.1
# While a leader may be moving, one ask waits this long at most: a request to a dead broker waits in its queue for
# the whole timeout.
MOVING_ASK_S = 2.0


def watermarks(
    consumer: Consumer,
    partition: TopicPartition,
    deadline: float,
    timeout: float = 30.0,
    asked_again: Callable[[str], None] = lambda error: None,
) -> tuple[int, int]:
    """(low, high) watermark of `partition`, asked again while ASK_AGAIN_ON errors come, until `deadline`
    (time.monotonic()): a broker of a cluster that died costs the caller no outage. Before the deadline each ask
    waits MOVING_ASK_S at most, the last one `timeout`. `asked_again` hears each error that was asked past.

    librdkafka sends the query to the leader its metadata names, and a consumer whose partitions are paused (the
    predictor's) fetches nothing, so nothing tells it the leader moved until its periodic refresh (5 min): a
    predictor once asked a dead leader for 2 minutes. Each error asks for the partition's metadata first."""
    while True:
        last = time.monotonic() >= deadline
        try:
            return consumer.get_watermark_offsets(partition, timeout=timeout if last else min(timeout, MOVING_ASK_S))
        except KafkaException as exc:
            if exc.args[0].name() not in ASK_AGAIN_ON or last:
                raise
            asked_again(exc.args[0].name())
            with contextlib.suppress(KafkaException):
                consumer.list_topics(partition.topic, timeout=MOVING_ASK_S)
            time.sleep(ASK_AGAIN_EVERY_S)


def new_partitions_from(
    consumer: Consumer, topics: Iterable[str], assigned: set[tuple[str, int]], since_ms: int, timeout: float
) -> list[TopicPartition]:
    """Every partition of `topics` that exists and is not in `assigned`, at its first offset at or after `since_ms`
    (-1, OFFSET_END, where none is: read from now on): what an observer assigned every partition from a time
    (the dashboard, the judge) adds as topics appear and grow. KafkaException when Kafka does not answer."""
    metadata = consumer.list_topics(timeout=timeout)
    new = [
        TopicPartition(topic, partition, since_ms)
        for topic in topics
        if topic in metadata.topics and metadata.topics[topic].error is None
        for partition in metadata.topics[topic].partitions
        if (topic, partition) not in assigned
    ]
    return consumer.offsets_for_times(new, timeout=timeout) if new else []


def ensure_topics(
    bootstrap_servers: str,
    security: KafkaSecurity,
    partitions: dict[str, int],
    timeout: float = 30.0,
    **overrides: Any,
) -> None:
    """Create the topics that do not exist yet, as `security`'s identity, with the brokers' default replication
    factor and min.insync.replicas (replication_for's rule on the local runtime): a cluster short of a broker at
    this moment refuses rather than creating topics with fewer copies."""
    admin = AdminClient(client_config(bootstrap_servers, security, **overrides))
    deadline = time.monotonic() + timeout
    while not _create_missing(admin, partitions, timeout, deadline):
        time.sleep(0.5)


def _create_missing(admin: AdminClient, partitions: dict[str, int], timeout: float, deadline: float) -> bool:
    """One try at creating what `partitions` names and the cluster lacks: False when it should be asked again."""
    existing = admin.list_topics(timeout=timeout).topics
    missing = {name: count for name, count in partitions.items() if name not in existing}
    if not missing:
        return True
    wanted = [NewTopic(name, count, replication_factor=-1) for name, count in missing.items()]
    done = True
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s (%d partitions)", name, partitions[name])
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() == "TOPIC_ALREADY_EXISTS":
                continue
            if error.name() in ASK_AGAIN_ON and time.monotonic() < deadline:
                log.warning("creating topic %s: %s; asking again", name, error.str())
                done = False
                continue
            raise KafkaError(f"cannot create topic {name}: {error.str()}", error.code()) from exc
    return done
