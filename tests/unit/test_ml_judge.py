"""The judge (ml/continual/): its lookback stays bounded (the newest readings per car, a cap on cars, predictions
per car) and hands live_eval what it keeps; a round judges only the champion's predictions of the product topic
and the challenger's of the shadow topic, and carries the gate's verdict out in a real registry in a folder.
No Kafka here: tests/integration/test_ml_judge.py runs `python -m ml judge` against the real one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.topics import MODEL_DECISIONS_TOPIC, PREDICTIONS_TOPIC, READINGS_TOPIC, SHADOW_PREDICTIONS_TOPIC
from ml.__main__ import main as ml_main
from ml.continual.cli import build_parser
from ml.continual.judge import Judge
from ml.continual.lookback import PRODUCT, SHADOW, Lookback
from ml.continual.settings import JudgeSettings
from ml.gate import GateRule
from ml.live_eval import head_to_head
from ml.registry import Decision, Registry, read_judgement
from scripts.testkit.registry import metadata_version
from scripts.testkit.rule_models import fleet, never, noisy_oracle, oracle, shuffled

H, W = 30, 10
CHAMPION, CHALLENGER, STALE = "20240101T000000Z", "20240102T000000Z", "20231201T000000Z"


class Clock:
    """A clock the test moves: when a car was seen last."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reading(car: str, seq: int, failed: bool = False) -> dict:
    return {"car_id": car, "seq": seq, "event_time": 1_700_000_000_000 + seq * 10_000, "failure_occurred": failed}


def prediction(car: str, seq: int, version: str, probability: float = 0.1) -> dict:
    return {
        "car_id": car,
        "seq": seq,
        "model_version": version,
        "failure_probability": probability,
        "failure_predicted": probability >= 0.5,
        "alert_suppressed": False,
    }


# -- the lookback ------------------------------------------------------------------------------------------------


def test_each_car_keeps_its_newest_readings_in_their_order_of_arrival() -> None:
    lookback = Lookback(per_car=5, max_cars=10, idle_seconds=60)
    for seq in range(8):
        lookback.add_reading(reading("a", seq, failed=seq == 6))
    lookback.add_reading(reading("b", 0))
    kept = lookback.readings()
    assert [(r["car_id"], r["seq"]) for r in kept] == [("a", 3), ("a", 4), ("a", 5), ("a", 6), ("a", 7), ("b", 0)]
    assert [r["failure_occurred"] for r in kept[:5]] == [False, False, False, True, False]
    assert kept[0]["event_time"] == 1_700_000_030_000 and kept[0]["seq_origin"] == "SENDER"
    assert lookback.counts() == {"cars": 2, "readings": 6, PRODUCT: 0, SHADOW: 0}


def test_past_the_cap_new_cars_are_ignored_until_the_least_recent_car_is_idle() -> None:
    clock = Clock()
    lookback = Lookback(per_car=4, max_cars=3, idle_seconds=60, clock=clock)
    for car in ("a", "b", "c"):
        lookback.add_reading(reading(car, 0))
    clock.now = 30
    lookback.add_reading(reading("a", 1))
    lookback.add_reading(reading("d", 0))  # the cars kept are not idle: d is not kept, nothing forgotten
    lookback.add_prediction(PRODUCT, prediction("d", 0, CHAMPION))
    assert {r["car_id"] for r in lookback.readings()} == {"a", "b", "c"}
    assert (lookback.ignored, lookback.evicted_cars) == (2, 0)
    assert lookback.predictions(PRODUCT, CHAMPION) == []

    clock.now = 61  # b, seen least recently (at 0), has been silent for 61 s: d takes its place
    lookback.add_reading(reading("d", 0))
    assert {r["car_id"] for r in lookback.readings()} == {"a", "c", "d"}
    assert lookback.evicted_cars == 1
    lookback.add_reading(reading("e", 0))  # c is idle too: e takes its place; a (seen at 30) stays
    assert {r["car_id"] for r in lookback.readings()} == {"a", "d", "e"}


def test_a_flood_of_readings_predictions_and_new_cars_stays_within_the_bounds() -> None:
    clock = Clock()
    lookback = Lookback(per_car=50, max_cars=20, idle_seconds=600, clock=clock)
    rng = random.Random(5)
    for number in range(20):
        lookback.add_reading(reading(f"car-{number}", 0))
    for step in range(60_000):
        clock.now = step / 100  # 600 s in all: the first cars never fall idle while they keep reporting
        car = f"car-{step // 2 % 20}" if step % 2 else f"flood-{rng.randrange(10**9)}"
        lookback.add_reading(reading(car, step))
        lookback.add_prediction(PRODUCT, prediction(car, step, CHAMPION))
        lookback.add_prediction(SHADOW, prediction(car, rng.randrange(100), f"v{rng.randrange(10**6)}"))
    counts = lookback.counts()
    assert counts["cars"] == 20
    assert counts["readings"] <= 20 * 50 and counts[PRODUCT] <= 20 * 50 and counts[SHADOW] <= 20 * 50
    # the cars that kept reporting keep their places; every flood car was turned away
    assert {r["car_id"] for r in lookback.readings()} == {f"car-{n}" for n in range(20)}
    assert len(lookback._versions) <= 16  # the version names kept once: no flood of made-up versions grows them


def test_predictions_are_bounded_per_car_and_side_and_the_first_of_a_duplicate_is_kept() -> None:
    lookback = Lookback(per_car=3, max_cars=5, idle_seconds=60)
    lookback.add_prediction(PRODUCT, prediction("a", 0, CHAMPION, probability=0.9))
    lookback.add_prediction(PRODUCT, prediction("a", 0, CHAMPION, probability=0.2))  # a redelivery: the first stays
    for seq in range(1, 5):
        lookback.add_prediction(PRODUCT, prediction("a", seq, CHAMPION))
    kept = lookback.predictions(PRODUCT, CHAMPION)
    assert [p["seq"] for p in kept] == [2, 3, 4]  # the oldest to arrive went
    lookback.add_prediction(SHADOW, prediction("a", 0, CHALLENGER, probability=0.9))
    assert lookback.predictions(SHADOW, CHALLENGER)[0]["failure_probability"] == 0.9
    assert lookback.predictions(SHADOW, CHALLENGER)[0]["failure_predicted"] is True


def test_predictions_are_handed_out_by_model_version_and_side() -> None:
    lookback = Lookback(per_car=10, max_cars=5, idle_seconds=60)
    for seq in range(3):
        lookback.add_prediction(PRODUCT, prediction("a", seq, CHAMPION))
        lookback.add_prediction(PRODUCT, prediction("a", seq, STALE))  # the champion before, still on the topic
        lookback.add_prediction(SHADOW, prediction("a", seq, CHALLENGER))
    assert {p["model_version"] for p in lookback.predictions(PRODUCT, CHAMPION)} == {CHAMPION}
    assert len(lookback.predictions(PRODUCT, CHAMPION)) == 3
    assert lookback.predictions(PRODUCT, CHALLENGER) == [], "a side hands out its own topic's predictions only"
    assert lookback.predictions(SHADOW, CHAMPION) == []

    assert lookback.keep_only(product=CHAMPION, shadow=CHALLENGER) == 3  # the stale ones
    assert lookback.counts()[PRODUCT] == 3 and lookback.predictions(PRODUCT, STALE) == []
    assert lookback.keep_only(product=CHAMPION, shadow=None) == 3  # no challenger: the shadow side empties
    assert lookback.forget(PRODUCT) == 3 and lookback.counts()[PRODUCT] == 0


# -- a round of the judge ----------------------------------------------------------------------------------------


def version(model_dir: Path, name: str) -> None:
    """With the rule models' window and horizon (no model is loaded)."""
    metadata_version(model_dir, name, window=W, horizon=H)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return fleet(cars=20, per_car=360, seed=11)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    for name in (STALE, CHAMPION, CHALLENGER):
        version(tmp_path, name)
    registry = Registry(tmp_path)
    registry.register_challenger(CHAMPION, "first")
    registry.promote("first")
    registry.register_challenger(CHALLENGER, "retrained")
    return registry


def fed(records: list[dict], product: list[dict], shadow: list[dict]) -> Lookback:
    # room for two versions' predictions of every reading (360 per car) on each side
    lookback = Lookback(per_car=720, max_cars=20, idle_seconds=600)
    for record in records:
        lookback.add_reading(record)
    for record in product:
        lookback.add_prediction(PRODUCT, record)
    for record in shadow:
        lookback.add_prediction(SHADOW, record)
    return lookback


def test_a_round_judges_the_registry_versions_only_and_promotes_the_better_challenger(records, registry) -> None:
    champion = noisy_oracle(records, H, W, seed=11, version=CHAMPION)
    challenger = oracle(records, H, W, version=CHALLENGER)
    # other versions on both topics: were they judged, live_eval would refuse a mix of versions
    product = never(records, W, version=STALE) + champion
    shadow = shuffled(champion, 3, W, records, STALE) + challenger
    lookback = fed(records, product, shadow)
    published: list[Decision] = []
    judge = Judge(registry, lookback, GateRule(), published.append)

    assert judge.round() == "promote"
    assert (registry.champion(), registry.challenger()) == (CHALLENGER, None)
    decision = registry.history()[-1]
    assert (decision.action, decision.version, decision.previous_champion) == ("promote", CHALLENGER, CHAMPION)
    assert decision.reason.startswith(f"promote {CHALLENGER} over {CHAMPION}")
    expected = head_to_head(records, champion, challenger, H, W)
    assert decision.figures["champion"] == expected[0].as_dict()
    assert decision.figures["challenger"] == expected[1].as_dict()
    assert decision.figures["challenger"]["warned"] >= decision.figures["champion"]["warned"]
    assert decision.figures["champion"]["episodes"] >= GateRule().min_episodes
    assert decision.figures["gate"] == {"horizon": H, "window": W, "rule": GateRule().model_dump()}
    assert published == [decision]
    assert lookback.counts()[SHADOW] == 0, "after a decision the challenger's predictions are forgotten"
    judgement = read_judgement(registry.model_dir)  # what the dashboard shows: the round, its pair and figures
    assert (judgement.champion, judgement.challenger, judgement.verdict) == (CHAMPION, CHALLENGER, "promote")
    assert (judgement.reason, judgement.figures) == (decision.reason, decision.figures)

    assert judge.round() is None  # no challenger left: nothing to judge, nothing decided
    assert len(registry.history()) == 4 and published == [decision]


def test_a_shuffled_challenger_is_rejected_naming_the_failed_conditions(records, registry) -> None:
    champion = noisy_oracle(records, H, W, seed=11, version=CHAMPION)
    lookback = fed(records, champion, shuffled(champion, 11, W, records, CHALLENGER))
    published: list[Decision] = []
    assert Judge(registry, lookback, GateRule(), published.append).round() == "reject"
    assert (registry.champion(), registry.challenger()) == (CHAMPION, None)
    decision = registry.history()[-1]
    assert (decision.action, decision.version) == ("reject", CHALLENGER)
    assert "lower PR-AUC" in decision.reason and "more false alerts" in decision.reason
    assert published == [decision]


def test_too_few_episodes_or_no_prediction_of_a_model_is_a_wait_that_decides_nothing(records, registry) -> None:
    early = [r for r in records if r["seq"] < 40]  # few episodes have matured in a car's first 40 readings
    champion = noisy_oracle(early, H, W, seed=11, version=CHAMPION)
    published: list[Decision] = []
    judge = Judge(registry, fed(early, champion, oracle(early, H, W, version=CHALLENGER)), GateRule(), published.append)
    assert judge.round() == "wait"
    judged = read_judgement(registry.model_dir)
    assert (judged.verdict, judged.champion, judged.challenger) == ("wait", CHAMPION, CHALLENGER)
    assert judged.reason.startswith("wait: ") and judged.figures["gate"]["rule"] == GateRule().model_dump()
    assert judged.figures["champion"]["episodes"] < GateRule().min_episodes
    only_stale = Judge(registry, fed(records, champion, oracle(records, H, W, version=STALE)), GateRule())
    assert only_stale.round() == "wait"
    assert read_judgement(registry.model_dir) == judged, "a round with nothing to judge writes no judgement"
    assert registry.challenger() == CHALLENGER and len(registry.history()) == 3 and published == []


def test_a_judgement_that_cannot_be_written_is_logged_and_the_verdict_still_carried_out(records, registry, caplog):
    registry.judgement_file.mkdir()  # os.replace cannot put a file there
    champion = noisy_oracle(records, H, W, seed=11, version=CHAMPION)
    judge = Judge(registry, fed(records, champion, oracle(records, H, W, version=CHALLENGER)), GateRule())
    assert judge.round() == "promote"
    assert registry.champion() == CHALLENGER
    assert f"this round's judgement is not written to {registry.judgement_file}" in caplog.text


# -- the command -------------------------------------------------------------------------------------------------


def test_settings_defaults_flags_and_environment(monkeypatch) -> None:
    settings = JudgeSettings()
    assert (settings.topic, settings.predictions_topic, settings.shadow_topic, settings.decisions_topic) == (
        READINGS_TOPIC,
        PREDICTIONS_TOPIC,
        SHADOW_PREDICTIONS_TOPIC,
        MODEL_DECISIONS_TOPIC,
    )
    assert (settings.lookback_readings, settings.lookback_cars) == (360, 500)
    monkeypatch.setenv("ML_JUDGE_INTERVAL", "5")
    monkeypatch.setenv("ML_LOOKBACK_READINGS", "120")
    args = build_parser().parse_args(["--lookback-cars", "50"])
    from common.cli import settings_from_args

    settings = settings_from_args(JudgeSettings, args)
    assert (settings.judge_interval, settings.lookback_readings, settings.lookback_cars) == (5.0, 120, 50)
    with pytest.raises(ConfigError, match="must differ"):
        settings_from_args(JudgeSettings, build_parser().parse_args(["--shadow-topic", PREDICTIONS_TOPIC]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--reader", "tfio"])  # not the judge's


def test_the_ml_command_names_the_judge(capsys) -> None:
    assert ml_main(["--help"]) == 0
    assert "python -m ml judge" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        ml_main(["judge", "--help"])
    assert stopped.value.code == 0
    assert "--judge-interval" in capsys.readouterr().out
