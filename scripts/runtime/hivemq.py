"""HiveMQ Community Edition as the MQTT broker of the local runtime (MQTT_BROKER=hivemq): the embedded broker built
from scripts/runtime/hivemq/ (`make setup`: target/car-hivemq.jar beside its lib/), run as a process of its own with
a home folder under the run folder that this module prepares:

    <run dir>/hivemq/conf/config.xml   the listener, file persistence, queue limits (written at every start)
    <run dir>/hivemq/data/             sessions and queued messages, kept across restarts and crashes
    <run dir>/hivemq/extensions/       empty: HiveMQ wants the folder

Secured (SecureMaterial): the home is <run dir>/hivemq-secured, the one listener is TLS only with the server
certificate of scripts/runtime/secured.py (conf/server.p12, a PKCS#12 key store made from its PEM files), and our
embedded extension (FileSecurity.java) checks every login against Mosquitto's password file and every topic against
its ACL file: the same per-car secrets and the same policy (admin/policy.py) as Mosquitto.

HiveMQ persists every session and queued QoS 1 message in its data folder (`<persistence><mode>file`); how much of
that a SIGKILL keeps is measured in docs/reliability.md ("MQTT broker crash").
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from common.errors import LocalRuntimeError
from common.security import new_secret, write_private
from scripts.runtime.local import ServerProcess, mqtt_round_trip, require
from scripts.runtime.secured import SecureMaterial

log = logging.getLogger(__name__)

MODULE = Path(__file__).resolve().parent / "hivemq"
POM = MODULE / "pom.xml"
JAR = MODULE / "target" / "car-hivemq.jar"
HIVEMQ_VERSION = re.search(r"<hivemq.version>([^<]+)</hivemq.version>", POM.read_text()).group(1)

# Queued messages per client session (the bridge's, while it or Kafka is away). HiveMQ's default of 1,000 would drop
# readings during a Kafka outage; as with Mosquitto's max_queued_messages, the bound is far above what an outage of
# minutes needs. The queue lives in the data folder, not the heap. Past it, `discard` drops the new message.
MAX_QUEUED_MESSAGES = 2_000_000
# QoS 1 publishes a client may have in flight towards the broker (MQTT 5 Receive Maximum; default 10), as Mosquitto's
# max_inflight_messages: paho sends everything unacknowledged at once after a reconnect (measured: 2,000 after a
# broker restart), and HiveMQ disconnects a client past the bound ("Receive maximum exceeded"), which then sends it
# all again.
SERVER_RECEIVE_MAXIMUM = 10_000
MAX_PACKET_SIZE = 1_048_576  # as Mosquitto's max_packet_size


def hivemq_xml(
    port: int, keystore: Path | None = None, keystore_password: str = "", bind_address: str = "127.0.0.1"
) -> str:
    """HiveMQ's configuration: one listener on `bind_address` (loopback here; every interface in its container image),
    TLS with `keystore`, plain TCP without; file persistence, the limits above, no statistics sent anywhere."""
    if keystore is None:
        listener = f"""<tcp-listener>
            <port>{port}</port>
            <bind-address>{bind_address}</bind-address>
        </tcp-listener>"""
    else:
        listener = f"""<tls-tcp-listener>
            <port>{port}</port>
            <bind-address>{bind_address}</bind-address>
            <tls>
                <keystore>
                    <path>{keystore}</path>
                    <password>{keystore_password}</password>
                    <private-key-password>{keystore_password}</private-key-password>
                </keystore>
                <protocols><protocol>TLSv1.3</protocol><protocol>TLSv1.2</protocol></protocols>
                <client-authentication-mode>NONE</client-authentication-mode>
            </tls>
        </tls-tcp-listener>"""
    return f"""\
<?xml version="1.0"?>
<!-- Written by scripts/runtime/hivemq.py (at every start; for the image, by `make images`): edits here are lost. -->
<hivemq>
    <listeners>
        {listener}
    </listeners>
    <mqtt>
        <queued-messages>
            <max-queue-size>{MAX_QUEUED_MESSAGES}</max-queue-size>
            <strategy>discard</strategy>
        </queued-messages>
        <receive-maximum>
            <server-receive-maximum>{SERVER_RECEIVE_MAXIMUM}</server-receive-maximum>
        </receive-maximum>
        <packets>
            <max-packet-size>{MAX_PACKET_SIZE}</max-packet-size>
        </packets>
    </mqtt>
    <persistence>
        <mode>file</mode>
    </persistence>
    <anonymous-usage-statistics>
        <enabled>false</enabled>
    </anonymous-usage-statistics>
</hivemq>
"""


def write_keystore(secure: SecureMaterial, path: Path) -> str:
    """The server's key and certificate (with the CA's) as a PKCS#12 key store, the form HiveMQ reads; returns its
    password, new at every start."""
    password = new_secret()
    key = serialization.load_pem_private_key(secure.server_key.read_bytes(), password=None)
    certificate = x509.load_pem_x509_certificate(secure.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(secure.ca_file.read_bytes())
    encryption = serialization.BestAvailableEncryption(password.encode())
    write_private(path, pkcs12.serialize_key_and_certificates(b"hivemq", key, certificate, [ca], encryption))
    return password


def build_hivemq() -> Path:
    """Build the embedded broker with Maven unless its jar is newer than its sources (`make setup` builds it)."""
    sources = [POM, *MODULE.joinpath("src").rglob("*.java")]
    if JAR.exists() and all(JAR.stat().st_mtime >= source.stat().st_mtime for source in sources):
        return JAR
    mvn = require("mvn")
    log.info("building HiveMQ CE %s (embedded) with Maven into %s", HIVEMQ_VERSION, JAR.parent)
    result = subprocess.run([mvn, "-B", "-q", "-f", str(POM), "package"], capture_output=True, text=True)
    if result.returncode != 0:
        raise LocalRuntimeError(f"Maven could not build {MODULE}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return JAR


class HiveMQNode(ServerProcess):
    """HiveMQ CE embedded (scripts/runtime/hivemq/) with file persistence and queues far above its default of 1,000
    per client; its home folder under the run folder. With `secure` material: TLS only, a password per car, ACLs."""

    moved_by = "MQTT_PORT=1884"

    def __init__(self, run_dir: Path, port: int, secure: SecureMaterial | None = None, heap: str = "1g") -> None:
        super().__init__("hivemq", run_dir, port)
        self.secure = secure
        self.heap = heap

    @property
    def home(self) -> Path:
        return self.run_dir / ("hivemq-secured" if self.secure else "hivemq")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def prepare(self) -> None:
        conf = self.home / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        if self.secure:
            keystore = conf / "server.p12"
            config = hivemq_xml(self.port, keystore, write_keystore(self.secure, keystore))
            write_private(conf / "config.xml", config)  # it holds the key store's password
        else:
            (conf / "config.xml").write_text(hivemq_xml(self.port))

    def command(self) -> list[str]:
        return [
            require("java"),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-Djava.awt.headless=true",
            "-jar",
            str(build_hivemq()),
            "--home",
            str(self.home),
            *(["--password-file", str(self.secure.mosquitto_passwd)] if self.secure else []),
            *(["--acl-file", str(self.secure.mosquitto_acl)] if self.secure else []),
        ]

    def answers(self) -> bool:
        return mqtt_round_trip("127.0.0.1", self.port, secure=self.secure)
