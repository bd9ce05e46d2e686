"""The local runtime's Kafka layouts, without servers: one node keeps the files, ports and replication it always
had; a cluster's nodes follow the first node's ports, form one quorum and replicate by replication_for."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.defaults import KAFKA_PORT
from common.kafka import replication_for
from scripts.runtime import local
from scripts.runtime.kafka_cluster import PORT_STEP, KafkaCluster
from scripts.runtime.kafka_node import KAFKA_CONTROLLER_PORT, KafkaNode


def settings(node: KafkaNode) -> dict[str, str]:
    return dict(line.split("=", 1) for line in node.properties().splitlines() if "=" in line)


@pytest.mark.parametrize(("brokers", "rule"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))])
def test_three_copies_two_in_sync_where_there_are_three_brokers_and_one_copy_on_one(brokers: int, rule) -> None:
    assert replication_for(brokers) == rule


def test_one_node_keeps_its_name_files_ports_and_single_copies(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path)
    assert (node.name, node.port, node.controller_port) == ("kafka", KAFKA_PORT, KAFKA_CONTROLLER_PORT)
    assert (node.config_file, node.data_dir, node.logs_dir) == (
        tmp_path / "server.properties",
        tmp_path / "kafka-data",
        tmp_path / "logs",
    )
    got = settings(node)
    assert got["node.id"] == "1"
    assert got["controller.quorum.bootstrap.servers"] == f"127.0.0.1:{KAFKA_CONTROLLER_PORT}"
    assert "controller.quorum.voters" not in got
    assert [got[key] for key in ("default.replication.factor", "min.insync.replicas")] == ["1", "1"]
    assert [got[key] for key in ("offsets.topic.replication.factor", "transaction.state.log.min.isr")] == ["1", "1"]


def test_a_clusters_nodes_follow_the_first_nodes_ports_and_form_one_quorum(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, 3, port=19092, controller_port=19093)
    assert [(n.name, n.port, n.controller_port) for n in cluster.nodes] == [
        ("kafka-1", 19092, 19093),
        ("kafka-2", 19092 + PORT_STEP, 19093 + PORT_STEP),
        ("kafka-3", 19092 + 2 * PORT_STEP, 19093 + 2 * PORT_STEP),
    ]
    assert cluster.bootstrap_servers == ",".join(f"127.0.0.1:{19092 + i * PORT_STEP}" for i in range(3))
    voters = f"1@127.0.0.1:19093,2@127.0.0.1:{19093 + PORT_STEP},3@127.0.0.1:{19093 + 2 * PORT_STEP}"
    assert len({n.cluster_id for n in cluster.nodes}) == 1
    for node in cluster.nodes:
        got = settings(node)
        assert got["node.id"] == str(node.node_id)
        assert got["controller.quorum.voters"] == voters
        assert [got[key] for key in ("default.replication.factor", "min.insync.replicas")] == ["3", "2"]
        assert got["transaction.state.log.replication.factor"] == "3"
        assert node.data_dir == tmp_path / f"kafka-{node.node_id}-data"
        assert node.logs_dir == tmp_path / "logs" / f"kafka-{node.node_id}"


def test_the_runtime_finds_the_cluster_it_started_and_brokers_takes_one_or_three(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RUNTIME_DIR", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONTROLLER_PORT", "BROKERS"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(local.default_nodes(tmp_path, secure=False)[0], KafkaNode)
    (tmp_path / local.BROKERS_MARKER).write_text("3\n")
    kafka = local.default_nodes(tmp_path, secure=False)[0]
    assert isinstance(kafka, KafkaCluster) and len(kafka.nodes) == 3
    assert local.brokers_asked() is None
    monkeypatch.setenv("BROKERS", "3")
    assert local.brokers_asked() == 3
    monkeypatch.setenv("BROKERS", "2")
    with pytest.raises(local.LocalRuntimeError, match="choose 1 or 3"):
        local.brokers_asked()
