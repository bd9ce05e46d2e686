"""The model registry against the real Kafka: `python -m ml registry` promotes and rolls back the model that a
running `python -m ml predict` serves, without a restart, and produces every decision to the decisions topic.

The models are untrained (ml/training/untrained_model.py) with different seeds, so their probabilities differ:
what is tested is which version serves each reading, counted by (car_id, seq).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ml.registry import Registry
from ml.training.untrained_model import save_untrained_model
from scripts.testkit.kafka import read_to_end
from scripts.testkit.predictor import Stream, assert_served_in_phases, covered
from scripts.testkit.services import run_module
from simulator.fleet import generate_readings


def registry(kafka_bootstrap: str, models: Path, decisions: str, *args: str) -> None:
    """`python -m ml registry ARGS` with Kafka given: each decision goes to the file and to `decisions`."""
    run_module(
        "ml",
        "registry",
        *args,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        ML_MODEL_DIR=str(models),
        ML_DECISIONS_TOPIC=decisions,
        timeout=120,
    )


def test_promotion_and_rollback_switch_a_running_predictor_and_every_decision_reaches_kafka(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, predictors, tmp_path
):
    models = tmp_path / "models"
    decisions = topic_factory("decisions", 1)
    decide = functools.partial(registry, kafka_bootstrap, models, decisions)
    a = save_untrained_model(models, window=6, threshold=0.3, seed=1).name
    decide("register", a, "--reason", "the first model")
    decide("promote")
    b = save_untrained_model(models, window=6, threshold=0.3, seed=2).name  # newer, but not served until promoted
    assert b > a

    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    readings = list(generate_readings(cars=8, readings_per_car=30, seed=4))
    phases = [readings[:80], readings[80:160], readings[160:]]
    predictor = predictors(stream, models)
    stream.write(phases[0])
    stream.collect(covered(phases[0]))

    decide("register", b, "--reason", "retrained")
    decide("promote", "--reason", "better on the test cars")
    predictor.wait_for_log(f"serving model {b}")
    stream.write(phases[1])
    stream.collect(covered(phases[0] + phases[1]))

    decide("rollback", "--reason", "too many alerts live")
    predictor.wait_for_log(f"serving model {a}", times=2)  # once at the start, once after the rollback
    stream.write(phases[2])
    stream.collect(covered(readings))
    assert predictor.running(), "the predictor must not restart to switch models"
    predictor.stop_ok()

    assert_served_in_phases(stream, 2, phases, (a, b, a))

    records = read_to_end(kafka_bootstrap, decisions)
    values = [json.loads(m.value().decode("utf-8")) for m in records]
    assert [(v["action"], v["version"], v["previous_champion"]) for v in values] == [
        ("register", a, None),
        ("promote", a, None),
        ("register", b, a),
        ("promote", b, a),
        ("rollback", a, b),
    ]
    assert [m.key().decode() for m in records] == [a, a, b, b, a]
    assert [v["reason"] for v in values][-3:] == ["retrained", "better on the test cars", "too many alerts live"]
    file_history = [json.loads(d.to_json()) for d in Registry(models).history()]
    assert values == file_history, "the topic carries the file's decisions, the source of truth"
