"""Fixtures of the integration tests that run `python -m bridge` as a process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_process import BridgeProcess


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator:
    started: list[BridgeProcess] = []

    def start(kafka: str, mqtt_port: int, topics: tuple[str, str], client_id: str = "bridge-a", **env: str):
        bridge = BridgeProcess(
            tmp_path,
            {
                "KAFKA_BOOTSTRAP_SERVERS": kafka,
                "MQTT_HOST": "127.0.0.1",
                "MQTT_PORT": str(mqtt_port),
                "BRIDGE_KAFKA_TOPIC": topics[0],
                "BRIDGE_DLQ_TOPIC": topics[1],
                **env,
            },
            client_id,
        )
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        if bridge.process.poll() is None:
            bridge.kill()


@pytest.fixture
def bridge_topics() -> tuple[str, str]:
    """Unique names; the bridge creates the topics itself."""
    suffix = uuid.uuid4().hex[:10]
    return f"bridge-readings-{suffix}", f"bridge-dlq-{suffix}"
