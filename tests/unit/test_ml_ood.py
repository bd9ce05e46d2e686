"""The out-of-distribution score: training statistics, distances beyond the training range, flags, old models."""

import logging

import numpy as np
import pytest

from ml import ood

NAMES = ["battery_voltage", "coolant_temp", "firmware"]


def training() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(11, 13, 1000), rng.uniform(60, 100, 1000), np.full(1000, 1000.0)])


def metadata() -> dict:
    return {"version": "v", "features": NAMES, ood.STATS_KEY: ood.training_statistics(training(), NAMES)}


def test_training_statistics_describe_each_feature():
    stats = ood.training_statistics(training(), NAMES)
    assert stats["readings"] == 1000 and stats["quantile_levels"] == list(ood.QUANTILES)
    voltage = stats["features"]["battery_voltage"]
    assert 11 <= voltage["min"] < voltage["q0_5"] < voltage["mean"] < voltage["q99_5"] < voltage["max"] <= 13
    assert voltage["std"] == pytest.approx(2 / np.sqrt(12), rel=0.05)  # a uniform distribution's
    assert voltage["quantiles"][0] == voltage["min"] and voltage["quantiles"][-1] == voltage["max"]
    assert stats["features"]["firmware"]["std"] == 0.0


def test_inside_the_training_range_scores_zero_and_foreign_units_score_far_out():
    scorer = ood.OodScorer.from_metadata(metadata(), threshold=1.0)
    low, high = scorer.low[0], scorer.high[0]
    rows = np.array(
        [
            [12.0, 80.0, 1000.0],  # inside
            [high + 0.5 * (high - low), 80.0, 1000.0],  # half a width out: not flagged
            [1250.0, 353.0, 1000.0],  # centivolts and kelvin
            [12.0, 80.0, 1020.0],  # a firmware never seen: the constant feature's width is 1 % of 1000
            [np.nan, 80.0, 1000.0],
        ]
    )
    scores = scorer.score(rows)
    assert scores.score[0] == 0.0 and not scores.flagged[0]
    assert scores.score[1] == pytest.approx(0.5) and not scores.flagged[1]
    assert scores.score[2] > 100 and scores.features_of(2) == ["battery_voltage", "coolant_temp"]
    assert scores.score[3] == pytest.approx(2.0) and scores.features_of(3) == ["firmware"]
    assert scores.score[4] == ood.NON_FINITE and scores.features_of(4) == ["battery_voltage"]


def test_fields_the_bridge_found_out_of_range_are_out_of_distribution_whatever_their_distance():
    scorer = ood.OodScorer.from_metadata(metadata())
    scores = scorer.score(np.array([[12.0, 80.0, 1000.0]] * 2), [["coolant_temp", "speed"], []])
    assert scores.flagged.tolist() == [True, False] and scores.features_of(0) == ["coolant_temp"]
    assert scores.score[0] == 0.0, "the score stays the distance"
    assert ood.out_of_range([{"out_of_range": ["speed"]}, {}]) == [["speed"], ()]


def test_a_model_without_training_statistics_scores_zero_and_says_so_once(caplog):
    old = {"version": "20240101T000000Z", "features": NAMES}
    with caplog.at_level(logging.WARNING, logger="ml.ood"):
        scorer = ood.OodScorer.from_metadata(old)
    assert not scorer.enabled
    assert len(caplog.records) == 1 and "keeps no training statistics" in caplog.records[0].getMessage()
    scores = scorer.score(np.array([[1250.0, 353.0, 3.0]]), [["battery_voltage"]])
    assert scores.score.tolist() == [0.0] and scores.flagged.tolist() == [False]


def test_the_training_sample_is_bounded_and_keeps_the_original_order():
    features = np.arange(10_000, dtype=np.float64).reshape(5000, 2)
    sample = ood.training_sample(features, seed=1, rows=300)
    assert sample.shape == (300, 2) and sample.dtype == np.float32
    assert (np.diff(sample[:, 0]) > 0).all() and set(sample[:, 0] % 2) == {0.0}
    assert ood.training_sample(features[:10], seed=1).shape == (10, 2)


def test_alert_words():
    assert ood.describe(["battery_voltage", "coolant_temp"]) == (
        "OUT OF DISTRIBUTION: battery_voltage, coolant_temp outside training range"
    )


def test_a_feature_the_reading_lacks_is_flagged_whatever_its_filled_value_and_the_scorer():
    rows = np.array([[12.0, 80.0, 1000.0], [12.0, 80.0, 1000.0]])
    missing = np.array([[False, True, False], [False, False, False]])
    for scorer in (ood.OodScorer.from_metadata(metadata(), threshold=1.0), ood.OodScorer(NAMES, None, None)):
        scores = scorer.score(rows, [[], []], missing)
        assert scores.flagged.tolist() == [True, False]
        assert scores.features_of(0) == ["coolant_temp"] and scores.score.tolist() == [0.0, 0.0]
