"""End to end, every service its own process, against the session's real Kafka and Mosquitto.

- `make demo` headless (`python -m scripts.demo --runtime external`): a history fleet through MQTT and Kafka,
  training on two workers, then N live cars for T seconds through simulator -> Mosquitto -> bridge -> Kafka -> ml
  predict. It
  must end with exit code 0 and a summary; and, counted here with a consumer of the test's own (not the demo's
  watcher), every (car_id, seq) the live simulator published arrives on the readings topic and gets a prediction.
- The seed's `python -m ml <servers> <topic> <start offset> <result topic>` on readings that came through
  simulator, Mosquitto and bridge: it trains, and predicts exactly the following readings that close a full
  window of their car.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.avro import AvroCodec
from common.schemas import PREDICTION, READING
from common.topics import car_id
from scripts.runtime.local import ROOT
from scripts.runtime.services import ServiceGroup, service_env, wait_for
from scripts.testkit.kafka import create_topic, delete_topics, end_offsets, read_to_end, unique

DEMO_CARS = 3
SEED_CARS = 20
SEED_READINGS = 150
SEED_FORM_TRAIN = 2400
SEED_FORM_PREDICT = 600
SEED_FORM_WINDOW = 8


def read_topic(bootstrap: str, topic: str, codec: AvroCodec) -> list[tuple[int, int, dict]]:
    """Every record of `topic` now, as (partition, offset, decoded value)."""
    return [(m.partition(), m.offset(), codec.decode(m.value())) for m in read_to_end(bootstrap, topic)]


@dataclass
class DemoRun:
    process: subprocess.CompletedProcess
    summary: dict
    readings_topic: str
    predictions_topic: str


@pytest.fixture(scope="module")
def demo_run(kafka_bootstrap: str, mqtt_endpoint: tuple[str, int], tmp_path_factory) -> Iterator[DemoRun]:
    """`make demo TRAIN_WORKERS=2` headless with small sizes, on the session's servers and topics of its own."""
    work = tmp_path_factory.mktemp("demo")
    topics = [unique("demo-readings"), unique("demo-predictions")]
    env = service_env(kafka_bootstrap, *mqtt_endpoint)
    command = [
        sys.executable, "-m", "scripts.demo", "--runtime", "external", "--plain",
        "--cars", str(DEMO_CARS), "--duration", "20", "--history-cars", "20", "--history-readings", "150",
        "--epochs", "2", "--train-workers", "2", "--model-dir", str(work / "models"), "--log-dir", str(work / "logs"),
        "--readings-topic", topics[0], "--predictions-topic", topics[1],
    ]  # fmt: skip
    try:
        process = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
        summary_file = work / "logs" / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        yield DemoRun(process, summary, *topics)
    finally:
        delete_topics(kafka_bootstrap, topics)


@pytest.mark.containers
def test_demo_ends_with_predictions_and_exit_code_0(demo_run: DemoRun) -> None:
    output = demo_run.process.stdout + demo_run.process.stderr
    assert demo_run.process.returncode == 0, output[-5000:]
    summary = demo_run.summary
    assert summary["complete"] is True
    assert summary["predicted"] == summary["in_kafka"] == summary["published"] > 0
    # The alerts were measured in episodes of the simulator's ground truth. The figures themselves are tested on a
    # hand-built stream (tests/unit/test_live_episodes.py): this live phase is short (10 s at 60x, 60 readings a
    # car), and with a horizon of 60 readings no reading's next H readings are known, so none is judged yet.
    assert summary["episodes"] is not None and summary["healthy_car_hours"] >= 0
    assert summary["episodes_warned"] + summary["episodes_missed"] == summary["episodes"]
    assert summary["model"]["version"] in output
    assert summary["model"]["training"]["workers"] == 2, "make demo TRAIN_WORKERS=2 trains on two workers"
    assert "demo summary" in output and "readings with a prediction" in output
    assert "episodes warned ahead / missed" in output and "false alerts per healthy car-hour" in output
    assert "3/4 live" in output, "the headless view prints the phases as plain lines"


@pytest.mark.containers
def test_every_published_live_reading_arrives_and_gets_a_prediction(kafka_bootstrap: str, demo_run: DemoRun) -> None:
    published = demo_run.summary["published"]
    # The simulator publishes seq by seq, car by car: the first `published` of (seq 0: car 1..N, seq 1: ...).
    expected = {(car_id(n % DEMO_CARS + 1), n // DEMO_CARS) for n in range(published)}
    start = {int(p): offset for p, offset in demo_run.summary["live_start_offsets"].items()}
    assert start, "the demo recorded where the live readings begin"

    topic = demo_run.readings_topic
    live = [r for p, offset, r in read_topic(kafka_bootstrap, topic, AvroCodec(READING, topic)) if offset >= start[p]]
    arrived = {(r["car_id"], r["seq"]): r["event_time"] for r in live}
    assert set(arrived) == expected, f"lost: {sorted(expected - set(arrived))[:10]}"

    topic = demo_run.predictions_topic
    predictions = [p for _, _, p in read_topic(kafka_bootstrap, topic, AvroCodec(PREDICTION, topic))]
    # A prediction belongs to a live reading when it names that reading's car, seq and event_time.
    predicted = {key for p in predictions if arrived.get(key := (p["car_id"], p["seq"])) == p["event_time"]}
    assert predicted == expected, f"without a prediction: {sorted(expected - predicted)[:10]}"
    assert all(0.0 <= p["failure_probability"] <= 1.0 for p in predictions)


@pytest.fixture(scope="module")
def chain_topic(kafka_bootstrap: str, mqtt_endpoint: tuple[str, int], tmp_path_factory) -> Iterator[str]:
    """SEED_CARS x SEED_READINGS readings through simulator, Mosquitto and bridge into a topic of their own."""
    work = tmp_path_factory.mktemp("chain")
    readings = create_topic(kafka_bootstrap, unique("e2e-readings"), partitions=4)
    dlq = create_topic(kafka_bootstrap, unique("e2e-dlq"))
    run = unique("e2e")
    expected = SEED_CARS * SEED_READINGS
    with ServiceGroup(service_env(kafka_bootstrap, *mqtt_endpoint), work / "logs") as services:
        bridge = services.start(
            "bridge", "bridge",
            BRIDGE_CLIENT_ID=f"{run}-bridge", BRIDGE_SESSION_EXPIRY="60",
            BRIDGE_METRICS_PORT="0", BRIDGE_KAFKA_TOPIC=readings, BRIDGE_DLQ_TOPIC=dlq,
        )  # fmt: skip
        subscribed = lambda: any("granted the subscription" in line for line in bridge.log_lines())  # noqa: E731
        wait_for(subscribed, 90, what="the bridge's subscription (SUBACK)", check=services.check)
        simulator = services.start(
            "simulator", "simulator",
            "--cars", str(SEED_CARS), "--count", str(expected), "--speedup", "100000", "--qos", "1",
            "--client-id", f"{run}-simulator", "--no-progress",
            SIMULATOR_FAILURE_RATE="4",  # failures enough in 25 simulated minutes per car to train on
        )  # fmt: skip
        assert simulator.wait(120) == 0, simulator.tail()
        wait_for(
            lambda: sum(end_offsets(kafka_bootstrap, readings).values()) >= expected, 60, what=f"{expected} readings"
        )
    try:
        yield readings
    finally:
        delete_topics(kafka_bootstrap, [readings, dlq])


def test_seed_command_line_trains_and_predicts_end_to_end(
    kafka_bootstrap: str, chain_topic: str, tmp_path: Path
) -> None:
    result_topic = unique("e2e-seed-result")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ML_MODEL_DIR": str(tmp_path / "models")}
    command = [
        sys.executable, "-m", "ml", kafka_bootstrap, chain_topic, "0", result_topic,
        "--train-records", str(SEED_FORM_TRAIN), "--predict-records", str(SEED_FORM_PREDICT),
        "--window", str(SEED_FORM_WINDOW), "--horizon", "5", "--epochs", "2",
    ]  # fmt: skip
    try:
        process = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert process.returncode == 0, (process.stdout + process.stderr)[-5000:]

        readings = read_topic(kafka_bootstrap, chain_topic, AvroCodec(READING, chain_topic))
        in_event_order = [r for _, _, r in sorted(readings, key=lambda x: (x[2]["event_time"], x[0], x[1]))]
        following = in_event_order[SEED_FORM_TRAIN : SEED_FORM_TRAIN + SEED_FORM_PREDICT]
        # Readings of one car are consecutive from seq 0, so a full window ends at seq >= W - 1.
        expected = [(r["car_id"], r["seq"]) for r in following if r["seq"] >= SEED_FORM_WINDOW - 1]

        results = read_topic(kafka_bootstrap, result_topic, AvroCodec(PREDICTION, result_topic))
        assert sorted((p["car_id"], p["seq"]) for _, _, p in results) == sorted(expected)
        assert len(list(tmp_path.joinpath("models").iterdir())) == 1, "the seed form saved its model"
    finally:
        delete_topics(kafka_bootstrap, [result_topic])
