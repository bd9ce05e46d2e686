"""Metrics at the chosen threshold, and the lead time of the first alert before a failure."""

import numpy as np
import pytest

from common.schemas import SENSOR_FIELDS
from ml.features import series_from_records
from ml.training.evaluate import choose_threshold, classification_metrics, lead_times


def test_perfect_and_useless_rankings():
    labels = np.array([0, 0, 0, 1, 1], dtype=np.float32)
    perfect = classification_metrics(labels, np.array([0.1, 0.2, 0.3, 0.8, 0.9]), 0.5)
    assert perfect["pr_auc"] == perfect["roc_auc"] == perfect["f1"] == 1.0
    inverted = classification_metrics(labels, np.array([0.9, 0.8, 0.7, 0.2, 0.1]), 0.5)
    assert inverted["roc_auc"] == 0.0
    assert inverted["recall"] == 0.0
    single_class = classification_metrics(np.zeros(3, np.float32), np.array([0.1, 0.2, 0.3]), 0.5)
    assert single_class["pr_auc"] is None and single_class["roc_auc"] is None


def test_threshold_is_the_best_f1():
    labels = np.array([0, 0, 1, 0, 1, 1], dtype=np.float32)
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.9])
    assert choose_threshold(labels, scores) == pytest.approx(0.3)  # F1 0.857 beats 0.8 at 0.6
    assert choose_threshold(np.zeros(3, np.float32), scores[:3]) == 0.5


def test_lead_time_counts_the_first_alert_within_the_horizon():
    failing = {10, 11, 25}
    records = [
        {"car_id": "car-1", "seq": s, "event_time": 10_000 * s, "failure_occurred": s in failing}
        | dict.fromkeys(SENSOR_FIELDS, 0.0)
        for s in range(30)
    ]
    series = series_from_records(records)
    ends = np.arange(30)
    probabilities = np.zeros(30)
    probabilities[[2, 7, 8]] = 0.9  # 2 is too early (a false alarm); 7 is 3 readings ahead of the onset at 10
    result = lead_times(series, ends, probabilities, threshold=0.5, horizon=4)
    assert result == {
        "failure_episodes": 2,
        "episodes_alerted": 1,
        "mean_lead_time_readings": 3.0,
        "mean_lead_time_s": 30.0,
    }
