"""Where the demo's infrastructure runs: the local runtime (the default, as for `make up`), the compose stack when
asked (`compose`), or servers that already run elsewhere (`external`: KAFKA_BOOTSTRAP_SERVERS, MQTT_HOST, MQTT_PORT
name them).

Either way the demo stops only what it started itself: servers that were already running (`make up`, a compose
stack started by hand) are used and left running.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from common.defaults import FLEET_CARS, KAFKA_PORT, LOCALHOST, MQTT_PORT, SCHEMA_REGISTRY_PORT
from common.errors import LocalRuntimeError
from common.settings import PLAINTEXT, KafkaSecurity, KafkaSettings, MqttSettings
from scripts.runtime import compose
from scripts.runtime import local as local_runtime
from scripts.runtime.docker_engine import docker_answers
from scripts.runtime.local import ServerProcess
from scripts.runtime.schema_registry import CCOMPAT_PATH
from scripts.runtime.secured import SecureMaterial, default_material

log = logging.getLogger(__name__)

COMPOSE_INFRA = ["kafka", "mosquitto", "schema-registry"]


RUNTIMES = ("local", "compose", "external")
DEFAULT_RUNTIME = "local"  # the same as `make up`: compose only when asked, never because Docker answers


def check_runtime(requested: str) -> str:
    """The runtime asked for, once what it needs is there: compose needs a Docker engine."""
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
    secure: SecureMaterial | None = None
    own_security: KafkaSecurity = PLAINTEXT  # without material: the identity of this process's own settings
    started: list[str] = field(default_factory=list)
    _nodes: list[ServerProcess] = field(default_factory=list)

    def describe(self) -> str:
        reused = "" if self.started else " (already running; left running)"
        registry = f", schema registry {self.registry_url}" if self.registry_url else ""
        secured = ", secured (Kafka SASL_SSL + ACLs, MQTT TLS + a password per car)" if self.secure else ""
        where = f"Kafka {self.bootstrap}, MQTT {self.mqtt_host}:{self.mqtt_port}"
        return f"{self.runtime}: {where}{registry}{secured}{reused}"

    def identity(self, name: str) -> dict[str, str]:
        """The environment of service `name` (bridge, simulator, predictor, trainer, admin): empty when open."""
        return self.secure.env(name) if self.secure else {}

    @property
    def kafka_security(self) -> KafkaSecurity:
        """How this process's own Kafka clients (topics, offsets, the live view) log in: as the operator, `admin`,
        when secured."""
        return self.secure.kafka_security("admin") if self.secure else self.own_security

    def stop(self) -> None:
        if self.runtime == "compose" and self.started:
            compose.compose("stop", *self.started)
        for node in reversed(self._nodes):
            node.stop()
        self._nodes.clear()
        self.started.clear()


def start_local(secure: bool = False, cars: int = FLEET_CARS) -> Infrastructure:
    kafka, mosquitto = local_runtime.default_nodes(secure=secure, brokers=local_runtime.brokers_asked())
    infra = Infrastructure("local", kafka.bootstrap_servers, LOCALHOST, mosquitto.port, secure=kafka.secure)
    started = local_runtime.start_nodes(kafka, mosquitto, cars)
    infra._nodes.extend(started)
    infra.started.extend(node.name for node in started)
    return infra


def start_compose() -> Infrastructure:
    running = set(compose.compose("ps", "--services", "--filter", "status=running").split())
    missing = [name for name in COMPOSE_INFRA if name not in running]
    # The host ports compose/docker-compose.yml publishes (its *_HOST_PORT variables, the usual ports by default).
    registry_port = os.environ.get("SCHEMA_REGISTRY_HOST_PORT", SCHEMA_REGISTRY_PORT)
    infra = Infrastructure(
        "compose",
        f"localhost:{os.environ.get('KAFKA_HOST_PORT', KAFKA_PORT)}",
        LOCALHOST,
        int(os.environ.get("MQTT_HOST_PORT", MQTT_PORT)),
        registry_url=f"http://localhost:{registry_port}{CCOMPAT_PATH}",
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


def external(secure: bool = False) -> Infrastructure:
    """Servers that run already, named by the connection settings of the README; nothing to start or stop.
    Secured: their material is in SECURE_DIR."""
    kafka, mqtt = KafkaSettings(), MqttSettings()
    material = default_material() if secure else None
    if material is not None and not material.exists():
        raise LocalRuntimeError(f"secured external servers need their material in {material.folder} (SECURE_DIR)")
    return Infrastructure(
        "external",
        kafka.kafka_bootstrap_servers,
        mqtt.mqtt_host,
        mqtt.mqtt_port,
        kafka.schema_registry_url,
        secure=material,
        own_security=kafka.kafka_security,
    )


def start(requested: str, secure: bool = False, cars: int = FLEET_CARS) -> Infrastructure:
    runtime = check_runtime(requested)
    if runtime == "external":
        return external(secure)
    if runtime == "compose":
        if secure:
            raise LocalRuntimeError("the demo's compose runtime is not secured yet: use RUNTIME=local with SECURE=1")
        return start_compose()
    return start_local(secure, cars)
