"""Where the demo's infrastructure runs: the compose stack when a Docker engine answers, the local runtime otherwise,
or servers that already run elsewhere (`external`: KAFKA_BOOTSTRAP_SERVERS, MQTT_HOST, MQTT_PORT name them).

Either way the demo stops only what it started itself: servers that were already running (`make up`, a compose
stack started by hand) are used and left running.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from common.errors import LocalRuntimeError
from common.settings import KafkaSettings, MqttSettings
from scripts import compose, local_runtime
from scripts.docker_engine import docker_answers
from scripts.local_runtime import ServerProcess
from scripts.schema_registry import CCOMPAT_PATH

log = logging.getLogger(__name__)

COMPOSE_INFRA = ["kafka", "mosquitto", "schema-registry"]


def choose_runtime(requested: str) -> str:
    """`auto` picks compose when a Docker engine answers, local otherwise; an explicit choice is checked."""
    if requested == "auto":
        return "compose" if docker_answers() else "local"
    if requested == "compose" and not docker_answers():
        raise LocalRuntimeError("RUNTIME=compose needs a Docker engine, and none answers `docker info`")
    return requested


@dataclass
class Infrastructure:
    """Kafka and MQTT endpoints for the services, and how to stop what this run started."""

    runtime: str
    bootstrap: str
    mqtt_host: str
    mqtt_port: int
    registry_url: str | None = None
    started: list[str] = field(default_factory=list)
    _nodes: list[ServerProcess] = field(default_factory=list)

    def describe(self) -> str:
        reused = "" if self.started else " (already running; left running)"
        registry = f", schema registry {self.registry_url}" if self.registry_url else ""
        return f"{self.runtime}: Kafka {self.bootstrap}, MQTT {self.mqtt_host}:{self.mqtt_port}{registry}{reused}"

    def stop(self) -> None:
        if self.runtime == "compose" and self.started:
            compose.compose("stop", *self.started)
        for node in reversed(self._nodes):
            node.stop()
        self._nodes.clear()
        self.started.clear()


def start_local() -> Infrastructure:
    kafka, mosquitto = local_runtime.default_nodes()
    infra = Infrastructure("local", kafka.bootstrap_servers, "127.0.0.1", mosquitto.port)
    try:
        for node in (kafka, mosquitto):
            if node.is_running() and node.answers():
                log.info("%s already runs on port %d (pid %s): using it as is", node.name, node.port, node.pid())
                continue
            node.start()
            infra._nodes.append(node)
            infra.started.append(node.name)
            node.wait_ready(timeout=120)
    except BaseException:  # Ctrl-C or a failed start: stop what this call started before giving up
        infra.stop()
        raise
    return infra


def start_compose() -> Infrastructure:
    running = set(compose.compose("ps", "--services", "--filter", "status=running").split())
    missing = [name for name in COMPOSE_INFRA if name not in running]
    infra = Infrastructure(
        "compose",
        f"localhost:{os.environ.get('KAFKA_HOST_PORT', '9092')}",
        "127.0.0.1",
        int(os.environ.get("MQTT_HOST_PORT", "1883")),
        registry_url=f"http://localhost:{os.environ.get('SCHEMA_REGISTRY_HOST_PORT', '8081')}{CCOMPAT_PATH}",
        started=missing,
    )
    if missing:
        log.info("starting %s with compose (%s)", ", ".join(missing), compose.COMPOSE_FILE)
        try:
            compose.up(missing)
        except BaseException:
            infra.stop()
            raise
    return infra


def external() -> Infrastructure:
    """Servers that run already, named by the connection settings of the README; nothing to start or stop."""
    kafka, mqtt = KafkaSettings(), MqttSettings()
    return Infrastructure(
        "external", kafka.kafka_bootstrap_servers, mqtt.mqtt_host, mqtt.mqtt_port, kafka.schema_registry_url
    )


def start(requested: str) -> Infrastructure:
    runtime = choose_runtime(requested)
    if runtime == "external":
        return external()
    return start_compose() if runtime == "compose" else start_local()
