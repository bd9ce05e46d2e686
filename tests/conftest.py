"""Session-wide servers and per-test names.

Kafka and MQTT endpoints are resolved once per session, in this order:
1. environment variables naming running servers: TEST_KAFKA_BOOTSTRAP_SERVERS, TEST_MQTT_HOST, TEST_MQTT_PORT;
2. TEST_SERVERS=containers (`make test-containers`): containers through testcontainers (tests/containers.py:
   Kafka in KRaft mode and Mosquitto, the images `make images` built or the official ones) on the Docker engine
   that DOCKER_HOST names;
3. otherwise (TEST_SERVERS unset or `local`), the project's one default runtime: local processes
   (scripts/runtime/local.py) on free ports in a temporary folder, stopped at the end.

Tests under tests/integration/ are marked `integration`; tests under tests/unit/ need no server. Tests marked
`containers` are the subset `make test-containers` runs on containers: what differs there from local processes.
Fault tests (a broker stopped or killed mid-stream) start private servers with `kafka_node_factory`,
`kafka_cluster_factory` (three brokers) and `mosquitto_node_factory`, so that they never disturb the shared ones.
The local MQTT broker, shared and private, is the one MQTT_BROKER names (scripts/runtime/mqtt_broker.py: mosquitto
by default, or hivemq).

A schema registry with the Confluent REST API (`schema_registry_url`) is started only when a test asks for it,
once per session: TEST_SCHEMA_REGISTRY_URL names a running one, otherwise Apicurio Registry
(scripts/runtime/schema_registry.py) runs as a local process on a free port, keeping its schemas in the session's Kafka.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from common.kafka import consumer_config
from common.settings import PLAINTEXT
from scripts.runtime.docker_engine import docker_answers
from scripts.runtime.kafka_cluster import KafkaCluster
from scripts.runtime.local import KafkaNode, ServerProcess, free_port
from scripts.runtime.mqtt_broker import mqtt_node
from scripts.runtime.schema_registry import SchemaRegistryNode
from scripts.runtime.secured import SecureMaterial
from scripts.testkit.kafka import create_topic, delete_topics, unique
from scripts.testkit.services import ChildService, python_env

log = logging.getLogger(__name__)
TESTS_DIR = Path(__file__).resolve().parent
TEST_SERVERS = ("local", "containers")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--compose-stack",
        action="store_true",
        help="run tests/compose/ (the whole compose stack in containers; `make test-compose`) and nothing else",
    )


def pytest_configure(config: pytest.Config) -> None:
    if servers_asked() not in TEST_SERVERS:
        raise pytest.UsageError(f"TEST_SERVERS={servers_asked()!r}: choose one of {', '.join(TEST_SERVERS)}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests/integration/ `integration`. tests/compose/ runs only with --compose-stack, and then alone: it
    starts the whole stack on Docker, which the rest of the suite does not need."""
    stack_only = config.getoption("--compose-stack")
    selected, deselected = [], []
    for item in items:
        parents = Path(item.fspath).parents
        if (TESTS_DIR / "integration") in parents:
            item.add_marker(pytest.mark.integration)
        in_stack_tests = (TESTS_DIR / "compose") in parents
        (selected if in_stack_tests == stack_only else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    mqtt_host: str
    mqtt_port: int
    source: str


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    if os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        yield Endpoints(
            os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"],
            os.environ.get("TEST_MQTT_HOST", "127.0.0.1"),
            int(os.environ.get("TEST_MQTT_PORT", "1883")),
            "environment",
        )
    elif servers_asked() == "containers":
        if not docker_answers():
            pytest.exit(
                "TEST_SERVERS=containers but no Docker engine answers: start one (or set DOCKER_HOST to it), or unset "
                "TEST_SERVERS to test on local processes",
                returncode=2,
            )
        yield from _container_endpoints()
    else:
        yield from _local_endpoints(tmp_path_factory.mktemp("runtime"))


def servers_asked() -> str:
    """TEST_SERVERS: `local` (the default) or `containers`."""
    return os.environ.get("TEST_SERVERS") or "local"


def _container_endpoints() -> Iterator[Endpoints]:
    from tests.containers import kafka_and_mosquitto

    with kafka_and_mosquitto() as (bootstrap, mqtt_host, mqtt_port):
        yield Endpoints(bootstrap, mqtt_host, mqtt_port, "testcontainers")


def _local_endpoints(run_dir: Path) -> Iterator[Endpoints]:
    kafka = KafkaNode(run_dir, port=free_port(), controller_port=free_port(), heap="768m")
    mosquitto = mqtt_node(run_dir, free_port())
    try:
        for node in (kafka, mosquitto):
            node.start()
            node.wait_ready()
        yield Endpoints(kafka.bootstrap_servers, "127.0.0.1", mosquitto.port, "local runtime")
    finally:
        kafka.stop()
        mosquitto.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(endpoints: Endpoints) -> str:
    return endpoints.kafka_bootstrap


@pytest.fixture(scope="session")
def mqtt_endpoint(endpoints: Endpoints) -> tuple[str, int]:
    return endpoints.mqtt_host, endpoints.mqtt_port


@pytest.fixture(scope="session")
def schema_registry_url(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real schema registry with the Confluent REST API (SCHEMA_REGISTRY_URL for the stack's clients).

    TEST_SCHEMA_REGISTRY_URL when set; otherwise Apicurio Registry started on a free port against the session's
    Kafka (its schemas in a topic of its own, deleted afterwards) and stopped at the end of the session.
    """
    if os.environ.get("TEST_SCHEMA_REGISTRY_URL"):
        yield os.environ["TEST_SCHEMA_REGISTRY_URL"].rstrip("/")
        return
    node = SchemaRegistryNode(
        tmp_path_factory.mktemp("schema-registry"),
        port=free_port(),
        kafka_bootstrap=kafka_bootstrap,
        journal_topic=unique("_schemas-test"),
    )
    try:
        node.start()
        node.wait_ready(timeout=120)
        yield node.url
    finally:
        node.stop()
        try:
            delete_topics(kafka_bootstrap, [t for t in node.topics if t in _topic_names(kafka_bootstrap)])
        except Exception as exc:  # the broker may be gone already; the topics then go with it
            log.warning("could not delete the registry's topics %s: %s", node.topics, exc)


def _topic_names(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


@pytest.fixture
def group_id() -> str:
    return unique("test-group")


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test; they are deleted afterwards."""
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 1) -> str:
        created.append(create_topic(kafka_bootstrap, unique(prefix), partitions))
        return created[-1]

    yield make
    delete_topics(kafka_bootstrap, created)


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[Producer]:
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    yield producer
    producer.flush(30)


@pytest.fixture
def consumer_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Consumer]]:
    """Consumers in a fresh group each, closed after the test."""
    consumers: list[Consumer] = []

    def make(*topics: str, **overrides: object) -> Consumer:
        consumer = Consumer(consumer_config(kafka_bootstrap, PLAINTEXT, unique("test-consumer"), **overrides))
        if topics:
            consumer.subscribe(list(topics))
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        consumer.close()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., ChildService]]:
    """Services under test (scripts/testkit/services.py): `start(name, module, *args, metrics_port=None,
    **settings)` runs `python -m module args` with this environment and `settings`, logging to tmp_path/<name>.log;
    whatever still runs after the test is killed."""
    started: list[ChildService] = []

    def start(name: str, module: str, *args: str, metrics_port: int | None = None, **settings: str) -> ChildService:
        service = ChildService(name, module, args, python_env(**settings), tmp_path, metrics_port=metrics_port)
        started.append(service.start())
        return service

    yield start
    for service in started:
        service.kill()


def _private_nodes(make_node: Callable[[int], ServerProcess]) -> Iterator[Callable[[], ServerProcess]]:
    """Start nodes on demand (each answering before it is handed out); stop every one afterwards."""
    nodes: list[ServerProcess] = []

    def make() -> ServerProcess:
        node = make_node(len(nodes))
        node.start()
        node.wait_ready()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def kafka_node_factory(tmp_path: Path) -> Iterator[Callable[[], KafkaNode]]:
    """Private Kafka nodes on free ports, for tests that stop or kill the broker; stopped afterwards."""
    yield from _private_nodes(
        lambda i: KafkaNode(tmp_path / f"kafka-{i}", port=free_port(), controller_port=free_port(), heap="512m")
    )


@pytest.fixture
def kafka_cluster_factory(tmp_path: Path) -> Iterator[Callable[..., KafkaCluster]]:
    """`make(brokers=3, secure=None)`: a private Kafka cluster on free ports, answering, for tests that kill
    brokers (`secure`: SecureMaterial for a secured cluster, not yet answering: start_nodes sets it up); stopped
    afterwards."""
    clusters: list[KafkaCluster] = []

    def make(brokers: int = 3, secure: SecureMaterial | None = None) -> KafkaCluster:
        ports = [(free_port(), free_port()) for _ in range(brokers)]
        cluster = KafkaCluster(tmp_path / f"cluster-{len(clusters)}", brokers, heap="384m", secure=secure, ports=ports)
        clusters.append(cluster)
        if secure is None:
            cluster.start()
            cluster.wait_ready()
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def mosquitto_node_factory(tmp_path: Path) -> Iterator[Callable[[], ServerProcess]]:
    """Private MQTT brokers (the one MQTT_BROKER names) on free ports, for tests that restart the broker; stopped
    afterwards."""
    yield from _private_nodes(lambda i: mqtt_node(tmp_path / f"mosquitto-{i}", free_port()))
