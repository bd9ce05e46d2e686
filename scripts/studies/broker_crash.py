"""Broker crash: what an MQTT broker keeps of acknowledged QoS 1 messages across a SIGKILL, and what that costs.

    python -m scripts.studies.broker_crash [--brokers NAME ...] [--parts PART ...] [--out broker-crash.json]

For each broker configuration (Mosquitto 2.0 with several autosave settings; Mochi MQTT 2.7.9 with its badger
store, with and without fsync; HiveMQ CE embedded with its file persistence, scripts/runtime/hivemq.py; `--help`
lists them):

features   what the bridge needs, checked on the wire: MQTT 5 shared subscription split between two sessions; a
           persistent session (clean start off, session expiry) getting what was published while it was away;
           Receive Maximum honoured live, on session resume and while acknowledgements flow; unacknowledged
           messages sent again with DUP; all of them delivered once acknowledged; a shared subscription kept
           across a graceful restart (PUBACK codes and deliveries before the session subscribes again).
away       the bridge is away: a persistent MQTT 5 session subscribes to $share/car-bridge/cars/+ at QoS 1 and
           disconnects; a publisher sends --messages QoS 1 messages carrying (car_id, seq) and records each PUBACK;
           T s (--waits) after the last PUBACK the broker is SIGKILLed and started again on the same data; the
           session resumes and counts which acknowledged (car_id, seq) arrive. Each run starts a fresh broker, so
           Mosquitto's save timer starts about 0.3 s before the first PUBACK (close to the worst phase).
           `lost_max_age_s`: the oldest lost message's age at the kill (kill time - its PUBACK time).
running    a consumer session is connected with Receive Maximum --receive-maximum and acknowledges each message
           --ack-delay s late (by default after the kill: the bridge waiting for Kafka), so the broker holds a
           backlog; a publisher sends at --rate msg/s; the broker is SIGKILLed after --kill-after s and restarted;
           publisher and consumer reconnect (paho re-sends what was not acknowledged), the consumer then
           acknowledges at once; counted: acknowledged (car_id, seq) that never reached the consumer, split into
           those acknowledged before the kill (with their ages) and after the restart.
cost       publish throughput (one publisher, QoS 1, 100 in flight, --cost-seconds) and broker CPU per message
           (utime + stime from /proc/<pid>/stat) with --depths messages already queued for an offline session,
           restored from a prepared data folder (Mosquitto rewrites its whole database on every save, so its cost
           grows with the backlog; Mochi holds at most 65,535 per session, so its depth is cut to
           --mochi-max-depth).
limits     past the queue bound (Mosquitto: max_queued_bytes of 1,000 messages; Mochi: -max-inflight 1000), 2,000
           published to an offline session: the PUBACK codes the publisher saw, what the session got, the log line.

Mochi is built from scripts/studies/mochi/ with `go build` into .deps/mochi/ (git-ignored) when its binary is missing or
older than its sources. Figures depend on the machine and its load; the JSON (--out) holds every run.
See docs/reliability.md, "MQTT broker crash".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.errors import CarStreamError, LocalRuntimeError
from common.logs import setup_logging
from scripts.bench.context import process_cpu_seconds
from scripts.runtime.hivemq import HIVEMQ_VERSION, HiveMQNode
from scripts.runtime.local import ROOT, MosquittoNode, ServerProcess, free_port, port_in_use

log = logging.getLogger("broker_crash")

MOCHI_SOURCE = Path(__file__).resolve().parent / "mochi"
MOCHI_BINARY = ROOT / ".deps" / "mochi" / "mochi-broker"
SHARED_FILTER = "$share/car-bridge/cars/+"
# The cost runs restart the broker from a prepared backlog; Mosquitto 2.0 restores no shared subscription, so the
# backlog's session subscribes without one (queueing costs the same per client).
COST_FILTER = "cars/+"
SESSION_EXPIRY_S = 3600
PAYLOAD_BYTES = 600  # about one simulator reading as JSON
CARS = 10

DEFAULT_CONFIGS = [
    "mosquitto-autosave-5s",
    "mosquitto-autosave-1s",
    "mosquitto-every-change",
    "mochi-badger",
    "mochi-badger-fsync",
    "hivemq",
]
FIRST_OF_KIND = ("mosquitto-autosave-5s", "mochi-badger", "hivemq")  # where features and limits are checked

# Every setting the measurement depends on is named here, so that the figures do not move with mosquitto.conf.
MOSQUITTO_BASE = {"max_queued_messages": "0", "max_queued_bytes": "0", "max_inflight_messages": "10000"}


@dataclass(frozen=True)
class BrokerConfig:
    name: str
    kind: str  # "mosquitto", "mochi" or "hivemq"
    settings: dict
    describe: str


CONFIGS = {
    c.name: c
    for c in [
        BrokerConfig(
            "mosquitto-autosave-5s",
            "mosquitto",
            {"autosave_interval": "5", "autosave_on_changes": "false"},
            "Mosquitto, snapshot every 5 s (the setting before)",
        ),
        BrokerConfig(
            "mosquitto-autosave-1s",
            "mosquitto",
            {"autosave_interval": "1", "autosave_on_changes": "false"},
            "Mosquitto, snapshot every 1 s",
        ),
        BrokerConfig(
            "mosquitto-every-change",
            "mosquitto",
            {"autosave_interval": "1", "autosave_on_changes": "true"},
            "Mosquitto, snapshot after every loop iteration with a change",
        ),
        BrokerConfig(
            "mochi-badger",
            "mochi",
            {"store": "badger", "sync": False},
            "Mochi 2.7.9 + badger, a write per message event (in the mmap'd write-ahead log, no fsync)",
        ),
        BrokerConfig(
            "mochi-badger-fsync",
            "mochi",
            {"store": "badger", "sync": True},
            "Mochi 2.7.9 + badger, a write + fsync per message event",
        ),
        BrokerConfig(
            "mochi-pebble",
            "mochi",
            {"store": "pebble", "sync": False},
            "Mochi 2.7.9 + pebble NoSync (write-ahead log flushed in the background)",
        ),
        BrokerConfig(
            "mochi-bolt",
            "mochi",
            {"store": "bolt", "sync": False},
            "Mochi 2.7.9 + bolt (its hook stores no packet id: restored sessions cannot resume)",
        ),
        BrokerConfig(
            "hivemq",
            "hivemq",
            {"persistence": "file"},
            f"HiveMQ CE {HIVEMQ_VERSION} embedded, file persistence (the runtime's config.xml)",
        ),
    ]
}


# --- brokers ------------------------------------------------------------------------------------------------


def mqtt_listening(port: int, timeout: float = 1.0) -> bool:
    """Whether an MQTT broker on `port` answers a CONNECT with a CONNACK (MQTT 3.1.1, raw socket: cheap)."""
    client_id = f"probe-{uuid.uuid4().hex[:8]}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(bytes([0x10, len(variable)]) + variable)
            answer = sock.recv(4)
            sock.sendall(b"\xe0\x00")
    except OSError:
        return False
    return answer[:1] == b"\x20" and answer[3:4] == b"\x00"


class BenchMosquitto(MosquittoNode):
    """The stack's mosquitto.conf with the listener and paths of a run folder, and `settings` replacing its lines."""

    def __init__(self, run_dir: Path, port: int, settings: dict) -> None:
        super().__init__(run_dir, port)
        self.settings = {**MOSQUITTO_BASE, **settings}

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "mosquitto-data"

    def prepare(self) -> None:
        super().prepare()
        text = self.config_file.read_text()
        for key in self.settings:
            text = re.sub(rf"(?m)^{re.escape(key)}\s.*\n?", "", text)
        text += "".join(f"{key} {value}\n" for key, value in self.settings.items())
        self.config_file.write_text(text)

    def answers(self) -> bool:
        return mqtt_listening(self.port)


class BenchHiveMQ(HiveMQNode):
    """The runtime's HiveMQ, answering the cheap CONNECT probe; `max_queue_size` replaces its queue bound."""

    def __init__(self, run_dir: Path, port: int, max_queue_size: int | None = None) -> None:
        super().__init__(run_dir, port)
        self.max_queue_size = max_queue_size

    def prepare(self) -> None:
        super().prepare()
        if self.max_queue_size is not None:
            config = self.home / "conf" / "config.xml"
            text = re.sub(r"<max-queue-size>\d+<", f"<max-queue-size>{self.max_queue_size}<", config.read_text())
            config.write_text(text)

    def answers(self) -> bool:
        return mqtt_listening(self.port)


def build_mochi() -> Path:
    """Build scripts/studies/mochi/ into .deps/mochi/mochi-broker unless it is there and newer than its sources."""
    sources = [MOCHI_SOURCE / name for name in ("main.go", "go.mod", "go.sum")]
    if MOCHI_BINARY.exists() and all(MOCHI_BINARY.stat().st_mtime >= s.stat().st_mtime for s in sources):
        return MOCHI_BINARY
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if not go:
        raise LocalRuntimeError("`go` not found: Mochi is built from scripts/studies/mochi/ (Go 1.22+)")
    log.info("building Mochi from %s into %s", MOCHI_SOURCE, MOCHI_BINARY)
    MOCHI_BINARY.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [go, "build", "-o", str(MOCHI_BINARY), "."], cwd=MOCHI_SOURCE, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise LocalRuntimeError(
            f"go build of scripts/studies/mochi failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return MOCHI_BINARY


class MochiNode(ServerProcess):
    """scripts/studies/mochi's broker: Mochi MQTT with its bbolt store in `data_dir`."""

    def __init__(
        self, run_dir: Path, port: int, store: str = "badger", sync: bool = False, max_inflight: int = 65535
    ) -> None:
        super().__init__("mochi", run_dir, port)
        self.store = store
        self.sync = sync
        self.max_inflight = max_inflight

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "mochi-data"

    def prepare(self) -> None:
        build_mochi()

    def command(self) -> list[str]:
        return [
            str(MOCHI_BINARY),
            "-port",
            str(self.port),
            "-data",
            str(self.data_dir),
            "-store",
            self.store,
            f"-sync={str(self.sync).lower()}",
            f"-max-inflight={self.max_inflight}",
        ]

    def answers(self) -> bool:
        return mqtt_listening(self.port)


STARTED: list[ServerProcess] = []  # every broker made here, killed at the end whatever happened


def listen_port() -> int:
    """A free port below the ephemeral range (32768-60999 on Linux), so that no client's own end of a connection
    can take it while the broker is down between a SIGKILL and its restart."""
    for _ in range(200):
        port = random.randint(20_000, 32_000)
        if not port_in_use(port):
            return port
    return free_port()


def make_broker(config: BrokerConfig, run_dir: Path, **extra) -> ServerProcess:
    port = listen_port()
    if config.kind == "mosquitto":
        broker: ServerProcess = BenchMosquitto(run_dir, port, {**config.settings, **extra})
    elif config.kind == "hivemq":
        broker = BenchHiveMQ(run_dir, port, **extra)
    else:
        broker = MochiNode(run_dir, port, store=config.settings["store"], sync=config.settings["sync"], **extra)
    STARTED.append(broker)
    return broker


def up(broker: ServerProcess, timeout: float = 60.0) -> float:
    """Start and wait until it answers (polling every 20 ms); returns the seconds it took. Right after a SIGKILL
    the port stays taken for a moment (the killed broker's connections close once their peers answer): waited out."""
    started = time.monotonic()
    while port_in_use(broker.port) and time.monotonic() - started < 10:
        time.sleep(0.01)
    broker.start()
    while not broker.answers():
        if not broker.is_running():
            raise LocalRuntimeError(f"{broker.name} exited during start-up:\n{broker.tail_log()}")
        if time.monotonic() - started > timeout:
            raise LocalRuntimeError(f"{broker.name} did not answer within {timeout:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


# --- clients ------------------------------------------------------------------------------------------------


def payload(car: int, seq: int, root: str = "cars") -> tuple[str, bytes]:
    car_id = f"car-{car:05d}"
    head = {"car_id": car_id, "seq": seq}
    body = json.dumps({**head, "pad": ""})
    return f"{root}/{car_id}", json.dumps({**head, "pad": "x" * max(0, PAYLOAD_BYTES - len(body))}).encode()


def messages(count: int, start: int = 0, root: str = "cars") -> list[tuple[tuple[str, int], str, bytes]]:
    """(key, topic, payload) with key = (car_id, seq), spread over CARS cars, on `root`/<car_id>."""
    out = []
    for i in range(start, start + count):
        topic, body = payload(i % CARS, i // CARS, root)
        out.append(((f"car-{i % CARS:05d}", i // CARS), topic, body))
    return out


def key_of(body: bytes) -> tuple[str, int]:
    head = json.loads(body)
    return head["car_id"], head["seq"]


class Publisher:
    """One MQTT 5 QoS 1 publisher (paho, its network thread, reconnecting by itself): at most `window` messages
    unacknowledged; the time and reason code of every PUBACK are recorded. paho keeps what was not acknowledged and
    sends it again after a reconnect, as simulator/publisher.py relies on."""

    def __init__(self, port: int, window: int = 100) -> None:
        self.window = window
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(0)  # our own window below; paho's rescans its queue on every ack
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_publish = self._on_publish
        self.cond = threading.Condition()
        self.outstanding = 0
        self.sent = 0
        self.keys: dict[int, tuple[str, int]] = {}
        self.acks: list[tuple[int, int, float]] = []  # (mid, reason code, monotonic time)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties) -> None:
        self.acks.append(
            (mid, reason_code.value if hasattr(reason_code, "value") else int(reason_code), time.monotonic())
        )
        with self.cond:
            self.outstanding -= 1
            self.cond.notify()

    def publish(self, key: tuple[str, int] | None, topic: str, body: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.outstanding >= self.window:
                if time.monotonic() > deadline:
                    raise LocalRuntimeError(f"no PUBACK for {timeout:.0f} s ({self.outstanding} waiting)")
                self.cond.wait(0.5)
            self.outstanding += 1
        info = self.client.publish(topic, body, qos=1)  # not under self.cond: paho calls on_publish under its lock
        self.sent += 1
        if key is not None:
            self.keys[info.mid] = key

    def wait_acked(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.acks) < self.sent:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def acked(self) -> dict[tuple[str, int], float]:
        """(car_id, seq) -> PUBACK time, for PUBACKs with a success code (< 0x80)."""
        return {self.keys[mid]: t for mid, code, t in self.acks if code < 0x80 and mid in self.keys}

    def reason_codes(self) -> dict[str, int]:
        return {f"0x{code:02x}": n for code, n in sorted(Counter(code for _mid, code, _t in self.acks).items())}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Session:
    """The bridge's MQTT side in miniature: MQTT 5, a fixed client id, clean start off, session expiry, Receive
    Maximum, the shared subscription (made again on every connect, as the bridge does), manual acknowledgements,
    each sent `ack_delay` s after the message came (0: at once). Acknowledgements are tied to the connection the
    message came on."""

    def __init__(
        self,
        port: int,
        client_id: str,
        receive_maximum: int = 1000,
        ack_delay: float = 0.0,
        subscription: str = SHARED_FILTER,
    ):
        self.port = port
        self.subscription = subscription
        self.receive_maximum = receive_maximum
        self.ack_delay = ack_delay
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.received: Counter = Counter()
        self.dup_flags = 0
        self.generation = 0
        self.connects = 0
        self.session_present: list[bool] = []
        self.unacked = 0
        self.max_unacked = 0
        self.acking = True
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.last_message = time.monotonic()
        self.pending: deque = deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._acker = threading.Thread(target=self._ack_loop, daemon=True)

    def _on_connect(self, client, _userdata, flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            return
        with self._lock:
            self.generation += 1
            self.unacked = 0
            self.pending.clear()
        self.connects += 1
        self.session_present.append(bool(flags.session_present))
        client.subscribe(self.subscription, qos=1)
        self.connected.set()

    def _on_message(self, client, _userdata, message) -> None:
        self.last_message = time.monotonic()
        self.received[key_of(message.payload)] += 1
        self.dup_flags += int(message.dup)
        with self._lock:
            self.unacked += 1
            self.max_unacked = max(self.max_unacked, self.unacked)
            if not self.acking:
                return
            if self.ack_delay <= 0:
                self.unacked -= 1
                client.ack(message.mid, message.qos)
            else:
                self.pending.append((time.monotonic() + self.ack_delay, self.generation, message.mid, message.qos))

    def _ack_loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            due = []
            with self._lock:
                while self.pending and self.pending[0][0] <= now:
                    _t, generation, mid, qos = self.pending.popleft()
                    if generation == self.generation:
                        self.unacked -= 1
                        due.append((mid, qos))
            for mid, qos in due:
                self.client.ack(mid, qos)
            time.sleep(0.005)

    def connect(self, timeout: float = 10.0) -> Session:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = self.receive_maximum
        self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=False, properties=properties)
        self.client.loop_start()
        self._acker.start()
        if not self.connected.wait(timeout):
            raise LocalRuntimeError(f"session {self.client._client_id!r} did not connect within {timeout:.0f} s")
        if not self.subscribed.wait(timeout):
            raise LocalRuntimeError(
                f"no SUBACK for {self.client._client_id!r} on {self.subscription} within {timeout:.0f} s"
            )
        return self

    def set_ack_delay(self, delay: float) -> None:
        """From now on acknowledge after `delay` s; what waits is acknowledged on that schedule too."""
        with self._lock:
            self.ack_delay = delay
            due = time.monotonic() + delay
            self.pending = deque((min(t, due), g, mid, qos) for t, g, mid, qos in self.pending)

    def drain(self, expected: int, idle: float = 1.0, timeout: float = 60.0) -> None:
        """Until `expected` distinct keys came, or nothing came for `idle` s (after the first message or the start)."""
        started = time.monotonic()
        self.last_message = max(self.last_message, started)
        while len(self.received) < expected and time.monotonic() - started < timeout:
            if time.monotonic() - self.last_message > idle:
                break
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


def create_session(port: int, client_id: str, subscription: str = SHARED_FILTER) -> None:
    """Subscribe once and leave: from now on the broker queues for `client_id` while it is away."""
    Session(port, client_id, subscription=subscription).connect().close()


# --- measurements -------------------------------------------------------------------------------------------


@dataclass
class Run:
    work: Path
    config: BrokerConfig
    results: dict = field(default_factory=dict)

    def broker(self, label: str, **extra) -> ServerProcess:
        return make_broker(self.config, self.work / f"{self.config.name}-{label}-{uuid.uuid4().hex[:6]}", **extra)


def ages(keys, acked: dict, kill_time: float) -> list[float]:
    return sorted(round(kill_time - acked[k], 3) for k in keys)


def measure_away(run: Run, count: int, wait_s: float) -> dict:
    """Bridge away: N acknowledged messages queued for an offline session, SIGKILL `wait_s` s after the last PUBACK."""
    broker = run.broker(f"away-{wait_s:g}")
    up(broker)
    create_session(broker.port, "bridge-away")
    publisher = Publisher(broker.port)
    for key, topic, body in messages(count):
        publisher.publish(key, topic, body)
    assert publisher.wait_acked(), "the broker did not acknowledge every publish"
    last_ack = max(t for _m, _c, t in publisher.acks)
    time.sleep(max(0.0, last_ack + wait_s - time.monotonic()))
    kill_time = time.monotonic()
    broker.kill()
    publisher.close()
    restart_s = up(broker)
    session = Session(broker.port, "bridge-away").connect()
    acked = publisher.acked()
    session.drain(len(acked))
    session.close()
    broker.kill()
    lost = set(acked) - set(session.received)
    return {
        "wait_s": wait_s,
        "acknowledged": len(acked),
        "arrived": len(set(acked) & set(session.received)),
        "lost": len(lost),
        "lost_max_age_s": max(ages(lost, acked, kill_time), default=None),
        "kept_min_age_s": min(ages(set(acked) - lost, acked, kill_time), default=None),
        "session_present": session.session_present[:1] == [True],
        "restart_s": round(restart_s, 2),
    }


def measure_running(run: Run, rate: float, kill_after: float, after_s: float, ack_delay: float, rm: int) -> dict:
    """Consumer running and slow to acknowledge, publisher steady; SIGKILL mid-stream, restart, count."""
    broker = run.broker("running")
    up(broker)
    session = Session(broker.port, "bridge-running", receive_maximum=rm, ack_delay=ack_delay).connect()
    publisher = Publisher(broker.port, window=200)
    total = int(rate * (kill_after + after_s))
    stream = messages(total)
    killed = threading.Event()
    state: dict = {}

    def killer() -> None:
        time.sleep(kill_after)
        state["queued_at_kill"] = publisher.sent - len(session.received)
        state["kill_time"] = time.monotonic()
        broker.kill()
        killed.set()
        state["restart_s"] = up(broker)

    thread = threading.Thread(target=killer, daemon=True)
    started = time.monotonic()
    thread.start()
    for i, (key, topic, body) in enumerate(stream):
        ahead = started + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        publisher.publish(key, topic, body)
    thread.join()
    session.set_ack_delay(0.0)  # the bridge's Kafka is back: drain what the broker still has
    acked_ok = publisher.wait_acked(timeout=60)
    acked = publisher.acked()
    session.drain(len(acked), idle=2.0)
    publisher.close()
    session.close()
    broker.kill()
    kill_time = state["kill_time"]
    lost = set(acked) - set(session.received)
    before = {k for k in lost if acked[k] <= kill_time}
    after = lost - before
    return {
        "published": total,
        "acknowledged": len(acked),
        "all_acknowledged": acked_ok,
        "puback_reason_codes": publisher.reason_codes(),
        "reached_consumer": len(set(acked) & set(session.received)),
        "lost": len(lost),
        "lost_acknowledged_before_kill": len(before),
        "lost_max_age_s": max(ages(before, acked, kill_time), default=None),
        "lost_min_age_s": min(ages(before, acked, kill_time), default=None),
        "lost_acknowledged_after_restart": len(after),
        "backlog_at_kill": state.get("queued_at_kill"),
        "duplicates": sum(n - 1 for n in session.received.values() if n > 1),
        "restart_s": round(state["restart_s"], 2),
    }


def prefill(config: BrokerConfig, work: Path, depths: list[int]) -> dict[int, Path]:
    """Data folders holding a backlog of each depth for the offline session "bridge-cost" (subscribed to
    COST_FILTER; written by a graceful stop, with saving off meanwhile for Mosquitto); one per on-disk format,
    copied for each run."""
    kind = config.kind
    label = f"{kind}-{config.settings.get('store', 'db')}"
    filler = BrokerConfig(
        f"{label}-filler",
        kind,
        {"autosave_interval": "0", "autosave_on_changes": "false"} if kind == "mosquitto" else config.settings,
        "",
    )
    broker = make_broker(filler, work / f"{label}-prefill")
    up(broker)
    create_session(broker.port, "bridge-cost", COST_FILTER)
    snapshots, queued = {}, 0
    for depth in sorted(depths):
        started = time.monotonic()
        publisher = Publisher(broker.port, window=500)
        for _key, topic, body in messages(depth - queued, start=queued):
            publisher.publish(None, topic, body)
        assert publisher.wait_acked(timeout=300)
        publisher.close()
        log.info(
            "%s: %d queued (%.0f msg/s while filling)", label, depth, (depth - queued) / (time.monotonic() - started)
        )
        queued = depth
        broker.stop(timeout=120)
        snapshot = work / f"{label}-snapshot-{depth}"
        shutil.copytree(broker.data_dir, snapshot)
        snapshots[depth] = snapshot
        up(broker)
    broker.kill()
    return snapshots


def measure_cost(run: Run, snapshot: Path, depth: int, seconds: float) -> dict:
    """Publish at full speed for `seconds` with `depth` messages already queued: PUBACKs per second and broker
    CPU per acknowledged message, both over those `seconds`."""
    broker = run.broker(f"cost-{depth}")
    shutil.copytree(snapshot, broker.data_dir)
    load_s = up(broker, timeout=180)
    pid = broker.pid()
    rss_loaded = rss_mb(pid)
    publisher = Publisher(broker.port, window=100)
    cpu_start, started = process_cpu_seconds(pid), time.monotonic()
    deadline = started + seconds
    index = 10_000_000  # fresh seqs, never those of the backlog
    while time.monotonic() < deadline:
        if publisher.outstanding >= publisher.window:
            time.sleep(0.0005)
            continue
        topic, body = payload(index % CARS, index // CARS)
        publisher.publish(None, topic, body)
        index += 1
    # Counted at the deadline: PUBACKs received within `seconds`, and the broker's CPU time meanwhile.
    count = len(publisher.acks)
    elapsed = time.monotonic() - started
    cpu = process_cpu_seconds(pid) - cpu_start
    rss_end = rss_mb(pid)
    publisher.close()
    broker.kill()
    if set(publisher.reason_codes()) != {"0x00"}:
        raise LocalRuntimeError(f"not every publish was queued: PUBACK codes {publisher.reason_codes()}")
    return {
        "depth": depth,
        "published": count,
        "msgs_per_s": round(count / elapsed, 1),
        "broker_cpu_us_per_msg": round(cpu / count * 1e6, 1),
        "broker_cpu_share": round(cpu / elapsed, 3),
        "load_s": round(load_s, 2),
        "rss_mb_loaded": round(rss_loaded, 1),
        "rss_mb_end": round(rss_end, 1),
        "reason_codes": publisher.reason_codes(),
    }


def measure_limits(run: Run, count: int = 2000) -> dict:
    """Past the queue bound: a bound of 1,000 messages' worth for an offline session, `count` published."""
    if run.config.kind == "mosquitto":
        broker = run.broker("limit", max_queued_bytes=str(1000 * PAYLOAD_BYTES))
        bound = f"max_queued_bytes {1000 * PAYLOAD_BYTES} ({PAYLOAD_BYTES}-byte payloads)"
    elif run.config.kind == "hivemq":
        broker = run.broker("limit", max_queue_size=1000)
        bound = "<max-queue-size>1000"
    else:
        broker = run.broker("limit", max_inflight=1000)
        bound = "-max-inflight 1000"
    up(broker)
    create_session(broker.port, "bridge-limit")
    publisher = Publisher(broker.port)
    for key, topic, body in messages(count):
        publisher.publish(key, topic, body)
    publisher.wait_acked()
    publisher.close()
    session = Session(broker.port, "bridge-limit").connect()
    session.drain(count, idle=1.0)
    session.close()
    broker.kill()
    log_file = broker.run_dir / "logs" / "mosquitto.log" if run.config.kind == "mosquitto" else broker.log_file
    log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
    dropped_lines = [line for line in log_text.splitlines() if re.search(r"dropp|quota", line, re.I)]
    return {
        "bound": bound,
        "published": count,
        "puback_reason_codes": publisher.reason_codes(),
        "arrived": len(session.received),
        "broker_log_on_drop": dropped_lines[0][-160:] if dropped_lines else None,
        "broker_log_drop_lines": len(dropped_lines),
    }


def measure_features(run: Run) -> dict:
    """What the bridge needs from the broker, each checked on the wire (each check on a topic of its own)."""
    broker = run.broker("features")
    up(broker)
    port, out = broker.port, {}
    publisher = Publisher(port)

    def publish(count: int, root: str) -> None:
        for key, topic, body in messages(count, root=root):
            publisher.publish(key, topic, body)
        publisher.wait_acked()

    # Shared subscription: two sessions of one group split the messages, each message goes to one of them.
    share = "$share/car-bridge/share/+"
    a, b = (
        Session(port, "share-a", subscription=share).connect(),
        Session(port, "share-b", subscription=share).connect(),
    )
    publish(200, "share")
    a.drain(200, idle=0.5)
    b.drain(200 - len(a.received), idle=0.5)
    out["mqtt5_shared_subscription_split"] = [len(a.received), len(b.received)]
    out["mqtt5_shared_subscription"] = (
        min(len(a.received), len(b.received)) > 0
        and not set(a.received) & set(b.received)
        and len(a.received) + len(b.received) == 200
    )
    a.close()
    b.close()
    # Persistent session with session expiry: what came while it was away is delivered on resume.
    persist = "$share/car-bridge/persist/+"
    create_session(port, "persist", persist)
    publish(50, "persist")
    s = Session(port, "persist", subscription=persist).connect()
    s.drain(50, idle=0.5)
    out["persistent_session_resumed"] = s.session_present[0] and len(s.received) == 50
    s.close()
    # Receive Maximum live: 10 announced, nothing acknowledged, 100 published: the broker stops at 10.
    recvmax = "$share/car-bridge/recvmax/+"
    s = Session(port, "recvmax", receive_maximum=10, subscription=recvmax)
    s.acking = False
    s.connect()
    publish(100, "recvmax")
    time.sleep(0.5)
    out["receive_maximum_live_max_unacked"] = s.max_unacked
    s.close()
    # ... and on resume: 100 waiting (10 sent and never acknowledged, 90 queued), Receive Maximum 10 again.
    s = Session(port, "recvmax", receive_maximum=10, subscription=recvmax)
    s.acking = False
    s.connect()
    time.sleep(0.5)
    out["receive_maximum_resume_max_unacked"] = s.max_unacked
    # Manual acknowledgement: what the session never acknowledged comes again, flagged DUP.
    out["unacked_redelivered_with_dup"] = s.dup_flags > 0
    s.close()
    s = Session(port, "recvmax", receive_maximum=1000, subscription=recvmax).connect()
    s.drain(100, idle=1.0)
    out["delivered_of_100_once_acknowledged"] = len(s.received)
    s.close()
    # Receive Maximum while acknowledgements flow: 10 announced, each acknowledged 0.2 s late, 300 published.
    flowing = "$share/car-bridge/flowing/+"
    s = Session(port, "flowing", receive_maximum=10, ack_delay=0.2, subscription=flowing).connect()
    publish(300, "flowing")
    s.drain(300, idle=1.0)
    out["receive_maximum_acks_flowing_max_unacked"] = s.max_unacked
    s.close()
    # A session's shared subscription across a graceful restart: published before the session subscribes again.
    kept = "$share/car-bridge/kept/+"
    create_session(port, "kept", kept)
    publisher.close()
    broker.stop()
    up(broker)
    publisher = Publisher(port)
    publish(100, "kept")
    s = Session(port, "kept", subscription="not/subscribed/again").connect()
    s.drain(100, idle=1.0)
    out["shared_subscription_after_restart_puback_codes"] = publisher.reason_codes()
    out["shared_subscription_after_restart_delivered_of_100"] = len(s.received)
    s.close()
    publisher.close()
    broker.kill()
    out["receive_maximum_honoured"] = all(
        out[k] <= 10
        for k in (
            "receive_maximum_live_max_unacked",
            "receive_maximum_resume_max_unacked",
            "receive_maximum_acks_flowing_max_unacked",
        )
    )
    return out


# --- driver -------------------------------------------------------------------------------------------------


def summary_rows(results: dict) -> list[dict]:
    """One row per configuration: the window seen, throughput and CPU per message at each depth."""
    rows = []
    for name, r in results["configs"].items():
        away = r.get("away", [])
        lost_ages = [x["lost_max_age_s"] for x in away if x.get("lost_max_age_s") is not None]
        running = r.get("running") or {}
        if running.get("lost_max_age_s") is not None:
            lost_ages.append(running["lost_max_age_s"])
        row = {
            "config": name,
            "away_lost_by_wait_s": {
                f"{x['wait_s']:g}": f"{x['lost']}/{x['acknowledged']}" if "lost" in x else x.get("error") for x in away
            },
            "running_lost": f"{running.get('lost')}/{running.get('acknowledged')}" if running else None,
            "window_s_max_lost_age": max(lost_ages, default=0.0),
        }
        for cost in r.get("cost", []):
            row[f"msgs_per_s@{cost['depth']}"] = cost["msgs_per_s"]
            row[f"cpu_us_per_msg@{cost['depth']}"] = cost["broker_cpu_us_per_msg"]
        rows.append(row)
    return rows


def print_summary(results: dict) -> None:
    print("\nMQTT broker crash (SIGKILL): acknowledged QoS 1 messages lost, and the cost of keeping them")
    for row in summary_rows(results):
        print(f"\n  {row.pop('config')}")
        for key, value in row.items():
            print(f"    {key:28s} {value}")
    for name, r in results["configs"].items():
        if "features" in r:
            print(f"\n  {name} features: {r['features']}")
        if "limits" in r:
            print(f"  {name} past the bound: {r['limits']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.studies.broker_crash",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--brokers", nargs="*", choices=list(CONFIGS), default=DEFAULT_CONFIGS, help="configurations")
    parser.add_argument(
        "--parts",
        nargs="*",
        choices=["features", "away", "running", "cost", "limits"],
        default=["features", "away", "running", "cost", "limits"],
        help="what to measure",
    )
    parser.add_argument("--messages", type=int, default=1000, help="away: acknowledged messages queued before the kill")
    parser.add_argument(
        "--waits",
        type=float,
        nargs="*",
        default=[0, 1, 2, 5, 6],
        help="away: seconds between the last PUBACK and the SIGKILL",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="running: publish rate, msg/s")
    parser.add_argument("--kill-after", type=float, default=3.0, help="running: SIGKILL this many seconds in")
    parser.add_argument("--after", type=float, default=1.0, help="running: seconds of publishing after the kill")
    parser.add_argument(
        "--ack-delay",
        type=float,
        default=5.0,
        help="running: the consumer acknowledges this late (beyond --kill-after: Kafka is out)",
    )
    parser.add_argument("--receive-maximum", type=int, default=100, help="running: the consumer's Receive Maximum")
    parser.add_argument(
        "--depths",
        type=int,
        nargs="*",
        default=[10_000, 100_000],
        help="cost: backlogs queued before measuring (Mochi: capped at --mochi-max-depth)",
    )
    parser.add_argument(
        "--mochi-max-depth",
        type=int,
        default=50_000,
        help="cost: Mochi holds at most 65,535 per session; deeper backlogs are cut to this",
    )
    parser.add_argument("--cost-seconds", type=float, default=5.0, help="cost: publishing time per measurement")
    parser.add_argument("--out", type=Path, help="write the JSON here (it is printed too)")
    parser.add_argument("--work-dir", type=Path, help="keep the brokers' folders here (default: a temporary one)")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("scripts.runtime.local").setLevel(logging.WARNING)

    started = time.monotonic()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="broker-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": "python -m scripts.studies.broker_crash " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "mosquitto": subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0],
        "mochi": "github.com/mochi-mqtt/server/v2 v2.7.9 with a storage hook (scripts/studies/mochi/main.go)",
        "hivemq": f"HiveMQ CE {HIVEMQ_VERSION} embedded (scripts/runtime/hivemq/)",
        "configs": {},
    }
    snapshots: dict[str, dict[int, Path]] = {}

    def attempt(result: dict, part: str, measure, *measure_args) -> None:
        """One measurement; a failure is recorded in the JSON and the run goes on."""
        try:
            result[part] = measure(*measure_args)
        except Exception as exc:  # a broker that misbehaves is a finding, not the end of the run
            log.exception("%s failed", part)
            result[part] = {"error": f"{type(exc).__name__}: {exc}"}

    try:
        for name in args.brokers:
            config = CONFIGS[name]
            run = Run(work, config)
            results["configs"][name] = r = {"describe": config.describe, "settings": config.settings}
            first_of_kind = name in FIRST_OF_KIND or name == args.brokers[0]
            if "features" in args.parts and first_of_kind:
                log.info("%s: features", name)
                attempt(r, "features", measure_features, run)
                log.info("%s: features: %s", name, r["features"])
            if "away" in args.parts:
                r["away"] = []
                for wait in args.waits:
                    attempt(r, "_away", measure_away, run, args.messages, wait)
                    r["away"].append({"wait_s": wait, **r.pop("_away")})
                    log.info("%s: away, SIGKILL %g s after the last PUBACK: %s", name, wait, r["away"][-1])
            if "running" in args.parts:
                attempt(
                    r,
                    "running",
                    measure_running,
                    run,
                    args.rate,
                    args.kill_after,
                    args.after,
                    args.ack_delay,
                    args.receive_maximum,
                )
                log.info("%s: running, SIGKILL mid-stream: %s", name, r["running"])
            if "cost" in args.parts:
                depths = sorted({min(d, args.mochi_max_depth) if config.kind == "mochi" else d for d in args.depths})
                store = f"{config.kind}-{config.settings.get('store', 'db')}"  # one snapshot per on-disk format
                if store not in snapshots:
                    snapshots[store] = prefill(config, work, depths)
                r["cost"] = []
                for depth in depths:
                    attempt(r, "_cost", measure_cost, run, snapshots[store][depth], depth, args.cost_seconds)
                    r["cost"].append({"depth": depth, **r.pop("_cost")})
                    log.info("%s: cost at %d queued: %s", name, depth, r["cost"][-1])
            if "limits" in args.parts and first_of_kind:
                attempt(r, "limits", measure_limits, run)
                log.info("%s: past the bound: %s", name, r["limits"])
    except CarStreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for broker in STARTED:
            broker.kill()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    results["summary"] = summary_rows(results)
    results["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    print_summary(results)
    print(f"\n{results['seconds']:.0f} s" + (f"; JSON in {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
