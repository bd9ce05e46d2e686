"""A bridge run as its own process, a QoS 1 publisher, and Kafka collection: what the bridge's tests share."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer

from common import schemas
from common.avro import AvroCodec
from common.kafka import consumer_config
from common.settings import PLAINTEXT
from common.topics import mqtt_topic
from scripts.runtime.local import ROOT, free_port
from simulator.fleet import generate_readings


class BridgeProcess:
    """`python -m bridge` as a child process with its own metrics port and log file."""

    def __init__(self, log_dir: Path, env: dict[str, str], client_id: str) -> None:
        self.metrics_port = free_port()
        self.log_path = log_dir / f"bridge-{client_id}-{uuid.uuid4().hex[:6]}.log"
        self.env = {
            **os.environ,
            **env,
            "BRIDGE_CLIENT_ID": client_id,
            "BRIDGE_METRICS_PORT": str(self.metrics_port),
            "BRIDGE_LOG_INTERVAL": "2",
            "PYTHONPATH": str(ROOT),
        }
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge"], env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.wait_for(lambda m: m.get("bridge_mqtt_connected") == 1.0, "the MQTT connection")

    def metrics(self) -> dict[str, float]:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            match = re.fullmatch(r"([a-z_]+)(?:\{[^}]*\})? ([-0-9.e+]+)", line)
            if match and not line.startswith("#"):
                samples[match.group(1)] = samples.get(match.group(1), 0.0) + float(match.group(2))
        return samples

    def wait_for(self, condition, what: str, timeout: float = 60.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"bridge exited ({self.process.returncode}):\n{self.log()}"
            metrics = self.metrics()
            if metrics and condition(metrics):
                return metrics
            time.sleep(0.2)
        raise AssertionError(f"bridge: no {what} within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


QUEUE_AHEAD = 2_000


class Publisher:
    """A paho QoS 1 publisher in a background thread; paho re-sends what the broker did not acknowledge."""

    def __init__(self, port: int, messages: Iterable[tuple[str, bytes]], rate: float | None = None) -> None:
        self.messages = list(messages)
        self.rate = rate
        self.sent = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(200)
        self.acknowledged = 0  # PUBACKs; publishes made while the broker was away are sent on reconnect
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_publish(self, *_args) -> None:
        self.acknowledged += 1

    def _run(self) -> None:
        started = time.monotonic()
        for topic, payload in self.messages:
            while self.sent - self.acknowledged > QUEUE_AHEAD:  # paho's queue costs O(queued) per PUBACK
                time.sleep(0.001)
            self.client.publish(topic, payload, qos=1)
            self.sent += 1
            if self.rate:
                ahead = self.sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def wait(self, timeout: float = 120.0) -> None:
        """Until the broker acknowledged every message."""
        self.thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.acknowledged < len(self.messages):
            assert time.monotonic() < deadline, "the broker did not acknowledge every publish"
            time.sleep(0.1)
        self.client.disconnect()
        self.client.loop_stop()


def as_messages(records: Iterable[dict]) -> list[tuple[str, bytes]]:
    return [(mqtt_topic(r["car_id"]), json.dumps(r).encode()) for r in records]


def collect(kafka: str, topic: str, want: int, timeout: float = 90.0, linger: float = 3.0) -> list:
    """Every record of `topic` until `want` distinct (key, value) pairs came, then `linger` s for late duplicates."""
    consumer = Consumer(consumer_config(kafka, PLAINTEXT, f"test-{uuid.uuid4().hex[:10]}"))
    consumer.subscribe([topic])
    messages, distinct = [], set()
    deadline = time.monotonic() + timeout
    stop_at = None
    try:
        while time.monotonic() < (stop_at or deadline):
            for message in consumer.consume(num_messages=5000, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
                    distinct.add((message.key(), message.value()))
            if stop_at is None and len(distinct) >= want:
                stop_at = time.monotonic() + linger
    finally:
        consumer.close()
    return messages


def decoded(messages: list) -> list[dict]:
    codec = AvroCodec(schemas.READING, "test")
    records = []
    for message in messages:
        record = codec.decode(message.value())
        assert message.key() == record["car_id"].encode()
        records.append(record)
    return records


def readings(cars: int, per_car: int, seed: int = 7) -> list[dict]:
    return list(generate_readings(cars, per_car, seed=seed))


def assert_none_missing(sent: list[dict], records: list[dict]) -> Counter:
    """Every sent (car_id, seq) is in Kafka with the values sent; returns the duplicate counts."""
    counts = Counter((r["car_id"], r["seq"]) for r in records)
    expected = {(r["car_id"], r["seq"]) for r in sent}
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} readings missing, e.g. {sorted(missing)[:5]}"
    assert set(counts) == expected, f"unexpected readings: {sorted(set(counts) - expected)[:5]}"
    by_id = {(r["car_id"], r["seq"]): r for r in sent}
    for record in records:  # as sent, and the bridge's own fields say: in range, seq from the sender
        assert record == {**by_id[(record["car_id"], record["seq"])], "out_of_range": [], "seq_origin": "SENDER"}
    return Counter({key: n - 1 for key, n in counts.items() if n > 1})


def assert_in_order_per_car(messages: list) -> None:
    """Each car's readings sit in one partition in the order of their seq (the order they were published)."""
    by_car: dict[bytes, list] = {}
    for message in messages:
        by_car.setdefault(message.key(), []).append(message)
    for car, mine in by_car.items():
        assert len({m.partition() for m in mine}) == 1, car
        seqs = [r["seq"] for r in decoded(sorted(mine, key=lambda m: m.offset()))]
        assert seqs == sorted(seqs), f"{car!r} out of order: {seqs[:20]}"
