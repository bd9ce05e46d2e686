import numpy as np
import pytest

from common.schemas import SENSOR_FIELDS
from ml.episodes import episode_leads, episode_report, onset_labels, onsets, suppressed, threshold_for_budget
from ml.features import series_from_records

START_MS = 1_700_000_000_000


def series(failures: dict[str, set[int]], readings: int = 100, unlabelled: frozenset[str] = frozenset()):
    records = [
        {
            "car_id": car,
            "seq": seq,
            "event_time": START_MS + 10_000 * seq,
            **dict.fromkeys(SENSOR_FIELDS, 1.0),
            "failure_occurred": None if car in unlabelled else seq in failed,
        }
        for car, failed in failures.items()
        for seq in range(readings)
    ]
    return series_from_records(records)


def test_the_label_is_an_onset_within_h_and_readings_in_failure_are_not_eligible():
    s = series({"car-1": set(range(50, 60))})
    label, eligible = onset_labels(s, horizon=10)
    assert np.flatnonzero(onsets(s)).tolist() == [50]
    assert np.flatnonzero(label).tolist() == list(range(40, 50))  # (t, t+10] holds the onset
    assert not eligible[50:60].any(), "windows already in failure are kept out"
    assert eligible[:50].all() and eligible[60:90].all()
    assert not eligible[90:].any(), "the next 10 readings of the run's last readings are unknown"


def test_episode_report_counts_warnings_before_onset_leads_and_false_alarms_per_healthy_hour():
    s = series({"car-1": set(range(50, 60)), "car-2": set(range(70, 75))})
    judged = np.ones(len(s), dtype=bool)
    alerts = np.zeros(len(s), dtype=bool)
    car1 = 0
    car2 = 100
    alerts[car1 + 45 : car1 + 48] = True  # warned 50 s ahead
    alerts[car1 + 20 : car1 + 23] = True  # one false alarm (a run of three alerting readings)
    alerts[car1 + 52] = True  # during the failure: the car told us, a suppressed alert
    alerts[car2 + 70] = True  # at the onset: too late, car-2's episode is missed (and the alert suppressed)
    alerts[car2 + 5] = True  # a second false alarm
    report = episode_report(s, alerts, judged, horizon=10, window=5)
    assert episode_leads(s, alerts, judged, horizon=10, window=5) == {car1 + 50: 50.0, car2 + 70: None}
    assert (report.episodes, report.warned) == (2, 1)
    assert report.leads_s.tolist() == [50.0]
    assert report.false_alerts == 2
    assert report.suppressed_alerts == 2
    # minus failure, the 5 readings after it, warning stretch, unknown tail
    healthy = (100 - 10 - 5 - 10 - 10) + (100 - 5 - 5 - 10 - 10)
    assert report.healthy_hours == pytest.approx(healthy * 10 / 3600)
    assert report.false_alerts_per_car_hour == pytest.approx(2 / (healthy * 10 / 3600))


def test_the_threshold_is_the_lowest_that_keeps_false_alarms_within_the_budget():
    rng = np.random.default_rng(3)
    cars = {f"car-{n}": {60, 61, 62} if n % 2 else set() for n in range(40)}
    s = series(cars, readings=400)
    label, _ = onset_labels(s, horizon=30)
    probabilities = np.where(label, rng.uniform(0.3, 1.0, len(s)), rng.beta(1, 12, len(s)))
    judged = np.ones(len(s), dtype=bool)
    budget = 0.5
    threshold = threshold_for_budget(s, probabilities, judged, horizon=30, budget_per_car_hour=budget, window=10)
    rate = episode_report(s, probabilities >= threshold, judged, 30, window=10).false_alerts_per_car_hour
    assert rate <= budget
    # the search steps through 200 quantiles: a threshold a few percent lower breaks the budget
    lower = episode_report(s, probabilities >= threshold - 0.05, judged, 30, window=10)
    assert lower.false_alerts_per_car_hour > budget
    assert episode_report(s, probabilities >= threshold, judged, 30, window=10).warned_share > 0.5
    never = threshold_for_budget(s, probabilities, judged, horizon=30, budget_per_car_hour=-1.0, window=10)
    assert never > probabilities.max(), "no threshold meets a negative budget: never alert"


W = 6


def test_readings_in_a_reported_failure_and_the_w_after_it_are_suppressed_and_unlabelled_ones_never():
    s = series(
        {"car-1": {20, 21, 22}, "car-2": {3}, "car-3": {20, 21, 22}}, readings=40, unlabelled=frozenset({"car-3"})
    )
    quiet = suppressed(s, W)
    assert np.flatnonzero(quiet[:40]).tolist() == list(range(20, 23 + W))  # the failure, then W readings after it
    assert np.flatnonzero(quiet[40:80]).tolist() == list(range(3, 4 + W)), "a car's own failures only"
    assert not quiet[80:].any(), "failure_occurred null: the car told nothing"


def test_an_alert_in_failure_and_in_the_w_after_it_is_suppressed_and_one_at_w_plus_1_is_false():
    s = series({"car-1": set(range(20, 23))}, readings=100)
    judged = np.ones(len(s), dtype=bool)
    last_failed = 22
    in_failure = np.zeros(len(s), dtype=bool)
    in_failure[21] = True
    after = np.zeros(len(s), dtype=bool)
    after[last_failed + 1 : last_failed + W + 1] = True  # the W readings after the failure, one alarm
    beyond = np.zeros(len(s), dtype=bool)
    beyond[last_failed + W + 1] = True
    assert episode_report(s, in_failure, judged, horizon=10, window=W).suppressed_alerts == 1
    assert episode_report(s, in_failure, judged, horizon=10, window=W).false_alerts == 0
    report = episode_report(s, after, judged, horizon=10, window=W)
    assert (report.suppressed_alerts, report.false_alerts) == (1, 0)
    report = episode_report(s, beyond, judged, horizon=10, window=W)
    assert (report.suppressed_alerts, report.false_alerts) == (0, 1)
    # an alarm that runs on past the W readings: its suppressed part counted apart, the rest a false alarm
    report = episode_report(s, after | beyond, judged, horizon=10, window=W)
    assert (report.suppressed_alerts, report.false_alerts) == (1, 1)
    # suppressed readings are not healthy driving: W fewer healthy readings than with the rule at W = 0
    quiet = episode_report(s, beyond, judged, horizon=10, window=W).healthy_hours
    assert quiet == pytest.approx(episode_report(s, beyond, judged, horizon=10, window=0).healthy_hours - W / 360)


def test_a_suppressed_reading_never_warns_an_episode_and_a_stretch_all_suppressed_is_not_judged():
    # onset 30 soon after a failure at 20..22: its stretch 20..29 lies in failure or within W=6 after it, but 29
    soon = series({"car-1": {20, 21, 22, 30, 31}}, readings=100)
    judged = np.ones(len(soon), dtype=bool)
    alerts = np.zeros(len(soon), dtype=bool)
    alerts[27] = True  # would have warned 30 s ahead: suppressed, not a warning
    assert episode_leads(soon, alerts, judged, horizon=10, window=W) == {20: None, 30: None}
    assert episode_report(soon, alerts, judged, horizon=10, window=W).suppressed_alerts == 1
    alerts[29] = True  # the stretch's one reading that is not suppressed warns
    assert episode_leads(soon, alerts, judged, horizon=10, window=W) == {20: None, 30: 10.0}
    # with a W that covers the whole stretch, onset 30 has nothing to judge
    assert episode_leads(soon, alerts, judged, horizon=10, window=10) == {20: None}
