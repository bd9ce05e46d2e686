"""ml/gate.py's rule on live figures (ml/live_eval.py) of models made of rules (scripts/testkit/rule_models.py)
on the simulator's readings: it waits for enough episodes, promotes a better model, never a model of shuffled
probabilities, and names the condition a rejected challenger failed."""

from __future__ import annotations

import json

import pytest

from ml.gate import Decision, GateRule, decide
from ml.live_eval import head_to_head, live_figures
from scripts.testkit.rule_models import fleet, never, noisy_oracle, oracle, publish, shuffled, warning_keys

H = 30
W = 10


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return fleet(cars=20, per_car=360, seed=11)


def judge(records: list[dict], champion: list[dict], challenger: list[dict], rule: GateRule | None = None) -> Decision:
    decision = decide(*head_to_head(records, champion, challenger, H, W), rule)
    json.dumps(decision.figures, allow_nan=False)
    return decision


def test_the_defaults_and_their_environment_variables(monkeypatch) -> None:
    assert GateRule().model_dump() == {
        "min_episodes": 10, "pr_auc_margin": 0.02, "false_alert_margin": 0.0, "false_alert_budget": 0.1,
    }  # fmt: skip
    monkeypatch.setenv("ML_GATE_MIN_EPISODES", "25")
    monkeypatch.setenv("ML_GATE_FALSE_ALERT_MARGIN", "0.5")
    assert (GateRule().min_episodes, GateRule().false_alert_margin) == (25, 0.5)


def test_it_waits_until_both_models_were_judged_on_min_episodes(records) -> None:
    champion, challenger = never(records, W, version="v1"), oracle(records, H, W, version="v2")
    episodes = live_figures(records, champion, H, W).episodes
    waiting = judge(records, champion, challenger, GateRule(min_episodes=episodes + 1))
    assert waiting.verdict == "wait"
    assert f"{episodes} matured failure episodes judged, {episodes + 1} needed" in waiting.reason
    # the same models on the cars' first readings only: fewer episodes have matured
    early = [r for r in records if r["seq"] < 60]
    assert judge(early, champion, challenger).verdict == "wait"


def test_the_oracle_is_promoted_over_a_model_that_never_alerts(records) -> None:
    decision = judge(records, never(records, W, version="v1"), oracle(records, H, W, version="v2"))
    assert decision.verdict == "promote"
    assert decision.reason.startswith("promote v2 over v1")
    figures = decision.figures
    assert figures["challenger"]["warned"] == figures["challenger"]["episodes"] >= 10
    assert (figures["champion"]["warned"], figures["challenger"]["pr_auc"]) == (0, 1.0)
    assert f"v2: warned {figures['challenger']['warned']}," in decision.reason and "v1: warned 0," in decision.reason


def test_the_oracle_is_never_replaced_by_its_shuffled_probabilities(records) -> None:
    champion = oracle(records, H, W, version="oracle")
    decision = judge(records, champion, shuffled(champion, 3, W, records, "shuffled"))
    assert decision.verdict == "reject"
    assert "more false alerts" in decision.reason and "lower PR-AUC" in decision.reason
    # and the other way round
    assert judge(records, shuffled(champion, 3, W, records, "shuffled"), champion).verdict == "promote"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_shuffled_challenger_is_never_promoted_over_a_reasonable_champion(seed) -> None:
    records = fleet(cars=20, per_car=360, seed=seed)
    champion = noisy_oracle(records, H, W, seed, version="champion")
    decision = judge(records, champion, shuffled(champion, seed, W, records, "shuffled"))
    assert decision.verdict == "reject", decision.reason
    assert "lower PR-AUC" in decision.reason and "more false alerts" in decision.reason


def test_fewer_episodes_warned_alone_is_a_reject_naming_it(records) -> None:
    # an oracle that keeps every other car's warnings just under the threshold: ranking intact, no false alert
    truth = warning_keys(records, H)
    cars = sorted({car for car, _ in truth})
    forgetful = {key: 1.0 if cars.index(key[0]) % 2 else 0.49 for key in truth}
    decision = judge(records, oracle(records, H, W, version="v1"), publish(records, forgetful, "v2", W))
    assert decision.verdict == "reject"
    assert decision.figures["challenger"]["pr_auc"] == 1.0
    assert "warned fewer episodes" in decision.reason
    assert "false alerts (" not in decision.reason and "lower PR-AUC" not in decision.reason


def test_as_many_episodes_warned_with_more_false_alerts_is_a_reject(records) -> None:
    truth = warning_keys(records, H)
    healthy = sorted({(r["car_id"], r["seq"]) for r in records if not r["failure_occurred"]} - truth)
    noisy = dict.fromkeys(truth, 1.0) | dict.fromkeys(healthy[100:103], 1.0)  # one false alarm, in a car's middle
    decision = judge(records, oracle(records, H, W, version="v1"), publish(records, noisy, "v2", W))
    figures = decision.figures
    assert figures["challenger"]["warned"] == figures["champion"]["warned"]
    assert (figures["champion"]["false_alerts"], figures["challenger"]["false_alerts"]) == (0, 1)
    assert figures["challenger"]["pr_auc"] > 1.0 - GateRule().pr_auc_margin
    assert decision.verdict == "reject"
    assert "more false alerts" in decision.reason and "warned fewer" not in decision.reason
    # a margin that allows it lets it through
    rate = figures["challenger"]["false_alerts_per_car_hour"]
    allowing = GateRule(false_alert_margin=rate)
    assert judge(records, oracle(records, H, W), publish(records, noisy, "v2", W), allowing).verdict == "promote"


def test_warning_more_episodes_may_cost_false_alerts_up_to_the_budget_and_no_more(records) -> None:
    truth = warning_keys(records, H)
    cars = sorted({car for car, _ in truth})
    healthy = sorted({(r["car_id"], r["seq"]) for r in records if not r["failure_occurred"]} - truth)
    forgetful = {key: 1.0 if cars.index(key[0]) % 2 else 0.0 for key in truth}  # every other car's episodes
    champion = publish(records, forgetful, "v1", W)
    better = dict.fromkeys(truth, 1.0) | dict.fromkeys(healthy[100:103], 1.0)  # all of them, one false alarm
    decision = judge(records, champion, publish(records, better, "v2", W))
    figures = decision.figures
    assert figures["challenger"]["warned"] > figures["champion"]["warned"]
    assert figures["champion"]["false_alerts"] == 0 < figures["challenger"]["false_alerts_per_car_hour"] <= 0.1
    assert decision.verdict == "promote", decision.reason
    strict = GateRule(false_alert_budget=0.0)
    rejected = judge(records, champion, publish(records, better, "v2", W), strict)
    assert rejected.verdict == "reject" and "more false alerts" in rejected.reason and "budget 0" in rejected.reason


def test_a_ranking_that_fell_apart_is_a_reject_naming_pr_auc(records) -> None:
    # every other reading of a warning stretch alerts (each episode still warned, no false alert), the rest rank
    # below healthy readings
    truth = warning_keys(records, H)
    healthy = {(r["car_id"], r["seq"]) for r in records} - truth
    blurred = dict.fromkeys(healthy, 0.3) | {key: 1.0 if key[1] % 2 else 0.0 for key in truth}
    decision = judge(records, oracle(records, H, W, version="v1"), publish(records, blurred, "v2", W))
    figures = decision.figures
    assert figures["challenger"]["warned"] == figures["champion"]["warned"]
    assert figures["challenger"]["false_alerts"] == 0
    assert decision.verdict == "reject"
    assert "lower PR-AUC" in decision.reason and "warned fewer" not in decision.reason
    assert "more false alerts" not in decision.reason


def test_figures_of_different_readings_are_refused(records) -> None:
    champion = live_figures(records, oracle(records, H, W), H, W)
    challenger = live_figures(records, [p for p in never(records, W) if p["seq"] >= 100], H, W)
    with pytest.raises(ValueError, match="head_to_head"):
        decide(champion, challenger)
