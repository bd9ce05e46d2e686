"""Kafka as a cluster of local processes: N KRaft nodes, each broker and controller in one JVM, the N controllers one
quorum (static `controller.quorum.voters`), every topic replicated as common/kafka.py's replication_for rules.

Ports: node n (1, 2, 3) listens for clients on the first port + PORT_STEP·(n-1) and for its controller on the
controller port + PORT_STEP·(n-1); with the defaults 9092/9093, 9192/9193, 9292/9293. KAFKA_BOOTSTRAP_SERVERS and
KAFKA_CONTROLLER_PORT move the first node, and the others with it. Each node has its own files in the run folder:
kafka-<n>.properties, kafka-<n>-data/, logs/kafka-<n>/server.log, logs/kafka-<n>.out, kafka-<n>.pid.

A cluster offers the methods of one node that the runtime uses (start, wait_ready, answers, stop, ...), so that
`make up BROKERS=3` runs the same code as one broker does."""

from __future__ import annotations

import logging
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.defaults import KAFKA_PORT
from common.errors import LocalRuntimeError
from common.settings import KafkaSecurity
from scripts.runtime.kafka_node import KAFKA_CONTROLLER_PORT, KafkaNode
from scripts.runtime.secured import SecureMaterial

log = logging.getLogger(__name__)

PORT_STEP = 100  # node n's ports are the first node's + PORT_STEP·(n-1)


class KafkaCluster:
    """`brokers` KafkaNodes that form one cluster, node ids 1..brokers, started together (a quorum needs a majority
    before any node serves) and stopped together."""

    def __init__(
        self,
        run_dir: Path,
        brokers: int = 3,
        port: int = KAFKA_PORT,
        controller_port: int = KAFKA_CONTROLLER_PORT,
        heap: str = "768m",
        secure: SecureMaterial | None = None,
        ports: list[tuple[int, int]] | None = None,
    ) -> None:
        """`ports`: (client, controller) of each node, where they cannot follow PORT_STEP (tests on free ports)."""
        ports = ports or [(port + PORT_STEP * i, controller_port + PORT_STEP * i) for i in range(brokers)]
        voters = {node_id: controller for node_id, (_, controller) in enumerate(ports, start=1)}
        cluster_id = _existing_cluster_id(run_dir, secure) or uuid.uuid4().hex[:22]
        self.nodes = [
            KafkaNode(run_dir, client, controller, heap, secure, node_id, voters, cluster_id)
            for node_id, (client, controller) in enumerate(ports, start=1)
        ]
        self.name = "kafka cluster"
        self.run_dir = run_dir
        self.secure = secure

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def bootstrap_servers(self) -> str:
        """Every node: a client finds the cluster while any one of them answers."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def admin_security(self) -> KafkaSecurity:
        return self.nodes[0].admin_security

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def pid(self) -> int | None:
        return self.nodes[0].pid()

    def is_running(self) -> bool:
        return any(node.is_running() for node in self.nodes)

    def answers(self) -> bool:
        """Whether every node is up and counted by the controller."""
        return all(node.is_running() and node.answers() for node in self.nodes)

    def start(self) -> bool:
        """Start the nodes that do not run (all before waiting on any: none serves before a majority votes)."""
        return any([node.start() for node in self.nodes])

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_ready(max(1.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM to every node at once, SIGKILL after `timeout` to those still there: the last node's controlled
        shutdown waits for a quorum that has gone (measured: it waits out any grace), and what it wrote is in the
        page cache and its replicas, so nothing is lost; its next start recovers its log."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            return any(list(pool.map(lambda node: node.stop(timeout), self.nodes)))

    def tail_log(self, lines: int = 20) -> str:
        return "\n\n".join(f"{node.name}:\n{node.tail_log(lines)}" for node in self.nodes)

    def quorum_leader(self, timeout: float = 60.0) -> int:
        """The node id of the controller quorum's leader (the active controller), from KRaft's DescribeQuorum as
        Kafka's own kafka-metadata-quorum tool asks it (confluent-kafka has no such call)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            alive = [node for node in self.nodes if node.is_running()]
            if not alive:
                raise LocalRuntimeError("no node of the Kafka cluster runs: no quorum leader to find")
            result = subprocess.run(
                alive[0].tool_command(
                    "org.apache.kafka.tools.MetadataQuorumCommand",
                    "--bootstrap-server",
                    ",".join(node.bootstrap_servers for node in alive),
                    *alive[0].tool_login(),
                    "describe",
                    "--status",
                ),
                capture_output=True,
                text=True,
                timeout=60,
            )
            found = re.search(r"^LeaderId:\s+(\d+)", result.stdout, re.MULTILINE)
            if result.returncode == 0 and found and int(found.group(1)) >= 0:
                return int(found.group(1))
            last = result.stdout[-500:] + result.stderr[-1500:]
            time.sleep(1)
        raise LocalRuntimeError(f"the Kafka cluster named no quorum leader within {timeout:.0f} s:\n{last}")


def _existing_cluster_id(run_dir: Path, secure: SecureMaterial | None) -> str | None:
    """The cluster id a node's storage was formatted with, so that a node formatted anew joins the same cluster."""
    suffix = "-secured" if secure else ""
    for meta in sorted(run_dir.glob(f"kafka-*-data{suffix}/meta.properties")):
        found = re.search(r"^cluster\.id=(\S+)", meta.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    return None
