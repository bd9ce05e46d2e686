"""The continual trainer's parts (ml/continual/history.py, trainer.py): the bounded history and its new episodes,
the drift share against a champion's training statistics, the retraining rule, the registry's adoption of the
version in service, and the warm start's weight copy (ml/training/model.py)."""

from pathlib import Path

import numpy as np
import pytest

from common.schemas import SENSOR_FIELDS
from ml import ood
from ml.continual.history import History
from ml.continual.settings import ContinualSettings
from ml.continual.trainer import Retrainer, adopt_champion, drift_share, due, trained_through
from ml.registry import Registry
from scripts.testkit.readings import in_other_units
from scripts.testkit.registry import metadata_version
from simulator.fleet import generate_readings

HOUR_MS = 3600 * 1000


def reading(car: str, seq: int, failed: bool = False, **values) -> dict:
    return {"car_id": car, "seq": seq, "event_time": 1000 * seq, "failure_occurred": failed} | values


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_history_keeps_the_newest_readings_per_car_and_gives_them_back_as_decoded_readings():
    history = History(per_car=3, max_cars=10, idle_seconds=60, recent=4)
    for seq in range(5):
        history.add(reading("a", seq, battery_voltage=12.5 + seq, throttle_pos=None))
    records = history.records()
    assert [r["seq"] for r in records] == [2, 3, 4]
    assert records[0]["battery_voltage"] == pytest.approx(14.5) and records[0]["throttle_pos"] is None
    assert set(SENSOR_FIELDS) <= set(records[0])
    rows, flags = history.recent()
    assert rows.shape == (4, len(SENSOR_FIELDS)) and flags == [(), (), (), ()]
    history.forget_recent()
    assert history.recent()[0].shape == (0, len(SENSOR_FIELDS))


def test_new_episodes_are_onsets_later_than_a_time_and_leave_with_their_readings():
    history = History(per_car=6, max_cars=10, idle_seconds=60, recent=10)
    failing = {2, 3, 6}  # two episodes: onsets at seq 2 and seq 6
    for seq in range(8):
        history.add(reading("a", seq, failed=seq in failing))
    assert history.onsets_after(0) == 2
    assert history.onsets_after(2000) == 1, "the episode that started at 2 s is not later than 2 s"
    for seq in range(8, 12):  # the first episode's readings fall out of the 6 kept
        history.add(reading("a", seq))
    assert history.onsets_after(0) == 1
    assert history.counts()["episodes"] == 1


def test_the_history_keeps_its_first_cars_and_ignores_more_while_they_report():
    clock = Clock()
    history = History(per_car=5, max_cars=2, idle_seconds=60, recent=10, clock=clock)
    for car in ("a", "b", "c"):
        history.add(reading(car, 0))
    assert [r["car_id"] for r in history.records()] == ["a", "b"]
    assert len(history.recent()[1]) == 3, "the drift check sees every car's readings"
    clock.now = 61  # a and b silent for longer than idle_seconds: c takes a's place
    history.add(reading("c", 1))
    assert sorted({r["car_id"] for r in history.records()}) == ["b", "c"]


@pytest.fixture(scope="module")
def champion_metadata() -> dict:
    fleet = list(generate_readings(10, 100, seed=3))
    rows = np.array([[r[name] for name in SENSOR_FIELDS] for r in fleet], np.float64)
    return {"features": list(SENSOR_FIELDS), ood.STATS_KEY: ood.training_statistics(rows, SENSOR_FIELDS)}


def history_of(records: list[dict]) -> History:
    history = History(per_car=100, max_cars=50, idle_seconds=60, recent=500)
    for record in records:
        history.add(record)
    return history


def test_drift_is_the_share_of_recent_readings_outside_the_champions_training_range(champion_metadata):
    same_kind = list(generate_readings(10, 50, seed=4))
    share, scored = drift_share(history_of(same_kind), champion_metadata, ood.DEFAULT_THRESHOLD)
    assert scored == 500 and share < 0.01
    other_units = [in_other_units(r) for r in same_kind]
    share, _ = drift_share(history_of(same_kind[:250] + other_units[:250]), champion_metadata, 1.0)
    assert share == pytest.approx(0.5)
    assert drift_share(History(2, 2, 60, 10), champion_metadata, 1.0) == (0.0, 0)


def test_a_reading_lacking_a_feature_or_flagged_by_the_bridge_counts_as_drift(champion_metadata):
    fleet = list(generate_readings(2, 5, seed=4))
    fleet[0] = fleet[0] | {"throttle_pos": None}
    fleet[1] = fleet[1] | {"out_of_range": ["coolant_temp"]}
    share, scored = drift_share(history_of(fleet), champion_metadata, 1.0)
    assert share == pytest.approx(2 / scored)


RULE = ContinualSettings(
    retrain_episodes=5, retrain_drift_share=0.5, drift_readings=100, retrain_period=3600, retrain_min_interval=0
)


@pytest.mark.parametrize(
    ("drift", "episodes", "since", "kind"),
    [
        ((0.6, 100), 9, 9999, "drift"),  # drift first, whatever else holds
        ((0.6, 9), 0, 0, None),  # fewer than a tenth of drift_readings scored: no verdict on drift yet
        ((0.49, 100), 5, 0, "episodes"),
        ((0.0, 100), 4, 3600, "period"),
        ((0.0, 100), 4, 3599, None),
    ],
)
def test_the_retraining_rule_names_the_first_trigger_that_holds(drift, episodes, since, kind):
    trigger = due(RULE, drift, episodes, since)
    assert (trigger.kind if trigger else None) == kind
    if trigger:
        assert trigger.reason.startswith(f"{kind}:")


def test_no_period_when_it_is_zero():
    assert due(RULE.model_copy(update={"retrain_period": 0}), (0.0, 100), 0, 10**9) is None


def version(model_dir: Path, name: str, last: str | None = None) -> Path:
    training = {"time_range": {"first": "2020-01-01T00:00:00Z", "last": last}} if last else {}
    return metadata_version(model_dir, name, features=list(SENSOR_FIELDS), training=training)


def test_trained_through_is_the_newest_reading_any_version_was_trained_on(tmp_path):
    assert trained_through(tmp_path) == 0
    version(tmp_path, "20240101T000000Z", "2024-01-01T00:00:00Z")
    version(tmp_path, "20240102T000000Z", "2024-01-02T00:00:00Z")
    version(tmp_path, "20240103T000000Z")  # no time range: an untrained artifact
    assert trained_through(tmp_path) == 1704153600000
    version(tmp_path, "20240105T000000Z", "2024-01-05T00:00:00Z")
    assert trained_through(tmp_path) == 1704412800000, "a version written since the last check counts"


def test_without_a_champion_the_version_in_service_is_adopted_once(tmp_path):
    registry = Registry(tmp_path)
    assert adopt_champion(registry) is None, "an empty folder has nothing to adopt"
    version(tmp_path, "20240101T000000Z")
    version(tmp_path, "20240102T000000Z")
    assert adopt_champion(registry) == "20240102T000000Z"
    assert adopt_champion(registry) == "20240102T000000Z"
    assert [d.action for d in registry.history()] == ["register", "promote"]
    assert registry.history()[0].reason.startswith("adopted")


def test_the_retrainer_waits_for_a_pending_challenger_and_trains_nothing_without_a_trigger(tmp_path):
    version(tmp_path, "20240101T000000Z", "2024-01-01T00:00:00Z")
    version(tmp_path, "20240102T000000Z", "2024-01-02T00:00:00Z")
    registry = Registry(tmp_path)
    registry.register_challenger("20240101T000000Z", "first")
    registry.promote("first")
    registry.register_challenger("20240102T000000Z", "retrained")
    clock = Clock()
    history = History(per_car=10, max_cars=10, idle_seconds=60, recent=100)
    settings = RULE.model_copy(update={"model_dir": str(tmp_path), "check_interval": 1.0})
    retrainer = Retrainer(settings, registry, history, publish=lambda decision: None, clock=clock)
    assert retrainer.check() is None and not retrainer.training, "a challenger is pending"
    registry.reject("worse")
    clock.now = 0.5
    assert retrainer.check() is None, "checked at most every check_interval"
    clock.now = 1.0
    assert retrainer.check() is None and not retrainer.training, "no drift, no new episode, the period not over"


def test_a_warm_start_copies_the_learned_layers_but_not_the_scaling():
    from ml.training.model import build_model, copy_learned_weights

    features = 4
    champion = build_model(6, [0.0] * features, [1.0] * features, units=4)
    fresh = build_model(6, [5.0] * features, [2.0] * features, units=4)
    copied = copy_learned_weights(champion, fresh)
    assert "lstm" in copied and "logit" in copied and "scaling" not in copied
    for name in copied:
        for mine, theirs in zip(
            fresh.get_layer(name).get_weights(), champion.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(mine, theirs)
    assert np.allclose(np.asarray(fresh.get_layer("scaling").mean), 5.0), "the scaling of its own data"
    other_features = build_model(6, [0.0] * 5, [1.0] * 5, units=4)
    assert copy_learned_weights(champion, other_features) == [], "another input width: nothing fits"
