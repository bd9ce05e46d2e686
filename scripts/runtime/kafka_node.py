"""An Apache Kafka node in KRaft mode, broker and controller in one JVM, run from the jars Maven resolves: alone
(the local runtime's default) or as one voter of a cluster (scripts/runtime/kafka_cluster.py)."""

from __future__ import annotations

import logging
import re
import subprocess
import uuid
from pathlib import Path

from admin.policy import KAFKA_SUPER_USERS, SCRAM_MECHANISM
from common.defaults import KAFKA_PORT
from common.errors import LocalRuntimeError
from common.kafka import replication_for
from common.security import write_private
from common.settings import PLAINTEXT, KafkaSecurity
from scripts.runtime.secured import SecureMaterial
from scripts.runtime.server_process import ROOT, ServerProcess, require

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_VERSION = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text()).group(1)
KAFKA_LIBS = ROOT / ".deps" / f"kafka-{KAFKA_VERSION}" / "libs"
KAFKA_CONTROLLER_PORT = 9093


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


class KafkaNode(ServerProcess):
    """An Apache Kafka node in KRaft mode, broker and controller in one JVM: alone (`voters` None, the files and
    names the runtime has always had), or one of a cluster whose controller quorum is `voters` (node id ->
    controller port; scripts/runtime/kafka_cluster.py), with files of its own named after its node id. With
    `secure` material its one client listener is SASL_SSL (SCRAM-SHA-512), the brokers speak SASL_SSL among
    themselves, the standard authorizer refuses what no ACL grants, and nothing creates topics on its own
    (scripts/runtime/secured.py sets users, topics and ACLs)."""

    moved_by = "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 KAFKA_CONTROLLER_PORT=19093"

    def __init__(
        self,
        run_dir: Path,
        port: int = KAFKA_PORT,
        controller_port: int = KAFKA_CONTROLLER_PORT,
        heap: str = "1g",
        secure: SecureMaterial | None = None,
        node_id: int = 1,
        voters: dict[int, int] | None = None,
        cluster_id: str | None = None,
    ) -> None:
        super().__init__(f"kafka-{node_id}" if voters else "kafka", run_dir, port)
        self.controller_port = controller_port
        self.heap = heap
        self.secure = secure
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id

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
        return self.run_dir / f"{self._file_stem}-data{'-secured' if self.secure else ''}"

    @property
    def config_file(self) -> Path:
        return self.run_dir / ("server.properties" if self.voters is None else f"{self.name}.properties")

    @property
    def logs_dir(self) -> Path:
        """Where its server.log goes (log4j's kafka.logs.dir): logs/ alone, logs/kafka-<id>/ in a cluster."""
        return self.run_dir / "logs" / ("" if self.voters is None else self.name)

    @property
    def _file_stem(self) -> str:
        return "kafka" if self.voters is None else self.name

    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    def properties(self) -> str:
        protocol = "SASL_SSL" if self.secure else "PLAINTEXT"
        replication, min_insync = replication_for(len(self.voters or (1,)))
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                *self._quorum_properties(),
                f"listeners={protocol}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={protocol}://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                *(secured_kafka_properties(self.secure) if self.secure else PLAINTEXT_KAFKA_PROPERTIES),
                f"log.dirs={self.data_dir}",
                "num.partitions=4",
                # Every topic, the internal ones included, as common/kafka.py's replication_for rules for this
                # many brokers: ensure_topics leaves the replication to these defaults.
                f"default.replication.factor={replication}",
                f"min.insync.replicas={min_insync}",
                f"offsets.topic.replication.factor={replication}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={replication}",
                f"transaction.state.log.min.isr={min_insync}",
                "group.initial.rebalance.delay.ms=0",
                f"auto.create.topics.enable={'false' if self.secure else 'true'}",
                "log.retention.hours=168",
                "",
            ]
        )

    def _quorum_properties(self) -> list[str]:
        if self.voters is None:
            return [f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"]
        voters = ",".join(f"{node}@127.0.0.1:{port}" for node, port in sorted(self.voters.items()))
        return [
            f"controller.quorum.voters={voters}",
            # A SIGKILLed broker stays in every ISR until the controller fences it, and acks=all waits for it so
            # long: fence after 2.5 s without a heartbeat (Kafka's default: 9 s) so that a crash stalls writes less.
            # A new quorum leader is elected once its followers have fetched nothing for 1 s (default 2 s); it then
            # gives every broker a whole session before fencing one.
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=2500",
            "controller.quorum.fetch.timeout.ms=1000",
        ]

    def _java_command(self, main_class: str, *args: str, heap: str | None = None) -> list[str]:
        libs = install_kafka_jars()
        return [
            require("java"),
            f"-Xms{heap or self.heap}",
            f"-Xmx{heap or self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def tool_command(self, main_class: str, *args: str) -> list[str]:
        """One of Kafka's command-line tools (kafka-metadata-quorum's MetadataQuorumCommand, ...) with a small heap."""
        return self._java_command(main_class, *args, heap="128m")

    def tool_login(self) -> list[str]:
        """The options that make a Kafka tool connect as `admin` (secured mode; none in plaintext)."""
        if not self.secure:
            return []
        login = self.admin_security
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        config = self.run_dir / "admin-tool.properties"
        write_private(
            config,
            f"security.protocol={login.security_protocol}\nsasl.mechanism={login.sasl_mechanism}\n"
            f'sasl.jaas.config={scram} required username="{login.sasl_username}" '
            f'password="{login.sasl_password.get_secret_value()}";\n'
            f"ssl.truststore.type=PEM\nssl.truststore.location={login.ssl_ca_location}\n",
        )
        return ["--command-config", str(config)]

    def prepare(self) -> None:
        self.config_file.write_text(self.properties())
        (self.run_dir / "log4j.properties").write_text(LOG4J_PROPERTIES)
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
        users = []
        for name in KAFKA_SUPER_USERS if self.secure else ():  # the node's own user and the one that sets up
            users += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={self.secure.kafka_password(name)}]"]
        # Alone, the node is its own quorum (--standalone); in a cluster the static controller.quorum.voters is.
        standalone = ["--standalone"] if self.voters is None else []
        command = self._java_command(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file), *standalone, *users
        )
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalRuntimeError(f"formatting Kafka storage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        log.info("formatted KRaft storage in %s (cluster id %s)", self.data_dir, cluster_id)

    def command(self) -> list[str]:
        return self._java_command("kafka.Kafka", str(self.config_file))

    def answers(self) -> bool:
        return kafka_answers(self.bootstrap_servers, self.admin_security, None if self.voters is None else self.node_id)


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


def kafka_answers(bootstrap_servers: str, security: KafkaSecurity, node_id: int | None = None) -> bool:
    """Whether a broker at `bootstrap_servers` returns cluster metadata within 2 s (as `security`'s identity) that
    lists broker `node_id` when given: a node of a cluster is back once the controller counts it again."""
    from confluent_kafka.admin import AdminClient

    from common.kafka import client_config

    admin = AdminClient(client_config(bootstrap_servers, security, log_level=0))
    try:
        metadata = admin.list_topics(timeout=2)
    except Exception:
        return False
    return node_id in metadata.brokers if node_id is not None else bool(metadata.brokers)


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
