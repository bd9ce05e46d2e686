"""The compose stack with three Kafka brokers (compose/docker-compose.cluster.yml on compose/docker-compose.yml,
and docker-compose.cluster.secure.yml on both and the secured override): rendered by the compose CLI, which merges
the files without a Docker engine, and checked for a quorum of three, three replicas with min.insync.replicas 2,
every service bootstrapping from the three, and the secured brokers alike."""

from __future__ import annotations

import pytest

from scripts.runtime import compose
from scripts.runtime.secured import ENV_IDENTITIES, SERVER_HOSTS
from scripts.testkit.compose_files import mounts, published_ports, settings

BROKERS = ("kafka", *compose.CLUSTER_BROKERS)
REPLICATION = {
    "KAFKA_DEFAULT_REPLICATION_FACTOR": "3",
    "KAFKA_MIN_INSYNC_REPLICAS": "2",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2",
}
# What may differ between the brokers' settings: who each is.
OWN_SETTINGS = {"KAFKA_NODE_ID", "KAFKA_ADVERTISED_LISTENERS"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, compose_render) -> dict[str, dict]:
    return compose_render(tmp_path_factory.mktemp("stack"), compose.COMPOSE_FILE, compose.CLUSTER_FILE)


@pytest.fixture(scope="module")
def secured_cluster(tmp_path_factory, compose_render) -> dict[str, dict]:
    """The four files in the order compose.command() layers them, the material's env files present (empty: the
    CLI reads them, nothing here needs their values)."""
    secure_dir = tmp_path_factory.mktemp("secure")
    (secure_dir / "env").mkdir()
    for identity in ENV_IDENTITIES:
        (secure_dir / "env" / f"{identity}.env").write_text("")
    layers = (compose.COMPOSE_FILE, compose.CLUSTER_FILE, compose.SECURE_FILE, compose.CLUSTER_SECURE_FILE)
    return compose_render(tmp_path_factory.mktemp("stack"), *layers, SECURE_DIR=str(secure_dir))


def listeners(text: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in text.split(","))


def test_three_brokers_form_one_quorum_of_controllers(cluster):
    node_ids = {}
    for name in BROKERS:
        env = settings(cluster[name])
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        node_ids[env["KAFKA_NODE_ID"]] = cluster[name]["hostname"]
    voters = settings(cluster["kafka"])["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert {voter.split("@")[0]: voter.split("@")[1] for voter in voters.split(",")} == {
        node: f"{host}:9093" for node, host in node_ids.items()
    }
    assert len(node_ids) == len(BROKERS) == 3 and sorted(node_ids.values()) == sorted(BROKERS)
    # The same cluster and settings on each, but for who each broker is.
    first = {key: value for key, value in settings(cluster["kafka"]).items() if key not in OWN_SETTINGS}
    for name in compose.CLUSTER_BROKERS:
        assert {key: value for key, value in settings(cluster[name]).items() if key not in OWN_SETTINGS} == first
        assert cluster[name]["image"] == cluster["kafka"]["image"]
        assert (
            cluster[name]["healthcheck"]["test"][1].replace(name, "kafka") == cluster["kafka"]["healthcheck"]["test"][1]
        )


def test_each_broker_keeps_its_own_log_and_host_port(cluster):
    volumes = [tuple(str(mount["source"]) for mount in mounts(cluster[name])) for name in BROKERS]
    assert len(set(volumes)) == len(BROKERS), "a log each"
    host_listeners = {}
    for name in BROKERS:
        advertised = listeners(settings(cluster[name])["KAFKA_ADVERTISED_LISTENERS"])
        assert advertised["PLAINTEXT"] == f"{cluster[name]['hostname']}:19092", name
        [(address, published, target)] = published_ports(cluster[name])
        assert address == "127.0.0.1" and target == 9092, name
        assert advertised["PLAINTEXT_HOST"] == f"localhost:{published}", name
        host_listeners[name] = published
    assert len(set(host_listeners.values())) == len(BROKERS)


def test_every_topic_has_three_replicas_two_of_them_in_sync(cluster):
    for name in BROKERS:
        env = settings(cluster[name])
        assert {key: env[key] for key in REPLICATION} == REPLICATION, name
    # topics takes the brokers' defaults, once all three answer.
    topics = cluster["topics"]
    assert "--replication-factor" not in topics["command"][0]
    for name in BROKERS:
        assert topics["depends_on"][name]["condition"] == "service_healthy", name


def test_every_service_bootstraps_from_the_three_brokers(cluster):
    internal = [listeners(settings(cluster[name])["KAFKA_ADVERTISED_LISTENERS"])["PLAINTEXT"] for name in BROKERS]
    assert compose.CLUSTER_BOOTSTRAP.split(",") == internal
    with_kafka = {name: settings(service) for name, service in cluster.items() if name not in BROKERS}
    users = {name for name, env in with_kafka.items() if "KAFKA_BOOTSTRAP_SERVERS" in env}
    clients = ("topics", "bridge", "training-data", "trainer", "predictor", "predictor-java", "continual", "dashboard")
    assert set(clients) <= users
    for name in users:
        assert with_kafka[name]["KAFKA_BOOTSTRAP_SERVERS"] == compose.CLUSTER_BOOTSTRAP, name
    assert with_kafka["schema-registry"]["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"] == compose.CLUSTER_BOOTSTRAP


def test_brokers_picks_the_files_of_each_compose_command(monkeypatch):
    """BROKERS=3 layers the cluster file on every command (make exports it; --brokers sets it); the demo's
    containers bootstrap from the three."""
    monkeypatch.setattr(compose, "compose_cli", lambda: ["compose"])
    for value, layered in (("", False), ("1", False), ("3", True)):
        monkeypatch.setenv("BROKERS", value)
        assert (str(compose.CLUSTER_FILE) in compose.command("ps")) == layered, value
        expected = compose.CLUSTER_BOOTSTRAP if layered else compose.INSIDE_THE_STACK["KAFKA_BOOTSTRAP_SERVERS"]
        assert compose.inside_the_stack()["KAFKA_BOOTSTRAP_SERVERS"] == expected
    monkeypatch.setenv("BROKERS", "2")
    with pytest.raises(compose.LocalRuntimeError, match="1 or 3"):
        compose.command("ps")
    monkeypatch.setenv("BROKERS", "3")
    monkeypatch.setenv("SECURE_DIR", "/nonexistent/material")  # only named: command() reads no file
    layered = [part for part in compose.command("ps", secure=True) if part.endswith((".yml", ".yaml"))]
    order = (compose.COMPOSE_FILE, compose.CLUSTER_FILE, compose.SECURE_FILE, compose.CLUSTER_SECURE_FILE)
    assert layered == [str(layer) for layer in order]


def test_the_secured_brokers_are_the_secured_kafka_but_for_who_each_is(secured_cluster):
    """SASL_SSL everywhere, the controllers' listener included (it crosses the network between brokers), the
    material's properties and SCRAM users, a log of its own; the certificate names each broker."""
    first = settings(secured_cluster["kafka"])
    assert first["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == "SASL_SSL:SASL_SSL,HOST:SASL_SSL,CONTROLLER:SASL_SSL"
    same = {key: value for key, value in first.items() if key not in OWN_SETTINGS}
    for name in BROKERS:
        env = settings(secured_cluster[name])
        assert {key: value for key, value in env.items() if key not in OWN_SETTINGS} == same, name
        advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        assert advertised["SASL_SSL"] == f"{secured_cluster[name]['hostname']}:19092", name
        assert secured_cluster[name]["hostname"] in SERVER_HOSTS, name
        assert set(secured_cluster[name]["group_add"]) == set(secured_cluster["kafka"]["group_add"]), name
        assert secured_cluster[name]["depends_on"]["secure-files"]["condition"] == "service_completed_successfully"
        check = secured_cluster[name]["healthcheck"]["test"][1]
        assert f"--bootstrap-server {secured_cluster[name]['hostname']}:19092 --command-config" in check, name
    logs = [
        [m["source"] for m in mounts(secured_cluster[name]) if m["target"] == "/var/lib/kafka/data"] for name in BROKERS
    ]
    assert len({source for [source] in logs}) == len(BROKERS), "a log each"
    for name in ("topics", "bridge", "trainer", "predictor", "continual", "dashboard", "training-data"):
        assert settings(secured_cluster[name])["KAFKA_BOOTSTRAP_SERVERS"] == compose.CLUSTER_BOOTSTRAP, name
