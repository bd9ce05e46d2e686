"""The local runtime: a real Apache Kafka (KRaft, one combined node or a cluster of three) and a real Mosquitto, as
processes.

    python -m scripts.runtime.local install            # resolve the Kafka jars with Maven (make setup does this)
    python -m scripts.runtime.local up [--brokers 3]   # start them, return once each answers (make up [BROKERS=3])
    python -m scripts.runtime.local down               # stop them, leave no process behind (make down)
    python -m scripts.runtime.local status

Ports come from KAFKA_BOOTSTRAP_SERVERS (client listener), KAFKA_CONTROLLER_PORT and MQTT_PORT; a cluster's other
nodes follow the first (scripts/runtime/kafka_cluster.py). Data and logs live in the git-ignored `.run/` folder
(RUNTIME_DIR overrides). The Kafka node and cluster are in kafka_node.py and kafka_cluster.py, the process base in
server_process.py; MQTT_BROKER=hivemq runs HiveMQ CE (scripts/runtime/hivemq.py) in Mosquitto's
place. The test fixtures use the same classes to start private instances on free ports.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path

from admin.policy import HEALTH_TOPIC_PREFIX
from common.defaults import (
    FLEET_CARS,
    KAFKA_BOOTSTRAP_SERVERS,
    MQTT_PORT,
    MQTT_TLS_PORT,
    SCHEMA_REGISTRY_PORT,
)
from common.errors import CarStreamError, LocalRuntimeError
from common.logs import setup_logging
from common.ports import free_port, port_in_use  # noqa: F401  (re-exported)
from scripts.runtime.kafka_cluster import PORT_STEP, KafkaCluster
from scripts.runtime.kafka_node import (  # noqa: F401  (re-exported: the runtime's users import them from here)
    KAFKA_CONTROLLER_PORT,
    KAFKA_VERSION,
    KafkaNode,
    install_kafka_jars,
    kafka_answers,
    secured_kafka_properties,
)
from scripts.runtime.secured import SecureMaterial, default_material
from scripts.runtime.server_process import (  # noqa: F401  (re-exported)
    ROOT,
    ServerProcess,
    pid_alive,
    require,
)

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = ROOT / ".run"


class MosquittoNode(ServerProcess):
    """Mosquitto with persistence on and queues far above the default 1000 per client. With `secure` material:
    TLS only, no anonymous client, a password per car and ACLs (scripts/runtime/secured.py)."""

    moved_by = "MQTT_PORT=1884"

    def __init__(self, run_dir: Path, port: int = MQTT_PORT, secure: SecureMaterial | None = None) -> None:
        super().__init__("mosquitto", run_dir, port)
        self.secure = secure

    @property
    def config_file(self) -> Path:
        return self.run_dir / "mosquitto.conf"

    def prepare(self) -> None:
        template = (ROOT / "compose" / "mosquitto" / "mosquitto.conf").read_text()
        data_dir = self.run_dir / ("mosquitto-data-secured" if self.secure else "mosquitto-data")
        data_dir.mkdir(parents=True, exist_ok=True)
        # The compose file's config, with the listener and paths of this run folder.
        listener = f"listener {self.port} 127.0.0.1"
        if self.secure:
            listener += "\n" + secured_mosquitto_listener(self.secure)
            template = template.replace("allow_anonymous true", secured_mosquitto_access(self.secure))
        config = re.sub(r"(?m)^listener .*$", listener, template)
        config = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data_dir}/", config)
        config = re.sub(r"(?m)^log_dest .*$", f"log_dest file {self.run_dir / 'logs' / 'mosquitto.log'}", config)
        # Run as the invoking user (Mosquitto started as root otherwise drops to `mosquitto`, who cannot
        # write into this repository's run folder).
        config += f"\nuser {getpass.getuser()}\n"
        self.config_file.write_text(config)

    def command(self) -> list[str]:
        return [require("mosquitto"), "-c", str(self.config_file)]

    def answers(self) -> bool:
        return mqtt_round_trip("127.0.0.1", self.port, secure=self.secure)


def secured_mosquitto_listener(secure: SecureMaterial) -> str:
    return f"cafile {secure.ca_file}\ncertfile {secure.server_cert}\nkeyfile {secure.server_key}\ntls_version tlsv1.2"


def secured_mosquitto_access(secure: SecureMaterial) -> str:
    return f"allow_anonymous false\npassword_file {secure.mosquitto_passwd}\nacl_file {secure.mosquitto_acl}"


def mqtt_round_trip(host: str, port: int, timeout: float = 3.0, secure: SecureMaterial | None = None) -> bool:
    """Publish one message and receive it back on the same connection (over TLS as `monitor` when secured)."""
    import paho.mqtt.client as mqtt

    topic = f"{HEALTH_TOPIC_PREFIX}/{uuid.uuid4().hex}"
    received = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"health-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, msg: received.append(msg.payload)
    if secure:
        secure.mqtt_settings("monitor").configure_client(client)
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    try:
        client.loop_start()
        client.subscribe(topic, qos=1)[0]
        time.sleep(0.1)
        client.publish(topic, b"ping", qos=1)
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        return received == [b"ping"]
    finally:
        client.disconnect()
        client.loop_stop()


def _host_port(bootstrap: str) -> int:
    first = bootstrap.split(",")[0]
    return int(first.rsplit(":", 1)[1])


SECURED_MARKER = "secured"  # in the run folder while the runtime runs in secured mode: status and down find it
BROKERS_MARKER = "kafka-brokers"  # the number of Kafka brokers it was started with, when more than one
BROKER_CHOICES = (1, 3)  # one broker (the default, small machines) or a cluster with a quorum of three
Kafka = KafkaNode | KafkaCluster


def started_brokers(run_dir: Path) -> int:
    """How many Kafka brokers the runtime in `run_dir` was last started with."""
    try:
        return int((run_dir / BROKERS_MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return 1


def brokers_asked() -> int | None:
    """BROKERS (`make up BROKERS=3`, `make demo BROKERS=3`); None when unset."""
    value = os.environ.get("BROKERS")
    if not value:
        return None
    if value not in map(str, BROKER_CHOICES):
        raise LocalRuntimeError(f"BROKERS={value}: choose {' or '.join(map(str, BROKER_CHOICES))}")
    return int(value)


def default_nodes(
    run_dir: Path | None = None, secure: bool | None = None, brokers: int | None = None
) -> tuple[Kafka, ServerProcess]:
    """The runtime's servers: Kafka (one node, or a cluster of `brokers`) and the MQTT broker MQTT_BROKER names
    (scripts/runtime/mqtt_broker.py); `secure` and `brokers` None mean as they were started."""
    from scripts.runtime.mqtt_broker import mqtt_node  # it builds on this module

    run_dir = Path(os.environ.get("RUNTIME_DIR", run_dir or DEFAULT_RUN_DIR))
    if secure is None:
        secure = (run_dir / SECURED_MARKER).exists()
    material = default_material() if secure else None
    port = _host_port(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", KAFKA_BOOTSTRAP_SERVERS))
    controller_port = int(os.environ.get("KAFKA_CONTROLLER_PORT", KAFKA_CONTROLLER_PORT))
    brokers = brokers or started_brokers(run_dir)
    if brokers == 1:
        kafka = KafkaNode(run_dir, port=port, controller_port=controller_port, secure=material)
    else:
        kafka = KafkaCluster(run_dir, brokers, port=port, controller_port=controller_port, secure=material)
    mqtt_port = int(os.environ.get("MQTT_PORT", MQTT_TLS_PORT if secure else MQTT_PORT))
    return kafka, mqtt_node(run_dir, mqtt_port, material)


def kafka_nodes(kafka: Kafka) -> list[KafkaNode]:
    return kafka.nodes if isinstance(kafka, KafkaCluster) else [kafka]


def start_nodes(kafka: Kafka, mosquitto: ServerProcess, cars: int = FLEET_CARS) -> list[ServerProcess]:
    """Start what does not run yet, wait for each to answer; returns the servers started. Secured: the material is
    completed first (certificates, a password file for `cars` cars), then Kafka's users, topics and ACLs."""
    secure = kafka.secure is not None
    if kafka.is_running() and (kafka.run_dir / SECURED_MARKER).exists() != secure:
        mode = "secured" if not secure else "plaintext"
        raise LocalRuntimeError(f"the local runtime runs in {mode} mode; `make down` first to switch modes")
    brokers, running = len(kafka_nodes(kafka)), started_brokers(kafka.run_dir)
    started_before = KafkaNode(kafka.run_dir) if running == 1 else KafkaCluster(kafka.run_dir, running)
    if running != brokers and started_before.is_running():  # its pid files tell, whatever its ports
        raise LocalRuntimeError(f"the local runtime runs {running} Kafka broker(s); `make down` first for {brokers}")
    if kafka.secure:
        kafka.secure.ensure(cars)
    brokers_marker = kafka.run_dir / BROKERS_MARKER
    if brokers > 1:
        kafka.run_dir.mkdir(parents=True, exist_ok=True)
        brokers_marker.write_text(f"{brokers}\n")
    else:
        brokers_marker.unlink(missing_ok=True)
    started = []
    try:
        for node in (kafka, mosquitto):
            if node.is_running() and node.answers():
                log.info("%s already runs on port %d (pid %s): using it as is", node.name, node.port, node.pid())
                continue
            node.start()
            started.append(node)
            node.wait_ready(timeout=120)
        marker = kafka.run_dir / SECURED_MARKER
        if kafka.secure:
            marker.touch()
            kafka.secure.set_up_kafka(kafka.bootstrap_servers)
        else:
            marker.unlink(missing_ok=True)
    except BaseException:  # Ctrl-C or a failed start: stop what this call started before giving up
        for node in reversed(started):
            node.stop()
        raise
    return started


def registry_node(kafka: Kafka):
    """The optional schema registry of the local runtime: Apicurio Registry (scripts/runtime/schema_registry.py) on
    SCHEMA_REGISTRY_PORT (common/defaults.py's by default), keeping its schemas in the runtime's Kafka."""
    from scripts.runtime.schema_registry import SchemaRegistryNode  # it builds on this module

    return SchemaRegistryNode(
        kafka.run_dir,
        port=int(os.environ.get("SCHEMA_REGISTRY_PORT", SCHEMA_REGISTRY_PORT)),
        kafka_bootstrap=kafka.bootstrap_servers,
    )


def up(with_registry: bool = False, secure: bool = False, cars: int = FLEET_CARS, brokers: int = 1) -> None:
    started = time.monotonic()
    kafka, mosquitto = default_nodes(secure=secure, brokers=brokers)
    if secure and with_registry:
        raise LocalRuntimeError("the local schema registry does not run in secured mode yet; leave REGISTRY unset")
    start_nodes(kafka, mosquitto, cars)
    if with_registry:
        registry = registry_node(kafka)
        if not (registry.is_running() and registry.answers()):
            registry.start()
            registry.wait_ready(timeout=120)
    logs_dir = kafka.run_dir / "logs"
    logs = ", ".join(str(node.logs_dir.relative_to(logs_dir) / "server.log") for node in kafka_nodes(kafka))
    print(
        f"Kafka {KAFKA_VERSION} ({brokers} broker{'s' if brokers > 1 else ''}) at {kafka.bootstrap_servers} and "
        f"{mosquitto.name} at 127.0.0.1:{mosquitto.port} are up ({time.monotonic() - started:.1f} s).\n"
        f"Logs: {logs_dir}/ ({logs}, kafka*.out, {mosquitto.name}.*)"
    )
    if with_registry:
        print(f"Schema registry (Apicurio, Confluent-compatible API): SCHEMA_REGISTRY_URL={registry.url}")
    if secure:
        folder = kafka.secure.folder
        print(
            f"Secured: Kafka SASL_SSL (SCRAM-SHA-512, ACLs), MQTT TLS only with a password per car (SECURITY.md).\n"
            f"Each identity's settings: {folder}/env/<bridge|simulator|predictor|trainer|admin>.env "
            f"(e.g. `set -a; . {folder}/env/bridge.env; set +a`)."
        )


def down() -> None:
    from scripts.runtime.mqtt_broker import every_mqtt_node  # it builds on this module

    kafka, mosquitto = default_nodes()
    running = [node.name for node in kafka_nodes(kafka) if node.is_running()]
    registry = registry_node(kafka)
    stopped = [registry.name] if registry.stop() else []  # first: it keeps its schemas in Kafka
    stopped += running if kafka.stop() else []
    # Every MQTT broker, whichever MQTT_BROKER started.
    mqtt_nodes = every_mqtt_node(mosquitto.run_dir, mosquitto.port, mosquitto.secure)
    stopped += [node.name for node in mqtt_nodes if node.stop()]
    for marker in (SECURED_MARKER, BROKERS_MARKER):
        (kafka.run_dir / marker).unlink(missing_ok=True)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def status() -> int:
    code = 0
    kafka, mosquitto = default_nodes()
    for node in [*kafka_nodes(kafka), mosquitto]:
        pid = node.pid()
        state = "not running" if pid is None else ("up" if node.answers() else "running, not answering")
        code |= 0 if state == "up" else 1
        print(f"{node.name:10s} {state:25s} port {node.port}" + (f", pid {pid}" if pid else ""))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.runtime.local",
        description="Start and stop the local runtime: Apache Kafka (KRaft) and an MQTT broker as local processes: "
        "Mosquitto, or HiveMQ CE with MQTT_BROKER=hivemq (scripts/runtime/mqtt_broker.py).",
    )
    parser.add_argument("action", choices=["install", "up", "down", "status"], help="what to do")
    parser.add_argument(
        "--secure",
        action="store_true",
        help=f"up: secured mode: Kafka SASL_SSL with ACLs, MQTT over TLS on {MQTT_TLS_PORT} with a password per car "
        "(material in SECURE_DIR, default .run/secure; SECURITY.md)",
    )
    parser.add_argument(
        "--cars",
        type=int,
        default=FLEET_CARS,
        help="up --secure: cars the MQTT password file holds (default %(default)s)",
    )
    parser.add_argument(
        "--brokers",
        type=int,
        choices=BROKER_CHOICES,
        default=None,
        help="up: Kafka brokers: 1 (the default: a small machine) or 3, a cluster whose controller quorum is the "
        "three nodes, topics with 3 replicas and min.insync.replicas=2 (a machine with 4 cores or more; "
        f"docs/reliability.md). Node n listens on the client and controller ports + {PORT_STEP}·(n-1) "
        "[env: BROKERS]",
    )
    parser.add_argument(
        "--schema-registry",
        action="store_true",
        help="up: also start a schema registry (Apicurio, Confluent-compatible API) on SCHEMA_REGISTRY_PORT "
        f"(default {SCHEMA_REGISTRY_PORT})",
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.action == "install":
            require("java")
            print(f"Kafka {KAFKA_VERSION} jars in {install_kafka_jars()}")
            require("mosquitto")
        elif args.action == "up":
            brokers = args.brokers or brokers_asked() or 1
            up(with_registry=args.schema_registry, secure=args.secure, cars=args.cars, brokers=brokers)
        elif args.action == "down":
            down()
        else:
            return status()
    except CarStreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
