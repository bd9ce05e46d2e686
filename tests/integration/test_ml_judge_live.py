"""The judge against the real Kafka: `python -m ml judge` reads a fleet's readings, the champion's predictions (the
product topic) and the challenger's (the shadow topic), and carries the promotion gate's verdict out in a registry
in a folder and on the decisions topic.

The models are rule models (scripts/testkit/rule_models.py) whose quality is known by construction; their versions
are untrained artifacts (ml/training/untrained_model.py) with the rule models' window and horizon, so that the
registry knows them and the judge reads H and W from the champion's metadata. 20 cars of 360 readings (seed 11)
hold more matured failure episodes than the gate's default min_episodes (10): ML_GATE_MIN_EPISODES is left alone.
"""

from __future__ import annotations

import json

from common import schemas
from common.settings import PLAINTEXT
from ml.registry import Registry
from scripts.testkit.kafka import read_to_end
from scripts.testkit.readings import write_readings, write_records
from scripts.testkit.registry import champion_and_challenger
from scripts.testkit.rule_models import as_written, fleet, never, noisy_oracle, oracle, shuffled

H, W = 30, 10
OLD_CHAMPION = "20200101T000000Z"  # a version whose predictions are still on the product topic: never judged


def start_judge(service_factory, kafka_bootstrap, topic_factory, models, records, product, shadow):
    """The three topics written, then `python -m ml judge` on them; returns (the judge, the decisions topic)."""
    readings, predictions, shadows = (topic_factory(name, 3) for name in ("readings", "predictions", "shadow"))
    decisions = topic_factory("decisions", 1)
    write_readings(kafka_bootstrap, PLAINTEXT, readings, records)
    for topic, written in ((predictions, product), (shadows, shadow)):
        write_records(kafka_bootstrap, PLAINTEXT, topic, as_written(written, records, H), schemas.PREDICTION)
    judge = service_factory(
        "judge",
        "ml",
        "judge",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        ML_MODEL_DIR=str(models),
        ML_TOPIC=readings,
        ML_PREDICTIONS_TOPIC=predictions,
        ML_SHADOW_TOPIC=shadows,
        ML_DECISIONS_TOPIC=decisions,
        ML_JUDGE_INTERVAL="1",
    )
    return judge, decisions


def decisions_on_kafka(kafka_bootstrap: str, topic: str) -> list[tuple[str, dict]]:
    return [(m.key().decode(), json.loads(m.value().decode("utf-8"))) for m in read_to_end(kafka_bootstrap, topic)]


def test_a_better_challenger_is_promoted_and_the_decision_reaches_the_file_and_kafka(
    kafka_bootstrap, topic_factory, service_factory, tmp_path
):
    models = tmp_path / "models"
    champion, challenger = champion_and_challenger(models, W, H)
    records = fleet(cars=20, per_car=360, seed=11)
    product = never(records, W, version=OLD_CHAMPION) + noisy_oracle(records, H, W, seed=11, version=champion)
    shadow = oracle(records, H, W, version=challenger)
    judge, decisions = start_judge(service_factory, kafka_bootstrap, topic_factory, models, records, product, shadow)

    registry = Registry(models)
    judge.wait_until(lambda: registry.champion() == challenger, f"{challenger} promoted", timeout=180)
    judge.wait_for_log(f"decision promote {challenger} produced to {decisions}")
    judge.wait_for_log("nothing to judge: the registry")  # the next round: no challenger left
    judge.stop_ok()

    assert registry.challenger() is None
    last = registry.history()[-1]
    assert (last.action, last.version, last.previous_champion) == ("promote", challenger, champion)
    assert last.reason.startswith(f"promote {challenger} over {champion}")
    figures = last.figures
    assert (figures["champion"]["model_version"], figures["challenger"]["model_version"]) == (champion, challenger)
    assert figures["challenger"]["warned"] >= figures["champion"]["warned"]
    assert figures["challenger"]["warned"] == figures["challenger"]["episodes"] >= 10
    # every reading of the fleet was read: each matured reading judged (both models predicted it)
    assert figures["champion"]["unjudged"] == 0 and figures["champion"]["matured_readings"] > 20 * (360 - H - W)
    assert figures["gate"]["horizon"] == H and figures["gate"]["window"] == W
    assert decisions_on_kafka(kafka_bootstrap, decisions) == [(challenger, json.loads(last.to_json()))]
    assert sum("promote" in d.action for d in registry.history()) == 2, "one promotion by the judge, once"


def test_a_shuffled_challenger_is_rejected_and_the_reason_names_the_failed_conditions(
    kafka_bootstrap, topic_factory, service_factory, tmp_path
):
    models = tmp_path / "models"
    champion, challenger = champion_and_challenger(models, W, H)
    records = fleet(cars=20, per_car=360, seed=11)
    product = noisy_oracle(records, H, W, seed=11, version=champion)
    shadow = shuffled(product, 11, W, records, challenger)
    judge, decisions = start_judge(service_factory, kafka_bootstrap, topic_factory, models, records, product, shadow)

    registry = Registry(models)
    judge.wait_until(lambda: registry.challenger() is None, f"a decision on {challenger}", timeout=180)
    judge.wait_for_log(f"decision reject {challenger} produced to {decisions}")
    judge.stop_ok()

    assert registry.champion() == champion, "the champion stays"
    history = registry.history()
    assert [(d.action, d.version) for d in history[-2:]] == [("register", challenger), ("reject", challenger)]
    reason = history[-1].reason
    assert reason.startswith(f"reject {challenger}, {champion} stays: ")
    assert "lower PR-AUC" in reason and "more false alerts" in reason
    assert decisions_on_kafka(kafka_bootstrap, decisions) == [(challenger, json.loads(history[-1].to_json()))]
