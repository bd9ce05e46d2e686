"""Kafka as a three-broker cluster (scripts/runtime/kafka_cluster.py) on real local processes: the project's topics
get three replicas and min.insync.replicas=2; no write the project's producer had acknowledged is lost while the
controller quorum's leader and then another broker are SIGKILLed and restarted; the bridge, given every broker,
carries every reading through the quorum leader's death; the predictor predicts every reading through the death of
its partition's leader."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from common.kafka import ASK_AGAIN_ON, consumer_config, ensure_topics
from common.settings import PLAINTEXT
from ml.training.untrained_model import save_untrained_model
from scripts.runtime.kafka_cluster import KafkaCluster
from scripts.testkit.bridge import assert_none_missing
from scripts.testkit.cluster import SequenceProducer, numbers_in, wait_fully_replicated
from scripts.testkit.kafka import collect, create_topic, unique
from scripts.testkit.mqtt import Publisher
from scripts.testkit.predictor import Stream, covered
from scripts.testkit.readings import as_mqtt_messages, decoded, readings
from scripts.testkit.services import ChildService

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


@pytest.fixture
def cluster(kafka_cluster_factory: Callable[..., KafkaCluster]) -> KafkaCluster:
    return kafka_cluster_factory(3)


def test_the_projects_topics_get_three_replicas_two_of_them_in_sync_for_a_write(cluster: KafkaCluster) -> None:
    topic = unique("cluster-topic")
    ensure_topics(cluster.bootstrap_servers, PLAINTEXT, {topic: 4})
    partitions = wait_fully_replicated(cluster.bootstrap_servers, topic, 3)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    assert sorted(partitions) == [0, 1, 2, 3]
    assert {p: sorted(m.replicas) for p, m in partitions.items()} == {p: [1, 2, 3] for p in range(4)}
    # The leaders spread over the brokers, so that one broker's death moves some partitions, not all.
    assert len({m.leader for m in partitions.values()}) > 1
    assert described(admin, ConfigResource(ResourceType.TOPIC, topic))["min.insync.replicas"] == "2"
    # The internal topics (consumer offsets, transactions) follow the same rule, from each broker's properties.
    for node in cluster.nodes:
        settings = described(admin, ConfigResource(ResourceType.BROKER, str(node.node_id)))
        assert settings["offsets.topic.replication.factor"] == "3", node.name
        assert settings["transaction.state.log.replication.factor"] == "3", node.name
        assert settings["transaction.state.log.min.isr"] == "2", node.name


def described(admin: AdminClient, resource: ConfigResource, timeout: float = 30.0) -> dict[str, str]:
    """The settings of `resource`, once the broker asked knows it (a new topic reaches each broker's metadata in
    its own time) and the request found a connection."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(30).items()}
        except KafkaException as exc:
            again = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART or exc.args[0].name() in ASK_AGAIN_ON
            if not again or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_nothing_acknowledged_is_lost_when_the_controller_leader_and_then_another_broker_are_killed(
    cluster: KafkaCluster,
) -> None:
    topic = unique("cluster-kill")
    ensure_topics(cluster.bootstrap_servers, PLAINTEXT, {topic: 4})
    producer = SequenceProducer(cluster.bootstrap_servers, topic, rate=500).start()
    killed, stalls = [], {}
    try:
        producer.wait_acked(1000)
        leader = cluster.quorum_leader()
        others = [node.node_id for node in cluster.nodes if node.node_id != leader]
        for victim in (leader, others[0]):
            wait_fully_replicated(cluster.bootstrap_servers, topic, 3)  # the next death costs one copy, no more
            node = cluster.node(victim)
            moment = time.monotonic()
            assert node.kill(), f"{node.name} was not running"
            killed.append(node.name)
            producer.wait_acked(1500)  # writes go on while it is dead
            if victim == leader:
                assert cluster.quorum_leader() != leader, "the quorum elected no new leader"
            node.start()
            node.wait_ready(120)
            producer.wait_acked(500)
            stalls[node.name] = round(producer.stall_after(moment), 2)
    finally:
        producer.finish()
    in_topic = numbers_in(cluster.bootstrap_servers, topic)
    lost = sorted(set(producer.acked) - set(in_topic))
    duplicates = sum(count - 1 for count in in_topic.values())
    log.info("killed %s; %s; stall per kill (s): %s; duplicates: %d", killed, producer, stalls, duplicates)
    print(
        f"\nkilled {killed} (the first the quorum leader); {producer}; lost {len(lost)}; duplicates {duplicates}; "
        f"longest wait between acknowledgements after each kill (s): {stalls}"
    )
    assert killed == [cluster.node(leader).name, cluster.node(others[0]).name]
    assert not lost, f"{len(lost)} acknowledged numbers are not in {topic}: {lost[:20]}"
    assert not producer.failed, f"deliveries failed: {list(producer.failed.items())[:5]}"
    assert set(in_topic) == set(range(producer.sent)), "the topic holds numbers that were never sent"


def test_the_bridge_given_every_broker_carries_every_reading_through_the_quorum_leaders_death(
    cluster: KafkaCluster, mosquitto_node_factory, bridge_factory, bridge_topics: tuple[str, str]
) -> None:
    broker = mosquitto_node_factory()
    bridge = bridge_factory(cluster.bootstrap_servers, broker.port, bridge_topics)  # a list of three hosts
    sent = readings(cars=10, per_car=400)
    publisher = Publisher(broker.port, as_mqtt_messages(sent), rate=200)
    bridge.wait_for_metrics(lambda m: m.get("bridge_produced_total", 0) >= 500, "readings in Kafka")
    leader = cluster.node(cluster.quorum_leader())
    assert leader.kill()
    produced = bridge.metrics()["bridge_produced_total"]
    bridge.wait_for_metrics(lambda m: m["bridge_produced_total"] >= produced + 500, "readings while a broker is dead")
    leader.start()
    leader.wait_ready(120)
    publisher.wait()
    messages = collect(cluster.bootstrap_servers, bridge_topics[0], want=len(sent))
    duplicates = assert_none_missing(sent, decoded(messages))
    print(
        f"\n{len(sent)} readings through {leader.name}'s death (the quorum leader): none lost, "
        f"{sum(duplicates.values())} duplicates"
    )


@pytest.fixture
def cluster_consumers(cluster: KafkaCluster) -> Iterator[Callable[..., Consumer]]:
    """Consumers of the cluster in a fresh group each, subscribed to `topics`, closed after the test."""
    consumers: list[Consumer] = []

    def make(*topics: str) -> Consumer:
        consumer = Consumer(consumer_config(cluster.bootstrap_servers, PLAINTEXT, unique("test-consumer")))
        consumer.subscribe(list(topics))
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        consumer.close()


def test_the_predictor_predicts_every_reading_through_its_partition_leaders_death(
    cluster: KafkaCluster,
    cluster_consumers: Callable[..., Consumer],
    predictors: Callable[..., ChildService],
    tmp_path: Path,
) -> None:
    bootstrap = cluster.bootstrap_servers
    stream = Stream(
        bootstrap, lambda prefix, n: create_topic(bootstrap, unique(prefix), n), cluster_consumers,
        unique("predictors"), partitions=1,
    )  # fmt: skip
    save_untrained_model(tmp_path / "models", window=6, horizon=30, threshold=0.5)
    predictor = predictors(stream, tmp_path / "models")
    sent = readings(cars=10, per_car=120)
    before, after = sent[: len(sent) // 2], sent[len(sent) // 2 :]
    stream.write(before)
    stream.collect(covered(before))
    leader = cluster.node(wait_fully_replicated(bootstrap, stream.input, 3)[0].leader)
    assert leader.kill()
    stream.write(after)  # acks=all: acknowledged once the dead leader is fenced and another one took over
    stream.collect(covered(sent), timeout=120)
    leader.start()
    leader.wait_ready(120)
    predicted = {(p["car_id"], p["seq"]) for p in stream.predictions}
    missing = [(r["car_id"], r["seq"]) for r in sent if (r["car_id"], r["seq"]) not in predicted]
    assert not missing, f"{len(missing)} readings have no prediction: {missing[:10]}"
    predictor.assert_running()
