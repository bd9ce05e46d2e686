"""The bridge under test: `python -m bridge` as a child service on its own metrics port, and the checks its tests
count readings with (car_id, seq)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import Message

from scripts.runtime.local import free_port
from scripts.testkit.readings import as_in_kafka, decoded
from scripts.testkit.services import ChildService, python_env


def start_bridge(log_dir: Path, env: Mapping[str, str], client_id: str) -> ChildService:
    """`python -m bridge` with `env` (servers, topics, options) as MQTT client `client_id`, logging every 2 s;
    returns once it is connected to the broker (AssertionError with its log otherwise)."""
    port = free_port()
    settings = {**env, "BRIDGE_CLIENT_ID": client_id, "BRIDGE_METRICS_PORT": str(port), "BRIDGE_LOG_INTERVAL": "2"}
    name = f"bridge-{client_id}-{uuid.uuid4().hex[:6]}"
    bridge = ChildService(name, "bridge", (), python_env(**settings), log_dir, metrics_port=port).start()
    try:
        bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_connected") == 1.0, "MQTT connection")
    except AssertionError:
        bridge.kill()
        raise
    return bridge


def assert_none_missing(sent: list[dict], records: list[dict]) -> Counter:
    """Every sent (car_id, seq) is in Kafka with the values sent; returns the duplicate counts."""
    counts = Counter((r["car_id"], r["seq"]) for r in records)
    expected = {(r["car_id"], r["seq"]) for r in sent}
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} readings missing, e.g. {sorted(missing)[:5]}"
    assert set(counts) == expected, f"unexpected readings: {sorted(set(counts) - expected)[:5]}"
    by_id = {(r["car_id"], r["seq"]): r for r in sent}
    for record in records:  # as sent, and the bridge's own fields say: in range, seq from the sender
        assert record == as_in_kafka(by_id[(record["car_id"], record["seq"])])
    return Counter({key: n - 1 for key, n in counts.items() if n > 1})


def assert_in_order_per_car(messages: list[Message]) -> None:
    """Each car's readings sit in one partition in the order of their seq (the order they were published)."""
    by_car: dict[bytes, list[Message]] = {}
    for message in messages:
        by_car.setdefault(message.key(), []).append(message)
    for car, mine in by_car.items():
        assert len({m.partition() for m in mine}) == 1, car
        seqs = [r["seq"] for r in decoded(sorted(mine, key=lambda m: m.offset()))]
        assert seqs == sorted(seqs), f"{car!r} out of order: {seqs[:20]}"
