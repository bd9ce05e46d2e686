"""The predictor's alert log in episodes (ml/serving/alerts.py): one line when a car's alert starts, one when a
failure starts (warned ahead or missed, from the simulator's ground truth), state for alerting or failing cars
only."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ml.ood import OodScores
from ml.serving import metrics
from ml.serving.alerts import AlertLog, reading_interval_s
from ml.serving.batch import UNLABELLED, Scored

START_MS = 1_700_000_000_000
H = 5
ALERTS = "ml.alerts"


def scored(readings: list[tuple[str, int, bool, bool | None]], suppressed: frozenset[int] = frozenset()) -> Scored:
    """(car, seq, alert, failure_occurred) per reading, a reading every 10 s of event time; an alert at a seq in
    `suppressed` is published as the predictor publishes it: failure_predicted false, alert_suppressed true."""
    n = len(readings)
    predictions = [
        {
            "car_id": car,
            "seq": seq,
            "event_time": START_MS + 10_000 * seq,
            "failure_probability": 0.9 if alert else 0.1,
            "failure_predicted": alert and seq not in suppressed,
            "model_version": "v1",
            "horizon": H,
            "ood_score": 0.0,
            "out_of_distribution": False,
            "ood_features": [],
            "alert_suppressed": alert and seq in suppressed,
        }
        for car, seq, alert, _ in readings
    ]
    failure = np.array([UNLABELLED if f is None else int(f) for *_, f in readings], dtype=np.int8)
    ood = OodScores(np.zeros(n), np.zeros(n, dtype=bool), np.zeros((n, 0), dtype=bool), ())
    return Scored(predictions, ood, failure, np.ones(n, dtype=bool))


def car(name: str, seqs: range, alerts: set[int], failed: set[int] | None) -> list[tuple[str, int, bool, bool | None]]:
    return [(name, s, s in alerts, None if failed is None else s in failed) for s in seqs]


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ALERTS]


def counts() -> tuple[float, float]:
    return metrics.EPISODES_WARNED._value.get(), metrics.EPISODES_MISSED._value.get()


def feed(log: AlertLog, readings: list, batch: int = 7, suppressed: frozenset[int] = frozenset()) -> None:
    for i in range(0, len(readings), batch):
        log.account(scored(readings[i : i + batch], suppressed), threshold=0.5)


@pytest.fixture
def caplog_alerts(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ALERTS)
    return caplog


def test_an_alert_is_logged_once_when_it_starts_with_the_horizon_in_readings_and_time(caplog_alerts) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    # 10..12 and 15 are one forecast (it resumes within H = 5 readings); 21 comes 6 readings after the last one.
    feed(log, car("car-1", range(30), alerts={10, 11, 12, 15, 21}, failed=None))
    assert lines(caplog_alerts) == [
        "ALERT car car-1: failure expected within 5 readings (~50 s): probability 0.900, threshold 0.500 "
        "(seq 10, model v1)",
        "ALERT car car-1: failure expected within 5 readings (~50 s): probability 0.900, threshold 0.500 "
        "(seq 21, model v1)",
    ]


def test_a_failure_with_an_alert_in_the_h_readings_before_its_onset_is_warned_from_the_first_of_them(
    caplog_alerts,
) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    before = counts()
    # onset at 20: the warning stretch is 15..19; the alert at 12..13 is too early, 16 is the first that counts,
    # and it ended before the onset (an alert that stops just before the failure still warned).
    feed(log, car("car-1", range(40), alerts={12, 13, 16, 17}, failed=set(range(20, 25))))
    assert "car car-1: failure started (seq 20): warned 40 s ahead" in lines(caplog_alerts)
    assert counts() == (before[0] + 1, before[1])


def test_an_alert_run_that_began_before_the_stretch_warns_from_the_stretch_start(caplog_alerts) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    feed(log, car("car-1", range(40), alerts=set(range(8, 20)), failed=set(range(20, 25))))
    assert "car car-1: failure started (seq 20): warned 50 s ahead" in lines(caplog_alerts), "H readings, no more"


def test_a_failure_without_an_alert_before_its_onset_is_missed_and_alerts_at_the_onset_do_not_count(
    caplog_alerts,
) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    before = counts()
    feed(log, car("car-1", range(40), alerts={8, 20, 21}, failed=set(range(20, 25))))
    assert "car car-1: failure started (seq 20): MISSED (no alert in the 5 readings before)" in lines(caplog_alerts)
    assert counts() == (before[0], before[1] + 1)


def test_each_episode_is_judged_once_redeliveries_included(caplog_alerts) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    before = counts()
    readings = car("car-1", range(50), alerts={18}, failed={20, 21, 40})
    readings[21:21] = [readings[20]]  # the onset delivered twice
    feed(log, readings)
    started = [line for line in lines(caplog_alerts) if "failure started" in line]
    assert started == [
        "car car-1: failure started (seq 20): warned 20 s ahead",
        "car car-1: failure started (seq 40): MISSED (no alert in the 5 readings before)",
    ]
    assert counts() == (before[0] + 1, before[1] + 1)


def test_a_failure_within_h_readings_of_the_first_reading_seen_gets_no_verdict(caplog_alerts) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    before = counts()
    feed(log, car("car-1", range(10), alerts=set(), failed={3, 4}))
    assert [line for line in lines(caplog_alerts) if "failure started" in line] == [
        "car car-1: failure started (seq 3): no verdict, this predictor began less than 5 readings before"
    ]
    assert counts() == before


def test_unlabelled_readings_say_nothing_about_failures(caplog_alerts) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    feed(log, car("car-1", range(30), alerts={20}, failed=None))
    assert not [line for line in lines(caplog_alerts) if "failure started" in line]


def test_state_is_kept_only_for_cars_that_alert_fail_or_alerted_within_h_readings() -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    healthy = car("car-0", range(40), alerts=set(), failed=set())
    failing = car("car-1", range(40), alerts={15}, failed=set(range(18, 22)))
    seen = []
    for i in range(40):
        log.account(scored([healthy[i], failing[i]]), threshold=0.5)
        seen.append(set(log.cars))
    assert all("car-0" not in cars for cars in seen), "a healthy car that never alerts has no state"
    assert [i for i, cars in enumerate(seen) if "car-1" in cars] == list(range(15, 22))
    assert log.cars == {}


def test_a_car_that_stops_sending_is_dropped_once_h_readings_of_event_time_pass(monkeypatch) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    log.account(scored(car("car-1", range(10), alerts={9}, failed=set())), threshold=0.5)
    assert "car-1" in log.cars
    monkeypatch.setattr("ml.serving.alerts.time.monotonic", lambda: 1e12)  # time for the next look at a batch
    log.account(scored(car("car-2", range(10, 20), alerts=set(), failed=set())), threshold=0.5)
    assert log.cars == {}


def test_the_reading_interval_is_the_median_step_of_one_cars_readings_in_a_batch() -> None:
    cars = ["a", "b", "a", "b", "a"]
    seqs = np.array([1, 7, 2, 9, 4])
    times = np.array([0, 0, 10_000, 20_000, 30_000])
    assert reading_interval_s(cars, seqs, times) == 10.0
    assert reading_interval_s(["a", "b"], np.array([1, 1]), np.array([0, 5])) is None


@pytest.mark.parametrize("batch", [7, 200])
def test_a_suppressed_alert_is_neither_logged_nor_counted_as_an_alert_but_counted_apart(caplog_alerts, batch) -> None:
    log = AlertLog(repeat=60, ood_threshold=1.0)
    alerts, suppressed = metrics.ALERTS._value.get(), metrics.ALERTS_SUPPRESSED._value.get()
    # alerts from 10 to 30, failure at 20..22: 20..28 are suppressed (W = 6); 29 resumes 10 readings after 19
    quiet = frozenset(range(20, 29))
    feed(log, car("car-1", range(40), alerts=set(range(10, 31)), failed={20, 21, 22}), batch, suppressed=quiet)
    assert metrics.ALERTS_SUPPRESSED._value.get() - suppressed == 9
    assert metrics.ALERTS._value.get() - alerts == 12
    assert [line for line in lines(caplog_alerts) if line.startswith("ALERT")] == [
        f"ALERT car car-1: failure expected within 5 readings (~50 s): probability 0.900, threshold 0.500 "
        f"(seq {seq}, model v1)"
        for seq in (10, 29)
    ], "a new alert once the car stops telling us, in any batching"
