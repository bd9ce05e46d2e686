"""The report's verdict and tables: "beats" only where the car bootstrap's interval excludes 0, both models at the
operating point, the threshold's transfer, confusion counts and episodes per failure mode."""

import pytest

from ml.training.report import comparison_outcome, operating_point, text_table, verdict


def model(pr_auc: float, warned: int, lead: float | None, rate: float, by_mode: dict | None = None) -> dict:
    episodes = {
        "episodes": 52,
        "warned": warned,
        "warned_share": warned / 52,
        "median_lead_s": lead,
        "false_alerts": 3,
        "false_alerts_per_healthy_car_hour": rate,
        "by_mode": by_mode,
    }
    chosen, test = {"rate": 0.08}, {"rate": rate}
    return {
        "pr_auc": pr_auc,
        "threshold": 0.4,
        "episodes": episodes,
        "confusion": {
            "windows": {"tp": 10, "fp": 5, "fn": 20, "tn": 900},
            "episodes": {"warned": warned, "missed": 52 - warned, "false_alarms": 3, "suppressed": None},
        },
        "threshold_transfer": {"chosen_on": chosen, "test": test, "transfer_error": rate - 0.1, "gap": rate - 0.08},
    }


def comparison(low: float, high: float) -> dict:
    return {"difference": (low + high) / 2, "low": low, "high": high, "resamples": 200}


LSTM = model(0.652, 43, 215.0, 0.06)
GBM = model(0.640, 39, 250.0, 0.12)


def test_an_interval_that_includes_zero_never_says_beats_and_the_verdict_speaks_at_the_operating_point():
    beats, text = verdict(LSTM, GBM, comparison(-0.03, 0.05))
    assert beats is False and "beat" not in text
    assert text.startswith("the LSTM and gradient boosting are not distinguishable on PR-AUC (0.652 vs 0.640")
    assert "[-0.030, +0.050]" in text
    assert "the LSTM warns 43 of 52 episodes (83%), median lead 215 s, 0.06 false alerts per healthy car-hour" in text
    assert "gradient boosting warns 39 of 52 episodes (75%), median lead 250 s, 0.12 false alerts" in text


@pytest.mark.parametrize(
    ("low", "high", "beats", "words", "outcome"),
    [
        (0.01, 0.05, True, "the LSTM beats gradient boosting on PR-AUC", "lstm_better"),
        (-0.05, -0.01, False, "gradient boosting beats the LSTM on PR-AUC", "gbm_better"),
        (-0.05, 0.0, False, "not distinguishable", "not_distinguishable"),
    ],
)
def test_beats_only_where_the_interval_excludes_zero(low, high, beats, words, outcome):
    assert comparison_outcome(comparison(low, high)) == outcome
    said, text = verdict(LSTM, GBM, comparison(low, high))
    assert said is beats and words in text


def test_no_interval_no_verdict_on_pr_auc():
    assert comparison_outcome(None) is None
    assert comparison_outcome({"difference": 0.1, "low": None, "high": None, "resamples": 0}) is None
    beats, text = verdict(LSTM, GBM, None)
    assert beats is None and text.startswith("no PR-AUC verdict") and "43 of 52" in text
    no_lead = model(0.5, 0, None, 0.0)
    assert "warns 0 of 52 episodes (0%), 0.00 false alerts" in verdict(no_lead, GBM, None)[1]


def test_the_operating_point_holds_both_models_against_each_target():
    point = operating_point({"lstm": LSTM, "gbm": GBM})
    assert point["targets"] == {"warned_share": 0.8, "median_lead_s": 180.0, "false_alerts_per_healthy_car_hour": 0.1}
    assert point["models"]["lstm"]["met"] == {
        "warned_share": True,
        "median_lead_s": True,
        "false_alerts_per_healthy_car_hour": True,
    }
    assert point["models"]["gbm"]["met"]["warned_share"] is False
    assert point["models"]["gbm"]["met"]["false_alerts_per_healthy_car_hour"] is False
    assert (point["models"]["lstm"]["warned"], point["models"]["lstm"]["episodes"]) == (43, 52)


def row(text: str, label: str) -> list[str]:
    """The cells of the table's row with this label (LSTM, GBM)."""
    line = next(line for line in text.splitlines() if line.startswith(label + " "))
    return line[len(label) :].split()


def test_the_text_table_shows_the_transfer_the_confusion_counts_and_the_modes():
    modes = {"battery": {"episodes": 8, "warned": 7}, "shock": {"episodes": 9, "warned": 0}}
    gbm_modes = {"battery": {"episodes": 8, "warned": 6}, "shock": {"episodes": 9, "warned": 1}}
    models = {"lstm": model(0.652, 43, 215.0, 0.06, modes), "gbm": model(0.640, 39, 250.0, 0.12, gbm_modes)}
    report = {
        "models": models,
        "split": {"test": ["car"] * 60},
        "horizon": 60,
        "window": 36,
        "verdict": "the verdict",
        "targets": {},
    }
    text = text_table(report)
    assert row(text, "false alerts / car-h, valid.") == ["0.080", "0.080"]
    assert row(text, "false alerts / car-h, test") == ["0.060", "0.120"]
    assert row(text, "test - budget") == ["-0.040", "0.020"]
    assert row(text, "test - validation") == ["-0.020", "0.040"]
    assert "LSTM at its threshold: windows TP 10 FP 5 FN 20 TN 900; episodes warned 43, missed 9" in text
    assert "suppressed n/a" in text
    assert "episodes warned by failure mode (LSTM / GBM): battery 7/8 / 6/8, shock 0/9 / 1/9" in text
