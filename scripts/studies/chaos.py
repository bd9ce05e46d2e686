"""Chaos soak: a steady QoS 1 load through the whole stack while Mosquitto, Kafka, the bridge and the predictor are
SIGKILLed and started again in turn; every reading counted end to end.

What it does:
  1. A private Kafka (one broker, or with --brokers 3 a three-broker cluster whose topics keep 3 copies, min ISR 2)
     and Mosquitto on free ports (below the ephemeral range) in a folder of this run, the topics
     car-sensor (4 partitions), car-sensor-predictions (4) and car-sensor-dlq, and a small model, trained as the
     e2e benchmark does (`python -m ml train --epochs 2` on simulator readings written to Kafka) unless
     --model-dir names one.
  2. One bridge and one predictor as child processes, configured as compose runs them, with a fixed MQTT client
     id and consumer group, so that a restarted one resumes the killed one's session and offsets (--static-member
     adds a static group member id, ML_INSTANCE_ID, to the predictor). The load runs in this
     process: paho, MQTT 5, QoS 1, at most --window publishes unacknowledged, full simulator readings whose
     event_time is the moment the reading was handed to paho. paho sends again whatever the broker has not
     acknowledged after each reconnect.
  3. Every --kill-every seconds the next target in turn (mosquitto, kafka, bridge, predictor) gets SIGKILL, stays
     down --down-seconds, and is started again on the same ports, data folders, client id and group. On a
     cluster, a Kafka turn kills one broker: the controller quorum's leader on every other Kafka turn (found by
     KRaft's DescribeQuorum just before), another broker in between. A service
     that exits by itself is started again too, and listed under unexpected_exits.
  4. After --minutes the load stops; once the predictor has caught up (at most --drain-timeout) both topics are
     read whole and counted.

Figures (key "chaos" of the --out JSON; its other keys are kept):
  published        distinct (car_id, seq) the broker acknowledged (PUBACK with a success code)
  in_kafka         distinct (car_id, seq) on car-sensor
  predicted        distinct (car_id, seq) on car-sensor with a prediction on car-sensor-predictions
  lost             acknowledged but not on car-sensor; each is attributed to the kill nearest to its PUBACK
  lost_acknowledged_no_subscribers
                   of those, the ones the broker acknowledged with reason code 0x10 (no matching subscribers):
                   it had no subscription for the reading when it took it
  unpredicted      on car-sensor without a prediction
  duplicates_kafka, duplicates_predictions
                   records beyond the first per (car_id, seq), on each topic
  kills            per kill: target (on a cluster the broker: "kafka-2 (quorum leader)"), at_s (seconds since
                   the load started), restarted_at_s, recovery_s, and the lost readings attributed to it (lost,
                   lost_acked_s: the first and last one's PUBACK in seconds relative to the SIGKILL, negative
                   before it), and the duplicates written after it and before the next kill (duplicates_kafka,
                   duplicates_predictions)
  worst_recovery_s the longest recovery_s
Recovery of a kill: from the SIGKILL until the first prediction (its predicted_at) of a reading published (its
event_time) after the target was started again, i.e. until fresh readings flow end to end again. It includes the
time down, the start-up, reconnects and the backlog ahead of that reading in its partition.

Exit code 0 when the soak ran, readings lost or not (the figures tell); 1 when the harness failed; 130 on Ctrl-C.
Everything started here is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import logging
import random
import re
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from rich.console import Console
from rich.table import Table

from common import schemas
from common.avro import AvroCodec
from common.errors import DecodeError, LocalRuntimeError
from common.kafka import ensure_topics
from common.logs import setup_logging
from common.settings import KafkaSecurity
from common.topics import DLQ_TOPIC, PREDICTIONS_TOPIC, READINGS_TOPIC, mqtt_topic
from scripts.bench.context import BenchContext
from scripts.bench.e2e import small_model_dir
from scripts.demo.stream_watch import StreamState, StreamWatcher, end_offsets
from scripts.demo.summary import latest_model_metadata, percentile
from scripts.runtime.kafka_cluster import KafkaCluster
from scripts.runtime.local import (
    BROKER_CHOICES,
    DEFAULT_RUN_DIR,
    KafkaNode,
    MosquittoNode,
    ServerProcess,
    brokers_asked,
    port_in_use,
)
from scripts.runtime.services import Service, ServiceGroup, service_env, wait_for
from scripts.testkit.kafka import read_to_end
from simulator.fleet import Fleet
from simulator.payload import encode_reading

log = logging.getLogger("chaos")

TARGETS = ("mosquitto", "kafka", "bridge", "predictor")
PARTITIONS = 4
Key = tuple[str, int]


def listen_port(taken: set[int]) -> int:
    """A free port below Linux's ephemeral range (32768-60999): while a server is down after its SIGKILL, no
    client's reconnect attempt can take its port as its own end (or connect to itself through it)."""
    for _ in range(500):
        port = random.randint(20_000, 32_000)
        if port not in taken and not port_in_use(port):
            taken.add(port)
            return port
    raise LocalRuntimeError("no free port between 20000 and 32000")


# --- load ---------------------------------------------------------------------------------------------------


class Load:
    """Publishes `rate` readings/s of `cars` cars at QoS 1 from a thread; records which (car_id, seq) the broker
    acknowledged, and when.

    The window is ours (paho's in-flight limit rescans its queue on every PUBACK): at most `window` publishes
    unacknowledged, the load waits beyond that (a broker outage stalls it instead of piling readings up). paho keeps
    every unacknowledged QoS 1 message and sends it again after each reconnect (its network thread reconnects by
    itself), whether or not the broker kept the session; the session is persistent anyway, as MQTT 5 asks."""

    def __init__(self, port: int, cars: int, rate: float, window: int, seed: int = 7) -> None:
        self.cars, self.rate, self.window, self.seed = cars, rate, window, seed
        self.acked: dict[Key, float] = {}  # -> PUBACK wall time
        self.no_subscribers: set[Key] = set()  # acknowledged with 0x10: the broker had no subscription for it
        self.codes: Counter = Counter()  # PUBACK reason codes
        self.sent = 0
        self._pending: dict[int, Key] = {}  # mid -> key, only touched by the publishing thread
        self._acks: deque = deque()  # (mid, reason code, time), appended by paho's thread, read by ours
        self._acked = threading.Event()
        self._stop = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chaos-load", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.on_publish = self._on_publish
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, keepalive=15, clean_start=False, properties=properties)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties) -> None:
        # paho calls this under its own lock: hand over, never wait here.
        self._acks.append((mid, getattr(reason_code, "value", reason_code), time.time()))
        self._acked.set()

    def _take_acks(self) -> None:
        # An ack is only read here, after the publish that returned its mid registered it: no race on the mid.
        while self._acks:
            mid, code, at = self._acks.popleft()
            key = self._pending.pop(mid, None)
            if key is None:
                continue
            self.codes[f"0x{code:02x}"] += 1
            if code < 0x80:
                self.acked.setdefault(key, at)
            if code == 0x10:
                self.no_subscribers.add(key)

    def _run(self) -> None:
        fleet = Fleet(self.cars, seed=self.seed)
        interval, due = 1.0 / self.rate, time.monotonic()
        while not self._stop.is_set():
            for reading in fleet.step().readings(fleet.car_ids):
                if self._stop.wait(max(0.0, due - time.monotonic())) or not self._publish(reading):
                    return
                due = max(due + interval, time.monotonic() - 1.0)  # after a stall, at most 1 s of catching up

    def _publish(self, reading: dict) -> bool:
        while len(self._pending) >= self.window:
            if self._stop.is_set():
                return False
            self._acked.wait(0.1)
            self._acked.clear()
            self._take_acks()
        reading["event_time"] = int(time.time() * 1000)
        info = self.client.publish(mqtt_topic(reading["car_id"]), encode_reading(reading), qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # cannot happen with an unbounded queue and window < 65,535
            raise RuntimeError("paho refused a publish (queue size)")
        self._pending[info.mid] = (reading["car_id"], reading["seq"])
        self.sent += 1
        self._take_acks()
        return True

    def finish(self, timeout: float) -> None:
        """Stop publishing; wait up to `timeout` for the acknowledgements of what was sent."""
        self._stop.set()
        self._thread.join(10)
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self._acked.wait(0.2)
            self._acked.clear()
            self._take_acks()
        if self._pending:
            log.warning("%d publishes never acknowledged", len(self._pending))

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


# --- targets ------------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    kill: Callable[[], object]
    start: Callable[[], object]
    alive: Callable[[], bool]
    is_server: bool
    choose: Callable[[], str] | None = None  # picks what the next kill hits (a cluster's broker) and names it


def server_target(node: ServerProcess) -> Target:
    def start() -> None:
        node.start()
        node.wait_ready(timeout=180)

    return Target(node.name, node.kill, start, node.is_running, True)


def cluster_target(cluster: KafkaCluster) -> Target:
    """One broker of `cluster` per turn: the controller quorum's leader on every other turn (its failover is the
    slower one), in between the other broker killed least often so far. Started again: whichever broker is down."""
    turns, chosen, kills = itertools.count(), {}, Counter()

    def choose() -> str:
        leader, turn = cluster.quorum_leader(), next(turns)
        others = [node.node_id for node in cluster.nodes if node.node_id != leader]
        victim = leader if turn % 2 == 0 else min(others, key=lambda node_id: kills[node_id])
        kills[victim] += 1
        chosen["node"] = cluster.node(victim)
        return chosen["node"].name + (" (quorum leader)" if victim == leader else "")

    def start() -> None:
        down = [node for node in cluster.nodes if not node.is_running()]
        for node in down:
            node.start()
        for node in down:
            node.wait_ready(timeout=180)

    def alive() -> bool:
        return all(node.is_running() for node in cluster.nodes)

    return Target("kafka", lambda: chosen["node"].kill(), start, alive, True, choose)


def service_target(service: Service) -> Target:
    return Target(service.name, service.kill, service.start, service.running, False)


def kill_and_restart(target: Target, down_s: float, t0: float) -> dict:
    name = target.choose() if target.choose else target.name
    at = time.time()
    target.kill()
    log.warning("SIGKILL %s at %.1f s; starting it again in %.0f s", name, at - t0, down_s)
    time.sleep(down_s)
    restarted = time.time()
    target.start()
    kill = {"target": name, "at": at, "restarted_at": restarted}
    if target.is_server:  # a server is started only once it answers: how long that took
        kill["answered_after_s"] = round(time.time() - restarted, 1)
    return kill


def supervise(targets: list[Target], exits: list[dict], t0: float) -> None:
    """What died without being killed is started again, as a supervisor (systemd, Kubernetes) would."""
    for target in targets:
        if not target.alive():
            log.error("%s exited by itself at %.1f s; starting it again", target.name, time.time() - t0)
            exits.append({"target": target.name, "at_s": round(time.time() - t0, 1)})
            target.start()


# --- soak ---------------------------------------------------------------------------------------------------


def soak(args: argparse.Namespace, targets: list[Target], load: Load, watcher: StreamWatcher) -> tuple:
    """The load for --minutes; a kill every --kill-every s, the last one at least --kill-every s before the end so
    that its recovery can show. Returns (load start time, kills, unexpected exits)."""
    seconds, order = args.minutes * 60, itertools.cycle(targets)
    kills: list[dict] = []
    exits: list[dict] = []
    t0 = time.time()
    load.start()
    next_kill, next_report = args.kill_every, 0.0
    while (now := time.time() - t0) < seconds:
        if now >= next_kill and next_kill <= seconds - args.kill_every:
            kills.append(kill_and_restart(next(order), args.down_seconds, t0))
            next_kill += args.kill_every
        supervise(targets, exits, t0)
        if now >= next_report:
            in_kafka, predicted = watcher.read(lambda s: (len(s.readings), len(s.predictions)))
            log.info(
                "%4.0f s: published %d (unacknowledged %d), in Kafka %d, predicted %d",
                now, len(load.acked), load.outstanding, in_kafka, predicted,
            )  # fmt: skip
            next_report = now + 10
        time.sleep(0.2)
    return t0, kills, exits


def drain(watcher: StreamWatcher, acked: set[Key], timeout: float, idle: float = 30.0) -> bool:
    """Until every acknowledged reading is on car-sensor (or car-sensor stopped growing for `idle` s: those are
    lost) and every reading there has a prediction; gives up when nothing moves for `idle` s or after `timeout`."""
    deadline, last, changed = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        in_kafka, missing, absent = watcher.read(
            lambda s: (len(s.readings), len(s.missing()), len(acked - s.readings.keys()))
        )
        if (in_kafka, missing) != last:
            last, changed = (in_kafka, missing), time.monotonic()
        settled = time.monotonic() - changed > idle
        if missing == 0 and (absent == 0 or settled):
            return True
        if settled:
            log.warning("nothing moved for %.0f s: %d readings without a prediction", idle, missing)
            return False
        time.sleep(2.0)
    log.warning("drain timed out after %.0f s", timeout)
    return False


def duplicate_times(bootstrap: str, security: KafkaSecurity, topic: str, schema: dict) -> list[float]:
    """Kafka timestamps (s) of the records of `topic` beyond the first per (car_id, seq), reading it whole: when
    each duplicate was written tells which kill it came from."""
    codec = AvroCodec(schema, topic)
    seen: set[Key] = set()
    times: list[float] = []
    for message in read_to_end(bootstrap, topic, timeout=120, security=security):
        try:
            record = codec.decode(message.value())
        except DecodeError:
            continue
        key = (record["car_id"], record["seq"])
        if key in seen:
            times.append(message.timestamp()[1] / 1000)
        seen.add(key)
    return times


def attribute_duplicates(kills: list[dict], name: str, times: list[float]) -> None:
    """Each duplicate goes to the last kill before it was written (`name` of that kill)."""
    starts = [k["at"] for k in kills]
    for kill in kills:
        kill[name] = 0
    for when in times:
        index = bisect.bisect_right(starts, when) - 1
        if index >= 0:
            kills[index][name] += 1


def watched_to_end(watcher: StreamWatcher, bootstrap: str, security: KafkaSecurity, timeout: float = 120.0) -> None:
    """Until the watcher has read both topics up to their current end offsets."""
    total = sum(end_offsets(bootstrap, security, [READINGS_TOPIC, PREDICTIONS_TOPIC]).values())
    watcher.wait_until(lambda s: s.reading_records + s.prediction_records + s.undecodable >= total, timeout)


# --- figures ------------------------------------------------------------------------------------------------


def recovery_s(state: StreamState, kill: dict) -> float | None:
    """SIGKILL to the first prediction of a reading published after the restart (None: no such prediction)."""
    restarted_ms = kill["restarted_at"] * 1000
    first = min((p.predicted_at for (_c, _s, et), p in state.predictions.items() if et >= restarted_ms), default=None)
    return None if first is None else round((first - kill["at"] * 1000) / 1000, 1)


def attribute_losses(lost: list[Key], acked: dict[Key, float], kills: list[dict]) -> None:
    """Each lost reading goes to the kill nearest to its PUBACK, before or after it: that kill's `lost`, and
    `lost_acked_s`, the first and last such PUBACK in seconds relative to the SIGKILL (negative: before it)."""
    for kill in kills:
        kill.update(lost=0, lost_acked_s=None)
    times = [k["at"] for k in kills]
    for key in lost:
        index = bisect.bisect_left(times, acked[key])
        nearest = min((i for i in (index - 1, index) if 0 <= i < len(kills)), key=lambda i: abs(times[i] - acked[key]))
        kill, offset = kills[nearest], round(acked[key] - times[nearest], 1)
        kill["lost"] += 1
        first, last = kill["lost_acked_s"] or (offset, offset)
        kill["lost_acked_s"] = [min(first, offset), max(last, offset)]


def figures(
    args: argparse.Namespace, state: StreamState, load: Load, t0: float, kills: list[dict], duplicates: dict
) -> dict:
    acked = load.acked
    for name, times in duplicates.items():
        attribute_duplicates(kills, name, times)
    lost = sorted(acked.keys() - state.readings.keys())
    unpredicted = sorted(state.missing())
    if kills:
        attribute_losses(lost, acked, kills)
    for kill in kills:
        kill["recovery_s"] = recovery_s(state, kill)
    recovered = [k for k in kills if k["recovery_s"] is not None]
    worst = max(recovered, key=lambda k: k["recovery_s"], default=None)
    first_kill_ms = (kills[0]["at"] if kills else time.time()) * 1000
    calm = [p.predicted_at - et for (_c, _s, et), p in state.predictions.items() if t0 * 1000 <= et < first_kill_ms]
    return {
        "cars": args.cars,
        "rate": args.rate,
        "kafka_brokers": args.brokers,
        "minutes": args.minutes,
        "kill_every_s": args.kill_every,
        "down_s": args.down_seconds,
        "predictor_static_member": args.static_member,
        "published": len(acked),
        "in_kafka": len(state.readings),
        "predicted": state.predicted_count(),
        "lost": len(lost),
        "unpredicted": len(unpredicted),
        "duplicates_kafka": len(duplicates["duplicates_kafka"]),
        "duplicates_predictions": len(duplicates["duplicates_predictions"]),
        "in_kafka_unacknowledged": len(state.readings.keys() - acked.keys()),
        "lost_acknowledged_no_subscribers": len(load.no_subscribers.intersection(lost)),
        "never_acknowledged": load.sent - sum(load.codes.values()),
        "puback_codes": dict(load.codes),
        "worst_recovery_s": worst["recovery_s"] if worst else None,
        "worst_recovery_target": worst["target"] if worst else None,
        "latency_p50_ms_before_first_kill": percentile(calm, 50),
        "lost_examples": [list(k) for k in lost[:5]],
        "unpredicted_examples": [list(k) for k in unpredicted[:5]],
        "kills": [
            {
                "target": k["target"],
                "at_s": round(k["at"] - t0, 1),
                "restarted_at_s": round(k["restarted_at"] - t0, 1),
                **{f: k[f] for f in ("answered_after_s",) if f in k},
                "recovery_s": k["recovery_s"],
                "lost": k.get("lost", 0),
                "lost_acked_s": k.get("lost_acked_s"),
                "duplicates_kafka": k["duplicates_kafka"],
                "duplicates_predictions": k["duplicates_predictions"],
            }
            for k in kills
        ],
    }


def mosquitto_autosave_s(mosquitto: MosquittoNode) -> float | None:
    """autosave_interval of the config this run's Mosquitto used: what a crash can lose depends on it."""
    text = mosquitto.config_file.read_text()
    match = re.search(r"(?m)^autosave_interval\s+(\S+)", text)
    return float(match.group(1)) if match else None


COLUMNS = ("target", "at_s", "restarted_at_s", "recovery_s", "lost", "lost_acked_s")
COLUMNS += ("duplicates_kafka", "duplicates_predictions")


def _cell(value: object) -> str:
    return "-" if value is None else "..".join(map(str, value)) if isinstance(value, list) else str(value)


def print_tables(result: dict, console: Console) -> None:
    table = Table(title="make chaos")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key not in ("kills", "unexpected_exits"):
            table.add_row(key, str(value))
    console.print(table)
    kills = Table(title="kills (SIGKILL, then started again)")
    for column in COLUMNS:
        kills.add_column(column, justify="left" if column == "target" else "right")
    for kill in result.get("kills", []):
        kills.add_row(*(_cell(kill.get(c)) for c in COLUMNS))
    console.print(kills)


def read_results(path: Path) -> dict:
    """The bench JSON to merge into (empty when absent); a file that is not a JSON object is an error."""
    if not path.exists():
        return {}
    results = json.loads(path.read_text())
    if not isinstance(results, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return results


# --- driver -------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict:
    taken: set[int] = set()
    runtime = work / "runtime"
    if args.brokers == 1:
        kafka = KafkaNode(runtime, port=listen_port(taken), controller_port=listen_port(taken))
    else:
        ports = [(listen_port(taken), listen_port(taken)) for _ in range(args.brokers)]
        kafka = KafkaCluster(runtime, args.brokers, heap="512m", ports=ports)
    mosquitto = MosquittoNode(runtime, port=listen_port(taken))
    services: ServiceGroup | None = None
    load: Load | None = None
    watcher: StreamWatcher | None = None
    try:
        for node in (kafka, mosquitto):
            node.start()
            node.wait_ready(timeout=180)
        kafka_login = (kafka.bootstrap_servers, kafka.admin_security)  # this process's clients, on its own node
        ensure_topics(*kafka_login, {READINGS_TOPIC: PARTITIONS, PREDICTIONS_TOPIC: PARTITIONS, DLQ_TOPIC: 1})
        model_dir = args.model_dir or small_model_dir(BenchContext(kafka, mosquitto, work))
        log.info("model: %s", model_dir)
        services = ServiceGroup(service_env(kafka.bootstrap_servers, "127.0.0.1", mosquitto.port), work / "logs")
        bridge = services.start(
            "bridge", "bridge",
            BRIDGE_CLIENT_ID="chaos-bridge", BRIDGE_METRICS_PORT="0",
            BRIDGE_KAFKA_TOPIC=READINGS_TOPIC, BRIDGE_DLQ_TOPIC=DLQ_TOPIC, BRIDGE_PARK_FILE=str(work / "parked.jsonl"),
        )  # fmt: skip
        predictor = services.start(
            "predictor", "ml", "predict",
            ML_GROUP_ID="chaos-predictor", ML_MODEL_DIR=str(model_dir), ML_METRICS_PORT="0",
            ML_TOPIC=READINGS_TOPIC, ML_OUTPUT_TOPIC=PREDICTIONS_TOPIC, ML_DLQ_TOPIC=DLQ_TOPIC,
            **({"ML_INSTANCE_ID": "chaos-predictor-1"} if args.static_member else {}),
        )  # fmt: skip
        logged = lambda service, text, times=1: lambda: sum(text in line for line in service.log_lines()) >= times  # noqa: E731
        wait_for(logged(bridge, "subscribing to"), 120, what="the bridge's subscription", check=services.check)
        wait_for(logged(predictor, "assigned partition", PARTITIONS), 300, what="the predictor", check=services.check)
        watcher = StreamWatcher(*kafka_login, READINGS_TOPIC, PREDICTIONS_TOPIC).start()
        load = Load(mosquitto.port, args.cars, args.rate, args.window)
        kafka_target = cluster_target(kafka) if isinstance(kafka, KafkaCluster) else server_target(kafka)
        by_name = {"mosquitto": server_target(mosquitto), "kafka": kafka_target}
        by_name |= {"bridge": service_target(bridge), "predictor": service_target(predictor)}
        t0, kills, exits = soak(args, [by_name[name] for name in args.targets], load, watcher)
        log.info("load stopped; waiting for the last acknowledgements and predictions")
        load.finish(timeout=120)
        drained = drain(watcher, set(load.acked), args.drain_timeout)
        watched_to_end(watcher, *kafka_login)
        duplicates = {
            "duplicates_kafka": duplicate_times(*kafka_login, READINGS_TOPIC, schemas.READING),
            "duplicates_predictions": duplicate_times(*kafka_login, PREDICTIONS_TOPIC, schemas.PREDICTION),
        }
        result = watcher.read(lambda state: figures(args, state, load, t0, kills, duplicates))
        result |= {"drained": drained, "unexpected_exits": exits}
        result |= {"mosquitto_autosave_interval_s": mosquitto_autosave_s(mosquitto), "work_dir": str(work)}
        return result
    finally:
        # Services before servers: a bridge stopped after its broker could not hand back what it holds.
        if load is not None:
            load.close()
        if watcher is not None:
            watcher.stop()
        if services is not None:
            services.stop_all()
        for node in (mosquitto, kafka):
            try:
                node.stop()
            except Exception as exc:  # stopping the other one matters more
                log.error("could not stop %s: %s", node.name, exc)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.studies.chaos",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cars", type=int, default=50, help="cars in the fleet (default: %(default)s)")
    parser.add_argument(
        "--brokers",
        type=int,
        choices=BROKER_CHOICES,
        default=None,
        help="Kafka brokers: 1, or 3 (a cluster; each Kafka turn kills one broker) [env: BROKERS; default 1]",
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="readings/s, all cars together (default: %(default)s)"
    )
    parser.add_argument("--minutes", type=float, default=4.0, help="minutes of load (default: %(default)s)")
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds between kills (default: %(default)s)")
    parser.add_argument(
        "--down-seconds", type=float, default=2.0, help="a killed target stays down this long (default: %(default)s)"
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=TARGETS,
        default=list(TARGETS),
        help="what is killed, in this order, round-robin (default: all)",
    )
    parser.add_argument(
        "--window", type=int, default=500, help="publishes unacknowledged at most (default: %(default)s)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="most seconds to wait for the predictor to catch up after the load (default: %(default)s)",
    )
    parser.add_argument(
        "--static-member",
        action="store_true",
        help="give the predictor a static group member id (ML_INSTANCE_ID), as a Kubernetes pod name would",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="serve the newest model of this folder instead of training a small one (about a minute)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results.json"),
        help="bench JSON: its key 'chaos' is set, others kept (default: %(default)s)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_RUN_DIR / "chaos",
        help="each run gets a new folder <time>/ here: servers' data, logs, model (default: .run/chaos)",
    )
    args = parser.parse_args(argv)
    args.brokers = args.brokers or brokers_asked() or 1
    if args.cars < 1 or args.rate <= 0 or args.minutes <= 0 or args.kill_every <= 0 or not 0 < args.window < 65_535:
        parser.error("--cars, --rate, --minutes and --kill-every must be positive, --window in 1..65534")
    if args.model_dir is not None and latest_model_metadata(args.model_dir) is None:
        parser.error(f"--model-dir {args.model_dir}: no model version there")
    return args


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    logging.getLogger("scripts.runtime").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        read_results(args.out)  # fail before minutes of work, not after
        work = args.work_dir / time.strftime("%Y%m%d-%H%M%S")
        work.mkdir(parents=True)
        log.info("chaos soak: %s; folder %s", vars(args), work)
        result = run(args, work)
        results = read_results(args.out)  # again: something else may have written it meanwhile
        results["chaos"] = result
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    except KeyboardInterrupt:
        log.warning("interrupted; everything started was stopped")
        return 130
    except Exception:
        log.exception("the chaos harness failed")
        return 1
    print_tables(result, Console(width=None if sys.stdout.isatty() else 120))  # a log file can be wide
    print(f"figures written to {args.out} (key 'chaos'); logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
