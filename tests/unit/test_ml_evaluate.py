"""Window metrics, the threshold that meets a false-alarm budget on validation cars, episode figures (per failure
mode too), the car bootstrap of the verdict and of a false-alarm rate, the threshold's transfer, confusion counts,
the reliability table, and Platt scaling."""

import numpy as np
import pytest

from common.schemas import SENSOR_FIELDS
from ml.features import series_from_records, window_ends
from ml.training.calibration import brier, fit_platt, logit
from ml.training.evaluate import (
    alarm_rate,
    bootstrap_pr_auc_difference,
    budget_threshold,
    car_false_alarms,
    classification_metrics,
    episode_confusion,
    episode_metrics,
    reliability,
    threshold_transfer,
    warned_by_mode,
    window_confusion,
)


def test_perfect_and_useless_rankings():
    labels = np.array([0, 0, 0, 1, 1], dtype=np.float32)
    perfect = classification_metrics(labels, np.array([0.1, 0.2, 0.3, 0.8, 0.9]), 0.5)
    assert perfect["pr_auc"] == perfect["roc_auc"] == perfect["f1"] == 1.0
    inverted = classification_metrics(labels, np.array([0.9, 0.8, 0.7, 0.2, 0.1]), 0.5)
    assert inverted["roc_auc"] == 0.0
    assert inverted["recall"] == 0.0
    single_class = classification_metrics(np.zeros(3, np.float32), np.array([0.1, 0.2, 0.3]), 0.5)
    assert single_class["pr_auc"] is None and single_class["roc_auc"] is None


def fleet(cars: int, readings: int, seed: int) -> tuple:
    """Synthetic cars at one reading per 10 s with an episode now and then, and noisy scores that rise before
    each onset: (series, every reading's index, scores)."""
    rng = np.random.default_rng(seed)
    records = []
    for car in range(cars):
        failure = np.zeros(readings, bool)
        for onset in rng.choice(np.arange(40, readings - 10), size=rng.integers(0, 3), replace=False):
            failure[onset : onset + 5] = True
        records += [
            {"car_id": f"car-{car}", "seq": s, "event_time": 10_000 * s, "failure_occurred": bool(failure[s])}
            | dict.fromkeys(SENSOR_FIELDS, 0.0)
            for s in range(readings)
        ]
    series = series_from_records(records)
    ahead = np.zeros(len(series))
    for onset in np.flatnonzero(series.failure & ~np.roll(series.failure, 1)):
        ahead[max(onset - 20, 0) : onset] = np.linspace(0, 0.5, min(20, onset))
    return series, np.arange(len(series)), np.clip(rng.normal(0.2, 0.15, len(series)) + ahead, 0, 1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget", [0.05, 0.5, 3.0])
def test_the_chosen_threshold_meets_the_budget_on_the_cars_it_was_chosen_on(seed, budget):
    series, ends, scores = fleet(20, 400, seed)
    threshold = budget_threshold(series, ends, scores, horizon=30, budget=budget, window=10)
    figures = episode_metrics(series, ends, scores, threshold, horizon=30, window=10)
    assert figures["false_alerts_per_healthy_car_hour"] <= budget
    # and a looser budget never gives a stricter threshold
    assert budget_threshold(series, ends, scores, horizon=30, budget=budget * 2, window=10) <= threshold


def test_episode_figures_count_warnings_before_onset_only():
    failing = {10, 11, 25}
    records = [
        {"car_id": "car-1", "seq": s, "event_time": 10_000 * s, "failure_occurred": s in failing}
        | dict.fromkeys(SENSOR_FIELDS, 0.0)
        for s in range(40)
    ]
    series = series_from_records(records)
    ends = window_ends(series, 1)
    scores = np.zeros(40)
    scores[[2, 7, 8, 25, 26]] = 0.9  # 2 is too early (a false alert); 7 is 3 readings ahead; 25 is in failure
    figures = episode_metrics(series, ends, scores, threshold=0.5, horizon=4, window=1)
    assert (figures["episodes"], figures["warned"], figures["lead_s"]) == (2, 1, [30.0])
    assert figures["false_alerts"] == 1
    assert figures["suppressed_alerts"] == 1, "one alarm: 25 in failure, 26 within W=1 reading after it"


def test_the_car_bootstrap_brackets_a_clear_difference():
    rng = np.random.default_rng(0)
    cars = np.repeat(np.arange(30), 50)
    labels = (rng.random(len(cars)) < 0.2).astype(np.float32)
    good = labels + rng.normal(0, 0.5, len(cars))
    poor = labels + rng.normal(0, 3.0, len(cars))
    result = bootstrap_pr_auc_difference(labels, good, poor, cars, resamples=100, seed=1)
    assert 0 < result["low"] <= result["difference"] <= result["high"]
    assert result["resamples"] == 100 and result["share_positive"] == 1.0


def test_platt_scaling_repairs_inflated_probabilities():
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.1).astype(np.float32)
    honest = np.clip(0.1 + 0.3 * labels + rng.normal(0, 0.05, 5000), 0.01, 0.99)
    inflated = 1 / (1 + np.exp(-(logit(honest) + 2.0)))  # what class weights do to a probability
    platt = fit_platt(logit(inflated[:2500]), labels[:2500])
    assert platt.fitted and platt.slope > 0
    repaired = platt.apply(inflated[2500:])
    assert brier(labels[2500:], repaired) < brier(labels[2500:], inflated[2500:]) - 0.05
    assert not fit_platt(logit(inflated), np.zeros(5000)).fitted  # a single class: the identity


def test_episodes_are_counted_per_failure_mode_where_the_series_names_modes():
    records = [
        {"car_id": "car-1", "seq": s, "event_time": 10_000 * s, "failure_occurred": s in (10, 11, 25, 26)}
        | dict.fromkeys(SENSOR_FIELDS, 0.0)
        for s in range(40)
    ]
    plain = series_from_records(records)
    modes = np.array([""] * 40, dtype=object)
    modes[[10, 11]], modes[[25, 26]] = "battery", "tire"
    series = plain.with_failure_modes(modes)
    scores = np.zeros(40)
    scores[[7, 8]] = 0.9  # warns the battery episode 30 s ahead; the tire episode at 25 is missed
    figures = episode_metrics(series, window_ends(series, 1), scores, threshold=0.5, horizon=4, window=0)
    assert figures["by_mode"] == {
        "battery": {"episodes": 1, "warned": 1, "warned_share": 1.0, "median_lead_s": 30.0},
        "tire": {"episodes": 1, "warned": 0, "warned_share": 0.0, "median_lead_s": None},
    }
    assert episode_metrics(plain, window_ends(plain, 1), scores, 0.5, horizon=4, window=0)["by_mode"] is None
    unnamed = plain.with_failure_modes(np.array([""] * 40, dtype=object))
    assert warned_by_mode(unnamed, {10: 30.0})["unknown"]["episodes"] == 1


def test_confusion_counts_at_the_threshold():
    labels = np.array([1, 1, 0, 0, 0, 1], np.float32)
    scores = np.array([0.9, 0.2, 0.8, 0.1, 0.5, 0.5])
    assert window_confusion(labels, scores, 0.5) == {"tp": 2, "fp": 2, "fn": 1, "tn": 1}
    episodes = {"episodes": 5, "warned": 3, "false_alerts": 2, "suppressed_alerts": 1}
    assert episode_confusion(episodes) == {"warned": 3, "missed": 2, "false_alarms": 2, "suppressed": 1}


def test_the_reliability_table_bins_probabilities_and_observes_frequencies():
    labels = np.array([0, 0, 1, 0, 1, 1], np.float32)
    scores = np.array([0.05, 0.05, 0.05, 0.15, 0.95, 1.0])  # 1.0 falls in the last bin
    table = reliability(labels, scores)
    assert [(b["low"], b["windows"]) for b in table] == [(0.0, 3), (0.1, 1), (0.9, 2)]
    assert [b["observed"] for b in table] == pytest.approx([1 / 3, 0.0, 1.0])
    assert [b["mean_probability"] for b in table] == pytest.approx([0.05, 0.15, 0.975])


def test_false_alarms_per_car_are_episode_reports_of_each_car_and_their_rate_comes_with_a_car_interval():
    records = [
        {"car_id": car, "seq": s, "event_time": 10_000 * s, "failure_occurred": False}
        | dict.fromkeys(SENSOR_FIELDS, 0.0)
        for car in ("car-1", "car-2", "car-3")
        for s in range(400)
    ]
    series = series_from_records(records)
    ends = window_ends(series, 1)
    scores = np.zeros(len(series))
    scores[[10, 11, 50]] = 0.9  # car-1: two alarms (10-11 is one run), car-2: none
    scores[800 + 100] = 0.9  # car-3: one
    counts, hours = car_false_alarms(series, ends, scores, threshold=0.5, horizon=30, window=0)
    assert counts.tolist() == [2, 0, 1]
    assert hours == pytest.approx([(400 - 30) * 10 / 3600] * 3)  # the last 30 readings' future is unknown
    whole = episode_metrics(series, ends, scores, 0.5, horizon=30, window=0)
    assert counts.sum() == whole["false_alerts"]
    rate = alarm_rate(counts, hours, resamples=500, seed=0)
    assert rate["rate"] == pytest.approx(whole["false_alerts_per_healthy_car_hour"])
    assert rate["interval"][0] < rate["rate"] < rate["interval"][1]
    assert rate["interval"][0] >= 0 and rate["interval"][1] <= 2 / hours[0]  # no resample beats car-1's rate
    steady = alarm_rate(np.ones(5), np.full(5, 2.0), resamples=50, seed=0)
    assert steady["rate"] == 0.5 and steady["interval"] == [0.5, 0.5]  # identical cars: no spread


def test_the_threshold_transfer_is_the_test_rate_against_the_budget_and_the_rate_where_chosen():
    transfer = threshold_transfer({"rate": 0.08}, {"rate": 0.18}, budget=0.1)
    assert transfer["transfer_error"] == pytest.approx(0.08) and transfer["gap"] == pytest.approx(0.10)
    assert threshold_transfer({"rate": None}, {"rate": None}, budget=0.1)["transfer_error"] is None
