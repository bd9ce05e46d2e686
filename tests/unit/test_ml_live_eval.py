"""ml/live_eval.py on the simulator's readings and the predictions of models made of rules
(scripts/testkit/rule_models.py): an oracle, a model that never alerts. The expected figures are counted here
from each car's failure_occurred, apart from ml/episodes.py."""

from __future__ import annotations

import json
import random

import pytest

from ml.live_eval import head_to_head, live_figures
from scripts.testkit.rule_models import failed_by_car, fleet, never, onsets, oracle, publish

H = 30
W = 10
INTERVAL_S = 10.0  # the simulator's default reading interval


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return fleet(cars=20, per_car=360, seed=11)


def matured(records: list[dict]) -> set[tuple[str, int]]:
    """Readings not in failure whose next H readings have arrived, or whose next H already hold an onset."""
    keys = set()
    starts_by_car = onsets(records)
    for car, flags in failed_by_car(records).items():
        starts = starts_by_car[car]
        for seq, failed in enumerate(flags):
            known = seq + H <= len(flags) - 1 or any(seq < onset <= seq + H for onset in starts)
            if known and not failed:
                keys.add((car, seq))
    return keys


def expected_episodes(records: list[dict]) -> int:
    """Onsets with a reading in their warning stretch that is neither in failure nor within W after one."""
    count = 0
    starts_by_car = onsets(records)
    for car, flags in failed_by_car(records).items():
        for onset in starts_by_car[car]:
            stretch = range(max(0, onset - H), onset)
            count += any(not any(flags[max(0, seq - W) : seq + 1]) for seq in stretch)
    return count


def test_the_oracle_warns_every_matured_episode_with_pr_auc_1_and_no_false_alert(records) -> None:
    figures = live_figures(records, oracle(records, H, W), H, W)
    assert figures.model_version == "oracle"
    assert figures.episodes == expected_episodes(records) >= 15, "the fleet must fail often enough to judge"
    assert figures.warned == figures.episodes
    assert figures.pr_auc == 1.0
    assert figures.false_alerts == 0 and figures.false_alerts_per_car_hour == 0.0
    assert figures.matured_readings == len(matured(records)) and figures.unjudged == 0
    # a stretch's first reading alerts H readings ahead, unless it lies within W after an earlier failure
    assert max(figures.lead_s) == H * INTERVAL_S and min(figures.lead_s) > 0
    assert len(figures.lead_s) == figures.warned
    assert figures.healthy_car_hours > 10
    json.dumps(figures.as_dict(), allow_nan=False)


def test_a_model_that_never_alerts_warns_nothing_and_raises_no_false_alert(records) -> None:
    figures = live_figures(records, never(records, W), H, W)
    assert figures.episodes == expected_episodes(records)
    assert (figures.warned, figures.false_alerts, figures.lead_s) == (0, 0, ())
    assert figures.median_lead_s is None
    assert 0 < figures.pr_auc < 0.2, "constant scores rank nothing: average precision is the prevalence"


def test_readings_whose_future_is_not_known_yet_are_not_judged(records) -> None:
    open_ended = {(r["car_id"], r["seq"]) for r in records} - matured(records)
    last = {key for key in open_ended if key[1] >= 360 - H}
    assert last, "each car's last H readings with no onset after them"
    # alerting on every reading whose future is unknown is no false alert, and predicting only those judges nothing
    alerting = live_figures(records, publish(records, dict.fromkeys(open_ended, 1.0), "late", W), H, W)
    assert (alerting.false_alerts, alerting.warned) == (0, 0)
    only_those = [p for p in never(records, W) if (p["car_id"], p["seq"]) in open_ended]
    figures = live_figures(records, only_those, H, W)
    assert (figures.matured_readings, figures.episodes, figures.pr_auc) == (0, 0, None)
    assert figures.unjudged == len(matured(records)), "every matured reading lacks a prediction"
    assert figures.false_alerts_per_car_hour is None


def test_a_reading_without_a_prediction_is_unjudged_and_duplicates_count_once(records) -> None:
    predictions = oracle(records, H, W)
    first_car = records[0]["car_id"]
    without = [p for p in predictions if p["car_id"] != first_car]
    figures = live_figures(records, without, H, W)
    assert figures.unjudged == len({key for key in matured(records) if key[0] == first_car}) > 0
    assert figures.matured_readings + figures.unjudged == len(matured(records))
    # redelivered predictions and readings, in another order, change nothing
    repeated = predictions + predictions[::3]
    random.Random(5).shuffle(repeated)
    assert live_figures(records + records[::7], repeated, H, W) == live_figures(records, predictions, H, W)


def test_one_model_at_a_time(records) -> None:
    mixed = oracle(records, H, W, version="v1")[:100] + never(records, W, version="v2")[100:]
    with pytest.raises(ValueError, match=r"\['v1', 'v2'\]"):
        live_figures(records, mixed, H, W)


def test_head_to_head_judges_both_models_on_the_readings_both_predicted(records) -> None:
    champion = oracle(records, H, W, version="champion")
    late = [p for p in never(records, W, version="late") if p["seq"] >= 180]  # a challenger started halfway
    ours, theirs = head_to_head(records, champion, late, H, W)
    assert ours.matured_readings == theirs.matured_readings == len({k for k in matured(records) if k[1] >= 180})
    assert ours.episodes == theirs.episodes
    assert ours.episodes < live_figures(records, champion, H, W).episodes
    assert (ours.model_version, ours.warned, theirs.model_version, theirs.warned) == (
        "champion",
        ours.episodes,
        "late",
        0,
    )
