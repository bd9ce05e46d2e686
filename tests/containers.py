"""Kafka (KRaft) and Mosquitto as containers for the test session, through testcontainers' generic container.

testcontainers' own KafkaContainer drives Confluent's cp-kafka image (its start script runs
/etc/confluent/docker/*), so it cannot start apache/kafka; the broker is configured here the way the compose file
configures it (KAFKA_* variables, which apache/kafka and the image `make images` builds both read). Each
container publishes its port on 127.0.0.1 only, on a free host port chosen first, so that Kafka can advertise it.

Images are settings: TEST_KAFKA_IMAGE and TEST_MOSQUITTO_IMAGE; otherwise KAFKA_IMAGE and MOSQUITTO_IMAGE of
compose/images.env (written by `make images`) when it exists; otherwise the official images. Ryuk, the reaper
testcontainers starts beside the containers, is an image of its own that cannot always be pulled, so it is off
unless TESTCONTAINERS_RYUK_DISABLED says otherwise: each container is removed when its fixture ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from common.errors import LocalRuntimeError
from common.settings import PLAINTEXT
from scripts.runtime.compose import images_env
from scripts.runtime.local import ROOT, free_port, kafka_answers, mqtt_round_trip

MOSQUITTO_CONF = ROOT / "compose" / "mosquitto" / "mosquitto.conf"
OFFICIAL = {"KAFKA_IMAGE": "apache/kafka:3.9.2", "MOSQUITTO_IMAGE": "eclipse-mosquitto:2.0.20"}
CLUSTER_ID = "GB8ObQplXzGKMfrzgrFVMg"  # a base64 UUID, as `kafka-storage.sh random-uuid` prints


def image(name: str) -> str:
    """TEST_<name>, else <name> from the environment or compose/images.env, else the official image."""
    return os.environ.get(f"TEST_{name}") or images_env(name) or OFFICIAL[name]


def kafka_environment(host_port: int) -> dict[str, str]:
    """A single KRaft node: clients on 9092 (advertised as the host's 127.0.0.1:host_port), the controller on 9093,
    and the broker's own connections to itself on 19092 (advertised inside the container: since Kafka 3.6 it
    calls itself to verify transactions, and the host's mapped port is not reachable from inside)."""
    return {
        "CLUSTER_ID": CLUSTER_ID,
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,BROKER://:19092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{host_port},BROKER://localhost:19092",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_NUM_PARTITIONS": "4",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "true",
        "KAFKA_HEAP_OPTS": "-Xmx768m -Xms768m",
    }


def _wait(what: str, answers, container, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers():
            return
        container.get_wrapped_container().reload()
        if container.get_wrapped_container().status == "exited":
            break
        time.sleep(0.5)
    logs = b"".join(container.get_logs()).decode(errors="replace")[-3000:]
    raise LocalRuntimeError(f"the {what} container did not answer within {timeout:.0f} s:\n{logs}")


@contextmanager
def kafka_and_mosquitto() -> Iterator[tuple[str, str, int]]:
    """(Kafka bootstrap servers, MQTT host, MQTT port) of two fresh containers, removed on exit."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer

    kafka_port, mqtt_port = free_port(), free_port()
    kafka = DockerContainer(image("KAFKA_IMAGE"))
    for key, value in kafka_environment(kafka_port).items():
        kafka = kafka.with_env(key, value)
    mosquitto = DockerContainer(image("MOSQUITTO_IMAGE")).with_volume_mapping(
        str(MOSQUITTO_CONF), "/mosquitto/config/mosquitto.conf", "ro"
    )
    # Published on loopback only: with_bind_ports takes no host address, docker's own (ip, port) form does.
    kafka.ports["9092/tcp"] = ("127.0.0.1", kafka_port)
    mosquitto.ports["1883/tcp"] = ("127.0.0.1", mqtt_port)
    with ExitStack() as stack:
        stack.enter_context(kafka)
        stack.enter_context(mosquitto)
        bootstrap = f"127.0.0.1:{kafka_port}"
        _wait("Kafka", lambda: kafka_answers(bootstrap, PLAINTEXT), kafka)
        _wait("Mosquitto", lambda: mqtt_round_trip("127.0.0.1", mqtt_port), mosquitto)
        yield bootstrap, "127.0.0.1", mqtt_port
