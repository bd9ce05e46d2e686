"""Data nobody here wrote reaches Kafka: the reference demo's recorded layout replayed through the simulator, its
device simulator's payloads published with `mosquitto_pub`, both in other units than ours. Well-formed readings
outside our plausibility ranges arrive flagged, keyed by their car; payloads without a seq keep one identity across
a bridge SIGKILL, and a predictor's windows fed from Kafka never reset."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from bridge.validation import content_seq
from common.schemas import OPTIONAL_SENSOR_FIELDS, SENSOR_FIELDS, SENSOR_RANGES
from common.topics import mqtt_topic
from ml.serving.ring_buffer import CarWindows
from scripts.testkit.kafka import collect
from scripts.testkit.mqtt import Publisher
from scripts.testkit.readings import decoded
from scripts.testkit.services import run_module

pytestmark = pytest.mark.timeout(300)
DATA = Path(__file__).resolve().parent.parent / "data"
REFERENCE_CSV = DATA / "reference_demo_layout.csv"
DEVICE_PAYLOADS = DATA / "device_simulator_payloads.jsonl"


REPORTED = [name for name in SENSOR_FIELDS if name not in OPTIONAL_SENSOR_FIELDS]
"""The sensors the 2019 senders report: every one but the accelerometer peaks (readings version 3)."""


def expected_flags(values: dict[str, float]) -> list[str]:
    return [name for name in REPORTED if not SENSOR_RANGES[name][0] <= values[name] <= SENSOR_RANGES[name][1]]


def test_the_reference_demos_recorded_csv_replayed_through_the_chain_arrives_whole_flagged_and_keyed_by_car(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics, tmp_path
):
    with REFERENCE_CSV.open() as handle:
        rows = list(csv.DictReader(handle))
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    summary_file = tmp_path / "replay.json"
    run_module(
        "simulator", "replay", str(REFERENCE_CSV), "--pace", "max", "--qos", "1",
        "--summary-file", str(summary_file), "--no-progress",
        timeout=240, MQTT_HOST="127.0.0.1", MQTT_PORT=str(broker.port),
    )  # fmt: skip
    summary = json.loads(summary_file.read_text())
    assert (summary["published"], summary["acknowledged"], summary["skipped"]) == (len(rows), len(rows), 0)

    messages = collect(kafka_bootstrap, bridge_topics[0], want=len(rows))
    records = decoded(messages)  # asserts key == car_id for each
    assert len(records) == len(rows)
    assert not collect(kafka_bootstrap, bridge_topics[1], want=1, timeout=5), "nothing may be dead-lettered"

    # every row is there, in its car's order, with its values and the fields outside our ranges named
    by_car: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_car[row["car"]].append(row)
    arrived: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        arrived[record["car_id"]].append(record)
    assert set(arrived) == set(by_car)
    flags: dict[str, int] = defaultdict(int)
    for car, sent in by_car.items():
        got = arrived[car]
        assert [r["seq"] for r in got] == list(range(len(sent)))
        for row, record in zip(sent, got, strict=True):
            assert record["event_time"] == int(row["time"]) * 1000
            values = {name: float(row[name]) for name in REPORTED}
            assert [record[name] for name in REPORTED] == pytest.approx([values[n] for n in REPORTED])
            assert all(record[name] is None for name in OPTIONAL_SENSOR_FIELDS), "no peak is invented"
            assert record["out_of_range"] == expected_flags(values)
            assert "battery_voltage" in record["out_of_range"]
            assert record["failure_occurred"] is None  # unlabelled, not "no failure"
            for name in record["out_of_range"]:
                flags[name] += 1
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_produced_total") == len(rows), "every row produced")
    assert metrics["bridge_flagged_total"] == len(rows)
    assert metrics.get("bridge_rejected_total", 0) == 0
    print(f"reference CSV: {len(rows)} rows replayed, {len(records)} in Kafka, {len(rows)} flagged, 0 in the DLQ; "
          f"fields flagged: {dict(flags)}")  # fmt: skip


def test_device_simulator_payloads_published_with_mosquitto_pub_arrive_with_content_identity(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    payloads = DEVICE_PAYLOADS.read_bytes().splitlines()
    broker = mosquitto_node_factory()
    bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    before = int(time.time() * 1000)
    sent = []
    for i, payload in enumerate(payloads):
        car = f"device-{i % 3}"
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", mqtt_topic(car), "-m",
             payload.decode()],
            check=True, timeout=30,
        )  # fmt: skip
        sent.append((car, payload))
    records = decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(sent)))
    assert len(records) == len(sent)
    by_id = {(r["car_id"], r["seq"]): r for r in records}
    for car, payload in sent:
        record = by_id[(car, content_seq(car, payload))]
        source = json.loads(payload)
        assert record["seq_origin"] == "CONTENT_HASH"
        assert record["failure_occurred"] is None and record["event_time"] >= before
        assert [record[name] for name in REPORTED] == [source[name] for name in REPORTED]
        assert all(record[name] is None for name in OPTIONAL_SENSOR_FIELDS), "no peak is invented"
        assert record["out_of_range"] == expected_flags(source) and "battery_voltage" in record["out_of_range"]
    assert not collect(kafka_bootstrap, bridge_topics[1], want=1, timeout=5)


def test_seq_less_stream_through_two_bridges_and_a_sigkill_keeps_one_identity_per_payload_and_no_window_reset(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    """Two bridges share the subscription; one is SIGKILLed mid-stream and restarted. Every payload is in Kafka,
    a redelivered one under the same (car_id, seq), no two payloads share one, and a predictor's ring fed in Kafka
    order counts each car's distinct readings without ever starting the car again."""
    broker = mosquitto_node_factory()
    env = {"BRIDGE_BUFFER_SIZE": "400", "BRIDGE_SHARED_GROUP": "seq-less"}
    first = bridge_factory(kafka_bootstrap, broker.port, bridge_topics, client_id="bridge-a", **env)
    bridge_factory(kafka_bootstrap, broker.port, bridge_topics, client_id="bridge-b", **env)
    rng = np.random.default_rng(5)
    cars = [f"seedcar-{n}" for n in range(8)]
    sent: list[tuple[str, bytes]] = []
    for step in range(400):
        for car in cars:
            values = {name: round(float(rng.uniform(*SENSOR_RANGES[name])), 3) for name in SENSOR_FIELDS}
            values.update({name: int(values[name]) for name in ("tire_pressure_1_1", "tire_pressure_1_2",
                           "tire_pressure_2_1", "tire_pressure_2_2", "control_unit_firmware")})  # fmt: skip
            sent.append((mqtt_topic(car), json.dumps({**values, "timestamp": step}).encode()))
    publisher = Publisher(broker.port, sent, rate=800)
    first.wait_for_metrics(lambda m: m.get("bridge_produced_total", 0) >= 600, "readings before the kill")
    first.kill()
    time.sleep(1.0)
    bridge_factory(kafka_bootstrap, broker.port, bridge_topics, client_id="bridge-a", **env)
    publisher.wait()

    messages = collect(kafka_bootstrap, bridge_topics[0], want=len(sent), timeout=120)
    records = decoded(messages)
    expected = {(topic.rpartition("/")[2], content_seq(topic.rpartition("/")[2], payload)) for topic, payload in sent}
    content: dict[tuple[str, int], tuple] = {}
    for record in records:
        key = (record["car_id"], record["seq"])
        values = tuple(record[name] for name in SENSOR_FIELDS)
        assert content.setdefault(key, values) == values, f"two different readings share the identity {key}"
    assert set(content) == expected, f"{len(expected - set(content))} payloads missing"
    duplicates = len(records) - len(expected)
    print(f"seq-less stream, 2 bridges, one SIGKILLed: {len(sent)} sent, {len(records)} in Kafka, "
          f"{duplicates} redelivered under the same identity")  # fmt: skip

    # The predictor's view: the ring fed in Kafka order. A redelivery within the car's last 24 readings is
    # recognised; one further back (the restarted bridge got it seconds later) enters the window once more, a
    # bounded-memory trade-off (ml/serving/README.md). What must never happen is a reset: the count only grows.
    windows = CarWindows(window=24, features=len(SENSOR_FIELDS))
    ordered = decoded(sorted(messages, key=lambda m: (m.partition(), m.offset())))
    for record in ordered:
        car = record["car_id"]
        before = windows.readings_of(car)
        row = np.array([[record[n] for n in SENSOR_FIELDS]], np.float32)
        windows.push([car], [record["seq"]], row, hashed=[record["seq_origin"] == "CONTENT_HASH"], windows=False)
        assert windows.readings_of(car) in (before, before + 1), f"{car}'s history was reset"
    for car in cars:
        in_kafka = sum(1 for r in ordered if r["car_id"] == car)
        assert 400 <= windows.readings_of(car) <= in_kafka
