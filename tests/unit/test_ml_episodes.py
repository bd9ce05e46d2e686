import numpy as np
import pytest

from common.schemas import SENSOR_FIELDS
from ml.episodes import episode_leads, episode_report, onset_labels, onsets, threshold_for_budget
from ml.features import series_from_records

START_MS = 1_700_000_000_000


def series(failures: dict[str, set[int]], readings: int = 100):
    records = [
        {
            "car_id": car,
            "seq": seq,
            "event_time": START_MS + 10_000 * seq,
            **dict.fromkeys(SENSOR_FIELDS, 1.0),
            "failure_occurred": seq in failed,
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
    alerts[car1 + 52] = True  # during the failure: detection, not counted
    alerts[car2 + 70] = True  # at the onset: too late, car-2's episode is missed
    alerts[car2 + 5] = True  # a second false alarm
    report = episode_report(s, alerts, judged, horizon=10)
    assert episode_leads(s, alerts, judged, horizon=10) == {car1 + 50: 50.0, car2 + 70: None}
    assert (report.episodes, report.warned) == (2, 1)
    assert report.leads_s.tolist() == [50.0]
    assert report.false_alerts == 2
    healthy = (100 - 10 - 10 - 10) + (100 - 5 - 10 - 10)  # minus failure, warning stretch, unknown tail
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
    threshold = threshold_for_budget(s, probabilities, judged, horizon=30, budget_per_car_hour=budget)
    rate = episode_report(s, probabilities >= threshold, judged, 30).false_alerts_per_car_hour
    assert rate <= budget
    # the search steps through 200 quantiles: a threshold a few percent lower breaks the budget
    assert episode_report(s, probabilities >= threshold - 0.05, judged, 30).false_alerts_per_car_hour > budget
    assert episode_report(s, probabilities >= threshold, judged, 30).warned_share > 0.5
    never = threshold_for_budget(s, probabilities, judged, horizon=30, budget_per_car_hour=-1.0)
    assert never > probabilities.max(), "no threshold meets a negative budget: never alert"
