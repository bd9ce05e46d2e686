"""Fixtures of the integration tests that run `python -m bridge` and `python -m ml predict` as child services
(scripts/testkit/bridge.py, scripts/testkit/predictor.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ml.training.untrained_model import save_untrained_model
from scripts.testkit.bridge import start_bridge
from scripts.testkit.predictor import Stream, start_java_predictor, start_predictor
from scripts.testkit.services import ChildService


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Callable[..., ChildService]]:
    """`start(kafka, mqtt_port, (readings topic, DLQ topic), client_id="bridge-a", **env)`: a bridge connected to
    the broker; whatever still runs after the test is killed."""
    started: list[ChildService] = []

    def start(kafka: str, mqtt_port: int, topics: tuple[str, str], client_id: str = "bridge-a", **env: str):
        settings = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": str(mqtt_port),
            "BRIDGE_KAFKA_TOPIC": topics[0],
            "BRIDGE_DLQ_TOPIC": topics[1],
            **env,
        }
        started.append(start_bridge(tmp_path, settings, client_id))
        return started[-1]

    yield start
    for bridge in started:
        bridge.kill()


@pytest.fixture
def bridge_topics() -> tuple[str, str]:
    """Unique names; the bridge creates the topics itself."""
    suffix = uuid.uuid4().hex[:10]
    return f"bridge-readings-{suffix}", f"bridge-dlq-{suffix}"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """An untrained model (window 6, threshold 0.3): the predictor's tests are about delivery, not the model."""
    save_untrained_model(tmp_path / "models", window=6, threshold=0.3)
    return tmp_path / "models"


def _serving_programs(
    start_one: Callable[..., ChildService], log_dir: Path, prefix: str
) -> Iterator[Callable[..., ChildService]]:
    """`start(stream, model_dir, **env)` with `start_one` (<prefix>-<n>.log in log_dir); whatever still runs after
    the test is killed."""
    started: list[ChildService] = []

    def start(stream: Stream, model_dir: Path, **env: str) -> ChildService:
        started.append(start_one(stream, model_dir, log_dir, f"{prefix}-{len(started)}", **env))
        return started[-1]

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def predictors(tmp_path: Path) -> Iterator[Callable[..., ChildService]]:
    """`start(stream, model_dir, **env)`: a predictor on the stream's topics (predictor-<n>.log in tmp_path)."""
    yield from _serving_programs(start_predictor, tmp_path, "predictor")


@pytest.fixture
def java_predictors(tmp_path: Path) -> Iterator[Callable[..., ChildService]]:
    """`start(stream, model_dir, **env)`: the Java serving program (ml/streams/) on the stream's topics, the stream's
    group its application id (java-<n>.log in tmp_path, its state beside it)."""
    yield from _serving_programs(start_java_predictor, tmp_path, "java")
