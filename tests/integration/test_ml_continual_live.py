"""`python -m ml continual` against the real Kafka: the continual trainer reads the live readings topic, retrains
when the fleet drifts or new failures come, and registers the result as the challenger (never served), with its
trigger as the decision's reason in the registry and on the decisions topic.

The champion is a small model trained by `python -m ml train` on a simulator fleet (W = 6, H = 3, 2 epochs);
the challengers are trained the same small way (ML_EPOCHS, ML_PATIENCE): what is tested is when and how a
challenger comes, not its quality (the gate judges that, tests/integration/test_ml_judge_live.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.settings import PLAINTEXT
from ml import artifact
from ml.registry import Registry, serving_version
from scripts.testkit.kafka import read_to_end
from scripts.testkit.predictor import Stream
from scripts.testkit.readings import in_other_units, write_readings
from scripts.testkit.rule_models import onsets
from scripts.testkit.training import train_small_model
from simulator.fleet import DEFAULT_START_MS, generate_readings

pytestmark = pytest.mark.timeout(600)
CARS, PER_CAR = 20, 200
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
NEW_EPISODES = 5
STOP_S = 60.0  # SIGTERM to exit 0 for a process that trained with TensorFlow: once over 30 s on a loaded machine
FAST_FIT = {"ML_EPOCHS": "2", "ML_PATIENCE": "1", "ML_BOOTSTRAP": "10"}


def fleet(seed: int, start_time_ms: int) -> list[dict]:
    """Failures often enough for every split of 20 cars to hold some."""
    return list(generate_readings(CARS, PER_CAR, seed=seed, failure_rate=4.0, start_time_ms=start_time_ms))


@pytest.fixture(scope="module")
def champion_fleet_end() -> int:
    return fleet(42, DEFAULT_START_MS)[-1]["event_time"] // HOUR_MS * HOUR_MS + HOUR_MS


@pytest.fixture(scope="module")
def trained_champion(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder holding one version trained on fleet 42 (no registry yet: the trainer adopts it)."""
    models = tmp_path_factory.mktemp("continual-models")
    train_small_model(kafka_bootstrap, fleet(42, DEFAULT_START_MS), models, window=6)
    return models


def models_copy(trained: Path, tmp_path: Path) -> Path:
    """A test's own model folder: a copy of the champion's (each test's registry starts empty)."""
    import shutil

    return Path(shutil.copytree(trained, tmp_path / "models"))


def start_continual(service_factory, kafka_bootstrap, topic_factory, models, records, **settings):
    """The readings written (empty product and shadow topics beside them), then `python -m ml continual`."""
    readings, predictions, shadows = (topic_factory(name, 2) for name in ("readings", "predictions", "shadow"))
    decisions = topic_factory("decisions", 1)
    write_readings(kafka_bootstrap, PLAINTEXT, readings, records, partitions=2)
    service = service_factory(
        "continual", "ml", "continual",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ML_MODEL_DIR=str(models), ML_TOPIC=readings,
        ML_PREDICTIONS_TOPIC=predictions, ML_SHADOW_TOPIC=shadows, ML_DECISIONS_TOPIC=decisions,
        ML_CHECK_INTERVAL="1", ML_RETRAIN_MIN_INTERVAL="0", ML_RETRAIN_PERIOD="0", ML_DRIFT_READINGS="500",
        ML_JUDGE_INTERVAL="5", ML_LOOKBACK_SECONDS="100000000", **FAST_FIT, **settings,
    )  # fmt: skip
    return service, readings, decisions


def registered_challenger(service, models: Path, decisions: str, kafka_bootstrap: str):
    """Wait for the challenger's registration; (the registry, the decision, the decisions on Kafka)."""
    registry = Registry(models)
    service.wait_until(lambda: registry.challenger(), "a challenger registered", timeout=300)
    service.wait_for_log(f"decision register {registry.challenger()} produced to {decisions}")
    on_kafka = [json.loads(m.value()) for m in read_to_end(kafka_bootstrap, decisions)]
    return registry, registry.history()[-1], on_kafka


def test_a_fleet_replayed_in_other_units_triggers_a_retraining_whose_decision_says_why(
    kafka_bootstrap, topic_factory, service_factory, trained_champion, champion_fleet_end, tmp_path
):
    models = models_copy(trained_champion, tmp_path)
    champion = artifact.latest(models).name
    other_units = [in_other_units(r) for r in fleet(7, champion_fleet_end)]
    service, _, decisions = start_continual(
        service_factory, kafka_bootstrap, topic_factory, models, other_units, ML_RETRAIN_EPISODES="100000"
    )
    registry, decision, on_kafka = registered_challenger(service, models, decisions, kafka_bootstrap)
    service.stop_ok(timeout=STOP_S)

    assert registry.champion() == champion, "the version in service was adopted as the champion"
    assert [d.action for d in registry.history()] == ["register", "promote", "register"]
    assert decision.reason.startswith("drift: ") and "out of the champion's training distribution" in decision.reason
    assert decision.figures["trigger"] == "drift" and decision.figures["drift_share"] >= 0.5
    assert decision.figures["start"]["from"] == f"champion {champion}", "warm-started from the champion"
    assert [d["action"] for d in on_kafka][-1] == "register" and on_kafka[-1]["reason"] == decision.reason
    challenger = models / decision.version
    metadata = artifact.read_metadata(challenger)
    champion_metadata = artifact.read_metadata(models / champion)
    assert (metadata["window"], metadata["horizon"]) == (champion_metadata["window"], champion_metadata["horizon"])
    assert metadata["training"]["records"] == len(other_units), "trained on every reading of the drifted fleet"
    assert serving_version(models).name == champion, "a challenger is never served before it is promoted"


def test_new_failure_episodes_trigger_a_retraining_and_the_champions_own_do_not(
    kafka_bootstrap, topic_factory, service_factory, trained_champion, champion_fleet_end, tmp_path
):
    models = models_copy(trained_champion, tmp_path)
    champion = artifact.latest(models).name
    own = fleet(42, DEFAULT_START_MS)  # the champion's own readings: no episode in them is new
    newer = fleet(8, champion_fleet_end)
    service, readings, decisions = start_continual(
        service_factory, kafka_bootstrap, topic_factory, models, own, ML_RETRAIN_EPISODES=str(NEW_EPISODES),
        ML_RETRAIN_DRIFT_SHARE="1.0", ML_HISTORY_READINGS=str(2 * PER_CAR),
    )  # fmt: skip
    service.wait_for_log("no retraining: ")
    assert Registry(models).challenger() is None, "the champion's own episodes trigger nothing"
    write_readings(kafka_bootstrap, PLAINTEXT, readings, newer, partitions=2)
    registry, decision, _ = registered_challenger(service, models, decisions, kafka_bootstrap)
    service.stop_ok(timeout=STOP_S)

    assert registry.champion() == champion
    assert decision.reason.startswith("episodes: ") and "failure episodes started after" in decision.reason
    assert decision.figures["trigger"] == "episodes" and decision.figures["new_episodes"] >= NEW_EPISODES
    assert sum(len(seqs) for seqs in onsets(newer).values()) >= NEW_EPISODES, "the newer fleet holds them"


# The gate on live data: a predictor scores the champion and the registry's challenger (the shadow) on a fleet no
# model saw, and the judge decides. Window and horizon of the demo's kind (a lead-up is 300-900 s of readings).
GATE_W, GATE_H = 10, 20
LIVE_CARS, LIVE_PER_CAR = 20, 360


def live_fleet(seed: int, start_time_ms: int) -> list[dict]:
    """Cars of their own (ids no training fleet used: a car's seq starts again at 0 in each fleet)."""
    readings = generate_readings(LIVE_CARS, LIVE_PER_CAR, seed=seed, failure_rate=4.0, start_time_ms=start_time_ms)
    return [r | {"car_id": f"live-{r['car_id']}"} for r in readings]


def with_shuffled_labels(records: list[dict]) -> list[dict]:
    """Each car's failure flags and modes rotated by half its readings: as many episodes, at the wrong times."""
    by_car: dict[str, list[dict]] = {}
    for r in records:
        by_car.setdefault(r["car_id"], []).append(r)
    out = []
    for readings in by_car.values():
        labels = [(r["failure_occurred"], r.get("failure_mode")) for r in readings]
        half = len(labels) // 2
        labels = labels[half:] + labels[:half]
        out += [r | {"failure_occurred": f, "failure_mode": m} for r, (f, m) in zip(readings, labels, strict=True)]
    return out


def judged(service, registry: Registry, challenger: str, decisions: str):
    """Wait for the verdict on `challenger`; its decision."""
    service.wait_until(lambda: registry.challenger() != challenger, f"a verdict on {challenger}", timeout=300)
    decision = registry.history()[-1]
    service.wait_for_log(f"decision {decision.action} {challenger} produced to {decisions}")
    return decision


def test_a_challenger_trained_on_more_history_is_promoted_by_the_gate_on_live_data(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, predictors, service_factory, tmp_path
):
    """The whole loop: a champion trained on little history serves; the continual trainer trains a challenger on the
    40 cars it has read since; the predictor scores it in the shadow on a new fleet; the judge promotes it."""
    models = tmp_path / "models"
    little = list(generate_readings(8, 150, seed=42, failure_rate=4.0, start_time_ms=DEFAULT_START_MS))
    champion = train_small_model(kafka_bootstrap, little, models, GATE_W, GATE_H).name
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    decisions = topic_factory("decisions", 1)
    predictor = predictors(stream, models)
    more = list(generate_readings(40, 300, seed=5, failure_rate=4.0, start_time_ms=DEFAULT_START_MS + 30 * DAY_MS))
    stream.write(more)
    continual = service_factory(
        "continual", "ml", "continual",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ML_MODEL_DIR=str(models), ML_TOPIC=stream.input,
        ML_PREDICTIONS_TOPIC=stream.output, ML_SHADOW_TOPIC=stream.shadow, ML_DECISIONS_TOPIC=decisions,
        ML_CHECK_INTERVAL="1", ML_RETRAIN_MIN_INTERVAL="0", ML_RETRAIN_PERIOD="0", ML_RETRAIN_EPISODES="20",
        ML_JUDGE_INTERVAL="3", ML_LOOKBACK_SECONDS="100000000", ML_EPOCHS="10", ML_PATIENCE="3",
        ML_BOOTSTRAP="10",
    )  # fmt: skip
    registry = Registry(models)
    continual.wait_until(lambda: registry.challenger(), "a challenger trained", timeout=300)
    challenger = registry.challenger()
    predictor.wait_for_log(f"scoring challenger {challenger} in the shadow")
    live = live_fleet(9, DEFAULT_START_MS + 60 * DAY_MS)
    stream.write(live)
    decision = judged(continual, registry, challenger, decisions)
    continual.stop_ok(timeout=STOP_S)
    predictor.stop_ok()

    assert registry.history()[-2].reason.startswith("episodes: "), "trained because new failures came"
    assert artifact.read_metadata(models / challenger)["training"]["cars"] == 40
    assert decision.action == "promote", decision.reason
    assert (decision.version, decision.previous_champion) == (challenger, champion)
    figures = decision.figures
    assert figures["champion"]["episodes"] >= 10 and figures["challenger"]["warned"] >= figures["champion"]["warned"]
    print(f"gate, a challenger trained on more history: {decision.reason}")


def test_a_challenger_trained_on_shuffled_labels_is_never_promoted(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, predictors, service_factory, tmp_path
):
    models = tmp_path / "models"
    history = list(generate_readings(40, 300, seed=5, failure_rate=4.0, start_time_ms=DEFAULT_START_MS))
    champion = train_small_model(kafka_bootstrap, history, models, GATE_W, GATE_H, epochs=10).name
    challenger = train_small_model(kafka_bootstrap, with_shuffled_labels(history), models, GATE_W, GATE_H, 10).name
    registry = Registry(models)
    registry.register_challenger(champion, "the first model")
    registry.promote("the first model")
    registry.register_challenger(challenger, "trained on shuffled labels")
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    decisions = topic_factory("decisions", 1)
    predictor = predictors(stream, models)
    predictor.wait_for_log(f"scoring challenger {challenger} in the shadow")
    stream.write(live_fleet(9, DEFAULT_START_MS + 60 * DAY_MS))
    judge = service_factory(
        "judge", "ml", "judge",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ML_MODEL_DIR=str(models), ML_TOPIC=stream.input,
        ML_PREDICTIONS_TOPIC=stream.output, ML_SHADOW_TOPIC=stream.shadow, ML_DECISIONS_TOPIC=decisions,
        ML_JUDGE_INTERVAL="3",
    )  # fmt: skip
    decision = judged(judge, registry, challenger, decisions)
    judge.stop_ok()
    predictor.stop_ok()

    assert decision.action == "reject", decision.reason
    assert registry.champion() == champion
    print(f"gate, a challenger trained on shuffled labels: {decision.reason}")
