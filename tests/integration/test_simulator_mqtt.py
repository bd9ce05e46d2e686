"""The simulator against the real Mosquitto: every QoS 1 message arrives, replay publishes every row, and a
SIGTERM stops the run only after its in-flight messages, counted by (car_id, seq)."""

from __future__ import annotations

import csv
import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from common.schemas import SENSOR_FIELDS, payload_fields
from common.topics import MQTT_TOPIC_FILTER
from scripts.testkit.services import ChildService


class Collector:
    """A QoS 1 subscriber to every car's topic that keeps each payload by (car_id, seq). A persistent one keeps
    its session (and the messages queued for it) across broker restarts, and paho reconnects it."""

    def __init__(self, host: str, port: int, persistent: bool = False) -> None:
        self.messages: list[dict] = []
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe(MQTT_TOPIC_FILTER, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _client, _userdata, message) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))
            self.topics.append(message.topic)

    @property
    def keys(self) -> set[tuple[str, int]]:
        with self._lock:
            return {(m["car_id"], m["seq"]) for m in self.messages}

    def wait_for(self, count: int, timeout: float = 60.0, idle: float = 3.0) -> set[tuple[str, int]]:
        """Wait until `count` distinct readings arrived, or nothing new came for `idle` seconds."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            seen = len(self.keys)
            if seen >= count:
                break
            if seen != last:
                last, last_change = seen, time.monotonic()
            elif time.monotonic() - last_change > idle:
                break
            time.sleep(0.1)
        return self.keys

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(mqtt_endpoint):
    subscriber = Collector(*mqtt_endpoint)
    yield subscriber
    subscriber.close()


def simulator(service_factory, mqtt_endpoint, *args: str) -> ChildService:
    """`python -m simulator <args>` against the broker at `mqtt_endpoint`; its output in tmp_path/simulator.log."""
    host, port = mqtt_endpoint
    return service_factory("simulator", "simulator", *args, "--no-progress", MQTT_HOST=host, MQTT_PORT=str(port))


@pytest.mark.containers
def test_ten_thousand_qos1_messages_all_reach_a_subscriber(mqtt_endpoint, service_factory, collector, tmp_path):
    summary_file = tmp_path / "summary.json"
    # 100 cars, one MQTT client per car, 100 readings each, 10,000 msg/s scheduled.
    args = ("--cars", "100", "--connections", "100", "--rate", "10", "--speedup", "10", "--count", "10000")
    simulator(service_factory, mqtt_endpoint, *args, "--qos", "1", "--summary-file", str(summary_file)).finish()
    summary = json.loads(summary_file.read_text())
    assert (summary["published"], summary["acknowledged"], summary["unacknowledged"]) == (10_000, 10_000, 0)
    received = collector.wait_for(10_000)
    assert received == {(f"car-{car:05d}", seq) for car in range(1, 101) for seq in range(100)}
    first = collector.messages[0]
    assert list(first) == payload_fields()
    pairs = zip(collector.topics, collector.messages, strict=True)
    assert all(topic == f"vehicles/sensor/data/{m['car_id']}" for topic, m in pairs)


def write_seed_csv(path: Path, rows: int, gap_s: float) -> list[list]:
    table = []
    for index in range(rows):
        sensors = [float(index + offset) for offset in range(len(SENSOR_FIELDS))]
        sensors[9:13] = [30 + index % 5] * 4  # tire pressures are ints
        table.append([1_700_000_000 + index * gap_s, f"car{index % 3 + 1}", *sensors, "true" if index == 7 else ""])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "car", *SENSOR_FIELDS, "failure_occurred"])
        writer.writerows(table)
    return table


def test_replay_of_a_small_csv_publishes_every_row(mqtt_endpoint, service_factory, collector, tmp_path):
    path = tmp_path / "recorded.csv"
    table = write_seed_csv(path, rows=30, gap_s=0.1)
    summary_file = tmp_path / "summary.json"
    args = ("--pace", "recorded", "--speedup", "2", "--qos", "1", "--summary-file", str(summary_file))
    simulator(service_factory, mqtt_endpoint, "replay", str(path), *args).finish()
    summary = json.loads(summary_file.read_text())
    assert (summary["published"], summary["acknowledged"], summary["skipped"]) == (30, 30, 0)
    assert summary["seconds"] >= 1.4, "recorded pace at 2x: 2.9 s of recording take at least 1.45 s"
    received = collector.wait_for(30)
    assert received == {(f"car{car}", seq) for car in (1, 2, 3) for seq in range(10)}
    by_time = {m["event_time"]: m for m in collector.messages}
    for row in table:
        message = by_time[round(row[0] * 1000)]
        assert message["car_id"] == row[1]
        assert [message[name] for name in SENSOR_FIELDS] == pytest.approx(row[2:-1])
        assert message["failure_occurred"] is (row[-1] == "true")
    arrival = [m["event_time"] for m in collector.messages]
    assert arrival == sorted(arrival)


def test_replay_skips_rows_no_reading_can_hold_and_publishes_the_rest(
    mqtt_endpoint, service_factory, collector, tmp_path
):
    """NaN in an int column, inf as the time, car ids with "/" or "+": each row is skipped with its reason, the
    replay goes on and exits 0, and every other row reaches the broker on its car's topic."""
    path = tmp_path / "foreign.csv"
    table = write_seed_csv(path, rows=12, gap_s=1.0)
    bad = [list(table[0]), list(table[0]), list(table[0]), list(table[0])]
    bad[0][2 + SENSOR_FIELDS.index("tire_pressure_1_1")] = "NaN"
    bad[1][0] = "inf"
    bad[2][1], bad[3][1] = "car/9", "car+9"
    with path.open("a", newline="") as handle:
        csv.writer(handle).writerows(bad)
    summary_file = tmp_path / "summary.json"
    replay = simulator(
        service_factory, mqtt_endpoint, "replay", str(path), "--pace", "max", "--summary-file", str(summary_file)
    )
    output = replay.finish()
    summary = json.loads(summary_file.read_text())
    assert (summary["published"], summary["acknowledged"], summary["skipped"]) == (12, 12, 4), output
    assert "not a finite number" in output and "MQTT topic level" in output
    assert collector.wait_for(12) == {(f"car{car}", seq) for car in (1, 2, 3) for seq in range(4)}
    assert all(topic.count("/") == 3 for topic in collector.topics)


def test_sigterm_stops_cleanly_after_the_in_flight_messages(mqtt_endpoint, service_factory, collector, tmp_path):
    summary_file = tmp_path / "summary.json"
    process = simulator(
        service_factory,
        mqtt_endpoint,
        "--cars",
        "200",
        "--rate",
        "1",
        "--speedup",
        "20",
        "--qos",
        "1",
        "--summary-file",
        str(summary_file),
    )
    deadline = time.monotonic() + 60
    while len(collector.keys) < 2000 and time.monotonic() < deadline and process.running():
        time.sleep(0.1)
    process.stop_ok(timeout=40)
    stderr = process.log()
    assert "SIGTERM received" in stderr
    summary = json.loads(summary_file.read_text())
    assert summary["stopped_by"] == "signal"
    assert summary["published"] >= 2000 and summary["unacknowledged"] == 0
    received = collector.wait_for(summary["published"])
    assert len(received) == summary["published"]
    # Readings go out car by car in order, so what was sent is a prefix: every car's seqs run 0..n without gaps.
    per_car: dict[str, list[int]] = {}
    for car, seq in received:
        per_car.setdefault(car, []).append(seq)
    assert all(sorted(seqs) == list(range(len(seqs))) for seqs in per_car.values())


def test_a_broker_restart_mid_run_loses_no_qos1_reading(mosquitto_node_factory, service_factory, tmp_path):
    node = mosquitto_node_factory()
    endpoint = ("127.0.0.1", node.port)
    subscriber = Collector(*endpoint, persistent=True)
    summary_file = tmp_path / "summary.json"
    try:
        args = ("--cars", "50", "--rate", "1", "--speedup", "20", "--count", "8000", "--qos", "1")
        process = simulator(service_factory, endpoint, *args, "--summary-file", str(summary_file))
        deadline = time.monotonic() + 60
        while len(subscriber.keys) < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        node.stop()
        time.sleep(1.5)  # the simulator keeps simulating; its QoS 1 messages wait in paho for the broker
        node.start()
        node.wait_ready()
        stderr = process.finish(timeout=90)
        assert "lost" in stderr and "is back" in stderr
        summary = json.loads(summary_file.read_text())
        assert (summary["published"], summary["unacknowledged"]) == (8000, 0)
        received = subscriber.wait_for(8000, timeout=60, idle=10)
        assert received == {(f"car-{car:05d}", seq) for car in range(1, 51) for seq in range(160)}
    finally:
        subscriber.close()


SIMULATOR_RSS_LIMIT_MIB = 400  # simulator/README.md, "Memory"; the Kubernetes limit is 512Mi


def test_a_fleet_of_200000_cars_stays_under_the_simulators_memory_limit(
    mosquitto_node_factory, service_factory, tmp_path
):
    """The fleet's state grows with its cars by design: 200,000 of them, each publishing once at QoS 1."""
    broker = mosquitto_node_factory()
    summary_file = tmp_path / "summary.json"
    args = ("--cars", "200000", "--rate", "0.1", "--count", "200000", "--summary-file", str(summary_file))
    process = simulator(service_factory, ("127.0.0.1", broker.port), *args)
    peak_kib = 0
    while process.running():  # VmHWM is the peak so far: the last sample before exit is (close to) the peak
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except FileNotFoundError:
            break
        peak_kib = max([peak_kib] + [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")])
        time.sleep(0.2)
    process.finish(timeout=180)
    summary = json.loads(summary_file.read_text())
    assert (summary["published"], summary["acknowledged"]) == (200_000, 200_000)
    print(f"simulator peak RSS {peak_kib / 1024:.0f} MiB with 200,000 cars")
    assert 0 < peak_kib / 1024 < SIMULATOR_RSS_LIMIT_MIB
