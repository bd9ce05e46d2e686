"""A small model trained for a test by the real `python -m ml train`, on readings written to a topic of its own."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from common.settings import PLAINTEXT
from ml import artifact
from scripts.testkit.kafka import delete_topics, unique
from scripts.testkit.readings import write_readings
from scripts.testkit.services import run_module


def train_small_model(
    kafka: str, records: Iterable[dict], model_dir: Path, window: int, horizon: int = 3, epochs: int = 2
) -> Path:
    """Train on `records` (2 partitions; 2 epochs by default: seconds, not quality) into `model_dir`; the new
    version's path."""
    topic = unique("small-model-train")
    write_readings(kafka, PLAINTEXT, topic, records, partitions=2)
    patience = "1" if epochs <= 2 else "3"
    options = ("--window", str(window), "--horizon", str(horizon), "--epochs", str(epochs), "--patience", patience)
    try:
        run_module("ml", "train", "--topic", topic, "--model-dir", str(model_dir), *options, "--reader", "confluent",
                   KAFKA_BOOTSTRAP_SERVERS=kafka)  # fmt: skip
    finally:
        delete_topics(kafka, [topic])
    path = artifact.latest(model_dir)
    assert path is not None, f"python -m ml train saved no version in {model_dir}"
    return path
