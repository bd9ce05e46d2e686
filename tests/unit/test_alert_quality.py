"""Alert precision and recall against the simulator's ground truth, joined by (car_id, seq)."""

from scripts.alert_quality import alert_quality, failure_within


def test_failure_within_looks_at_this_reading_and_the_next_horizon_readings() -> None:
    truth = {0: False, 1: False, 2: False, 3: True, 4: False, 5: False}
    assert failure_within(truth, 0, horizon=2, last_seq=5) is False
    assert failure_within(truth, 1, horizon=2, last_seq=5) is True
    assert failure_within(truth, 3, horizon=0, last_seq=5) is True
    assert failure_within(truth, 4, horizon=0, last_seq=5) is False


def test_failure_within_is_unknown_while_the_horizon_reaches_past_the_last_reading() -> None:
    truth = {0: False, 1: False, 2: True}
    assert failure_within(truth, 1, horizon=3, last_seq=2) is True, "a failure already seen settles it"
    truth = {0: False, 1: False, 2: False}
    assert failure_within(truth, 1, horizon=3, last_seq=2) is None


def test_precision_and_recall_count_alerts_against_failures_within_the_horizon() -> None:
    # car-1 fails at seq 4; horizon 1 makes seq 3 and 4 positive.
    truth = {"car-1": {s: s == 4 for s in range(8)}, "car-2": {s: False for s in range(8)}}
    predictions = {("car-1", s): s in (2, 3) for s in range(7)}  # one false alarm (2), one hit (3), one miss (4)
    predictions |= {("car-2", s): s == 5 for s in range(7)}  # one false alarm
    predictions[("car-1", 7)] = False  # its horizon reaches past the last reading: not evaluated
    quality = alert_quality(truth, predictions, horizon=1)
    assert (quality.evaluated, quality.undetermined) == (14, 1)
    assert (quality.positives, quality.alerts, quality.true_alerts) == (2, 3, 1)
    assert quality.precision == 1 / 3
    assert quality.recall == 1 / 2


def test_no_alerts_and_no_failures_give_no_ratio_rather_than_a_made_up_one() -> None:
    quality = alert_quality({"car-1": {0: False, 1: False}}, {("car-1", 0): False}, horizon=1)
    assert quality.precision is None and quality.recall is None
    assert quality.as_dict()["evaluated"] == 1
