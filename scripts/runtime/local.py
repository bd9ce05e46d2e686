"""The local runtime: a real Apache Kafka (KRaft, single combined node) and a real Mosquitto, as processes.

    python -m scripts.runtime.local install   # resolve the Kafka jars with Maven (make setup does this)
    python -m scripts.runtime.local up        # start both, return once each answers (make up)
    python -m scripts.runtime.local down      # stop both, leave no process behind (make down)
    python -m scripts.runtime.local status

Ports come from KAFKA_BOOTSTRAP_SERVERS (client listener), KAFKA_CONTROLLER_PORT and MQTT_PORT; MQTT_BROKER=hivemq
runs HiveMQ CE (scripts/runtime/hivemq.py) in Mosquitto's place. Data and logs
live in the git-ignored `.run/` folder (RUNTIME_DIR overrides). The test fixtures use the same classes to start
private instances on free ports.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from admin.policy import HEALTH_TOPIC_PREFIX, KAFKA_SUPER_USERS, SCRAM_MECHANISM
from common.defaults import (
    FLEET_CARS,
    KAFKA_BOOTSTRAP_SERVERS,
    KAFKA_PORT,
    MQTT_PORT,
    MQTT_TLS_PORT,
    SCHEMA_REGISTRY_PORT,
)
from common.errors import CarStreamError, DependencyMissingError, LocalRuntimeError
from common.logs import setup_logging
from common.settings import PLAINTEXT, KafkaSecurity
from scripts.runtime.port_holder import port_taken_message
from scripts.runtime.prerequisites import TOOLS, find, install_hint
from scripts.runtime.secured import SecureMaterial, default_material

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_VERSION = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text()).group(1)
KAFKA_LIBS = ROOT / ".deps" / f"kafka-{KAFKA_VERSION}" / "libs"
DEFAULT_RUN_DIR = ROOT / ".run"
KAFKA_CONTROLLER_PORT = 9093


def require(program: str) -> str:
    """The path of `program` (java, mvn, mosquitto, debootstrap), or a DependencyMissingError that names what to
    install; Java from JAVA_HOME or Homebrew's keg before the one on PATH, as `make setup` finds it."""
    tool = TOOLS[program]
    found = find(tool)
    if not found:
        raise DependencyMissingError(f"`{program}` not found. Install {install_hint(tool)}.")
    return found


def install_kafka_jars() -> Path:
    """Resolve the broker jars from Maven Central once; later calls return at once."""
    stamp = KAFKA_LIBS / ".complete"
    if stamp.exists():
        return KAFKA_LIBS
    mvn = require("mvn")
    log.info("resolving Apache Kafka %s jars with Maven into %s", KAFKA_VERSION, KAFKA_LIBS)
    KAFKA_LIBS.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={KAFKA_LIBS}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LocalRuntimeError(
            f"Maven could not resolve the Kafka jars:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    stamp.touch()
    return KAFKA_LIBS


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); read its state where /proc exists.
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "\nState:\tZ" not in status.read_text()
    return True


class ServerProcess(ABC):
    """A server run as a process of its own session, tracked by a pid file in its run folder."""

    moved_by = ""  # the settings that move it to other ports (`VAR=value ...`), for the "port taken" error

    def __init__(self, name: str, run_dir: Path, port: int) -> None:
        self.name = name
        self.run_dir = run_dir
        self.port = port
        self._process: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.out"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configuration, format storage: whatever must exist before the start."""

    @abstractmethod
    def answers(self) -> bool:
        """Whether the server serves its protocol now."""

    def start(self) -> bool:
        """Start the server unless it runs already; returns False when it was already running."""
        if self.is_running():
            return False
        for port in self.ports():
            if port_in_use(port):
                raise LocalRuntimeError(port_taken_message(port, self.name, self.moved_by))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_file, "ab") as out:
            process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self._process = process  # lets _reap() collect the child when this Python process started it
        log.info("started %s (pid %d) on port %d, log %s", self.name, process.pid, self.port, self.log_file)
        return True

    def ports(self) -> list[int]:
        return [self.port]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise LocalRuntimeError(f"{self.name} exited during start-up; see {self.log_file}:\n{self.tail_log()}")
            if self.answers():
                return
            time.sleep(0.5)
        raise LocalRuntimeError(f"{self.name} did not answer within {timeout:.0f} s; see {self.log_file}")

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`; returns False when nothing was running."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """SIGKILL at once: a crash, for fault tests."""
        return self._signal_and_wait(signal.SIGKILL, 10.0)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, sig) if _is_group_leader(pid) else os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        if pid_alive(pid):
            log.warning("%s (pid %d) ignored %s for %.0f s; killing it", self.name, pid, sig.name, timeout)
            os.killpg(pid, signal.SIGKILL) if _is_group_leader(pid) else os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                self._reap()
                time.sleep(0.1)
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", self.name, pid)
        return True

    def _reap(self) -> None:
        if self._process is not None:
            self._process.poll()


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


class KafkaNode(ServerProcess):
    """A single Apache Kafka node in KRaft mode, broker and controller in one JVM. With `secure` material its one
    client listener is SASL_SSL (SCRAM-SHA-512), the standard authorizer refuses what no ACL grants, and nothing
    creates topics on its own (scripts/runtime/secured.py sets users, topics and ACLs)."""

    moved_by = "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 KAFKA_CONTROLLER_PORT=19093"

    def __init__(
        self,
        run_dir: Path,
        port: int = KAFKA_PORT,
        controller_port: int = KAFKA_CONTROLLER_PORT,
        heap: str = "1g",
        secure: SecureMaterial | None = None,
    ) -> None:
        super().__init__("kafka", run_dir, port)
        self.controller_port = controller_port
        self.heap = heap
        self.secure = secure

    @property
    def admin_security(self) -> KafkaSecurity:
        """How an operator's tool connects: plaintext, or as `admin` in secured mode."""
        return self.secure.kafka_security("admin") if self.secure else PLAINTEXT

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        # A secured node keeps its own data: its SCRAM users are written when the storage is formatted.
        return self.run_dir / ("kafka-data-secured" if self.secure else "kafka-data")

    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    def properties(self) -> str:
        protocol = "SASL_SSL" if self.secure else "PLAINTEXT"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                f"listeners={protocol}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={protocol}://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                *(secured_kafka_properties(self.secure) if self.secure else PLAINTEXT_KAFKA_PROPERTIES),
                f"log.dirs={self.data_dir}",
                "num.partitions=4",
                "default.replication.factor=1",
                "min.insync.replicas=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                f"auto.create.topics.enable={'false' if self.secure else 'true'}",
                "log.retention.hours=168",
                "",
            ]
        )

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        libs = install_kafka_jars()
        return [
            require("java"),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.run_dir / 'logs'}",
            f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def prepare(self) -> None:
        config = self.run_dir / "server.properties"
        config.write_text(self.properties())
        (self.run_dir / "log4j.properties").write_text(LOG4J_PROPERTIES)
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = uuid.uuid4().hex[:22]
        users = []
        for name in KAFKA_SUPER_USERS if self.secure else ():  # the node's own user and the one that sets up
            users += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={self.secure.kafka_password(name)}]"]
        command = self._java_command(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), "--standalone", *users
        )
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalRuntimeError(f"formatting Kafka storage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        log.info("formatted KRaft storage in %s (cluster id %s)", self.data_dir, cluster_id)

    def command(self) -> list[str]:
        return self._java_command("kafka.Kafka", str(self.run_dir / "server.properties"))

    def answers(self) -> bool:
        return kafka_answers(self.bootstrap_servers, self.admin_security)


PLAINTEXT_KAFKA_PROPERTIES = [
    "inter.broker.listener.name=PLAINTEXT",
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
]


def secured_kafka_properties(secure: SecureMaterial) -> list[str]:
    """SASL_SSL with SCRAM-SHA-512 for clients and between the node's listeners, the standard authorizer (deny
    unless an ACL allows), a PEM key store from scripts/runtime/secured.py. The controller listener (loopback only) uses
    SASL PLAIN: the controller must know its peer (ANONYMOUS is refused CLUSTER_ACTION) and SCRAM users are not
    readable before the metadata log is."""
    broker_password = secure.kafka_password("broker")
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    return [
        "inter.broker.listener.name=SASL_SSL",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        f'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram} required username="broker" '
        f'password="{broker_password}";',
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f'listener.name.controller.plain.sasl.jaas.config={plain} required username="broker" '
        f'password="{broker_password}" user_broker="{broker_password}";',
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={secure.server_pem}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={secure.ca_file}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:broker;User:admin",
        "allow.everyone.if.no.acl.found=false",
    ]


def kafka_answers(bootstrap_servers: str, security: KafkaSecurity) -> bool:
    """Whether a broker at `bootstrap_servers` returns cluster metadata within 2 s (as `security`'s identity)."""
    from confluent_kafka.admin import AdminClient

    from common.kafka import client_config

    admin = AdminClient(client_config(bootstrap_servers, security, log_level=0))
    try:
        metadata = admin.list_topics(timeout=2)
    except Exception:
        return False
    return bool(metadata.brokers)


LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, kafkaAppender
log4j.appender.kafkaAppender=org.apache.log4j.RollingFileAppender
log4j.appender.kafkaAppender.File=${kafka.logs.dir}/server.log
log4j.appender.kafkaAppender.MaxFileSize=50MB
log4j.appender.kafkaAppender.MaxBackupIndex=3
log4j.appender.kafkaAppender.layout=org.apache.log4j.PatternLayout
log4j.appender.kafkaAppender.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


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


def default_nodes(run_dir: Path | None = None, secure: bool | None = None) -> tuple[KafkaNode, ServerProcess]:
    """The runtime's two servers, the MQTT broker the one MQTT_BROKER names (scripts/runtime/mqtt_broker.py);
    `secure` None means the mode they were started in."""
    from scripts.runtime.mqtt_broker import mqtt_node  # it builds on this module

    run_dir = Path(os.environ.get("RUNTIME_DIR", run_dir or DEFAULT_RUN_DIR))
    if secure is None:
        secure = (run_dir / SECURED_MARKER).exists()
    material = default_material() if secure else None
    kafka = KafkaNode(
        run_dir,
        port=_host_port(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", KAFKA_BOOTSTRAP_SERVERS)),
        controller_port=int(os.environ.get("KAFKA_CONTROLLER_PORT", KAFKA_CONTROLLER_PORT)),
        secure=material,
    )
    mqtt_port = int(os.environ.get("MQTT_PORT", MQTT_TLS_PORT if secure else MQTT_PORT))
    return kafka, mqtt_node(run_dir, mqtt_port, material)


def start_nodes(kafka: KafkaNode, mosquitto: ServerProcess, cars: int = FLEET_CARS) -> list[ServerProcess]:
    """Start what does not run yet, wait for each to answer; returns the nodes started. Secured: the material is
    completed first (certificates, a password file for `cars` cars), then Kafka's users, topics and ACLs."""
    secure = kafka.secure is not None
    if kafka.is_running() and (kafka.run_dir / SECURED_MARKER).exists() != secure:
        mode = "secured" if not secure else "plaintext"
        raise LocalRuntimeError(f"the local runtime runs in {mode} mode; `make down` first to switch modes")
    if kafka.secure:
        kafka.secure.ensure(cars)
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


def registry_node(kafka: KafkaNode):
    """The optional schema registry of the local runtime: Apicurio Registry (scripts/runtime/schema_registry.py) on
    SCHEMA_REGISTRY_PORT (common/defaults.py's by default), keeping its schemas in the runtime's Kafka."""
    from scripts.runtime.schema_registry import SchemaRegistryNode  # it builds on this module

    return SchemaRegistryNode(
        kafka.run_dir,
        port=int(os.environ.get("SCHEMA_REGISTRY_PORT", SCHEMA_REGISTRY_PORT)),
        kafka_bootstrap=kafka.bootstrap_servers,
    )


def up(with_registry: bool = False, secure: bool = False, cars: int = FLEET_CARS) -> None:
    started = time.monotonic()
    kafka, mosquitto = default_nodes(secure=secure)
    if secure and with_registry:
        raise LocalRuntimeError("the local schema registry does not run in secured mode yet; leave REGISTRY unset")
    start_nodes(kafka, mosquitto, cars)
    if with_registry:
        registry = registry_node(kafka)
        if not (registry.is_running() and registry.answers()):
            registry.start()
            registry.wait_ready(timeout=120)
    print(
        f"Kafka {KAFKA_VERSION} at {kafka.bootstrap_servers} and {mosquitto.name} at 127.0.0.1:{mosquitto.port} are "
        f"up ({time.monotonic() - started:.1f} s).\nLogs: {kafka.run_dir / 'logs'}/ (server.log, kafka.out, "
        f"{mosquitto.name}.*)"
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


def _all_nodes() -> list[ServerProcess]:
    from scripts.runtime.mqtt_broker import every_mqtt_node  # it builds on this module

    kafka, mqtt = default_nodes()
    # The registry first: it keeps its schemas in Kafka. Every MQTT broker: whichever was started.
    return [registry_node(kafka), kafka, *every_mqtt_node(mqtt.run_dir, mqtt.port, getattr(mqtt, "secure", None))]


def down() -> None:
    stopped = [node.name for node in _all_nodes() if node.stop()]
    (default_nodes()[0].run_dir / SECURED_MARKER).unlink(missing_ok=True)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def status() -> int:
    code = 0
    for node in default_nodes():
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
            up(with_registry=args.schema_registry, secure=args.secure, cars=args.cars)
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
