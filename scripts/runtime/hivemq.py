"""HiveMQ Community Edition as the MQTT broker of the local runtime (MQTT_BROKER=hivemq): the embedded broker built
from scripts/runtime/hivemq/ (`make setup`: target/car-hivemq.jar beside its lib/), run as a process of its own with
a home folder under the run folder that this module prepares:

    <run dir>/hivemq/conf/config.xml   the listener, file persistence, queue limits (written at every start)
    <run dir>/hivemq/data/             sessions and queued messages, kept across restarts and crashes
    <run dir>/hivemq/extensions/       empty: HiveMQ wants the folder

HiveMQ persists every session and queued QoS 1 message in its data folder (`<persistence><mode>file`); how much of
that a SIGKILL keeps is measured in docs/reliability.md ("MQTT broker crash").
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from common.errors import LocalRuntimeError
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
# QoS 1 publishes a client may have in flight towards the broker (MQTT 5 Receive Maximum; default 10): the
# simulator and the bench keep hundreds in flight.
SERVER_RECEIVE_MAXIMUM = 1000
MAX_PACKET_SIZE = 1_048_576  # as Mosquitto's max_packet_size


def hivemq_xml(port: int) -> str:
    """HiveMQ's configuration: one TCP listener on loopback, file persistence, the limits above, no statistics
    sent anywhere."""
    return f"""\
<?xml version="1.0"?>
<!-- Written by scripts/runtime/hivemq.py at every start; edits here are lost. -->
<hivemq>
    <listeners>
        <tcp-listener>
            <port>{port}</port>
            <bind-address>127.0.0.1</bind-address>
        </tcp-listener>
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
    per client; its home folder under the run folder."""

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
        if self.secure:
            raise LocalRuntimeError("HiveMQ does not run in the secured mode yet; use MQTT_BROKER=mosquitto")
        conf = self.home / "conf"
        conf.mkdir(parents=True, exist_ok=True)
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
        ]

    def answers(self) -> bool:
        return mqtt_round_trip("127.0.0.1", self.port, secure=self.secure)
