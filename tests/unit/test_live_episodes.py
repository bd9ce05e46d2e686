"""The demo summary's episode figures (scripts/demo/live_episodes.py, scripts/demo/summary.py) on a hand-built live
stream: episodes warned ahead or missed, the lead, false alerts per healthy car-hour, as ml/episodes.py defines
them; the delivery counts beside them unchanged."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from scripts.demo.live_episodes import live_episodes
from scripts.demo.stream_watch import Prediction, Reading, StreamState
from scripts.demo.summary import DemoResult, print_summary

START_MS = 1_700_000_000_000
H = 5
W = 3


def stream(cars: dict[str, tuple[set[int], set[int], range]]) -> StreamState:
    """car -> (failed seqs, alerting seqs, predicted seqs); 100 readings a car, one every 10 s of event time. An
    alerting seq in a failure or within W readings after one is published as the predictors do: suppressed."""
    state = StreamState()
    for car, (failed, alerting, predicted) in cars.items():
        for seq in range(100):
            event_time = START_MS + 10_000 * seq
            state.readings[(car, seq)] = Reading(event_time, event_time + 5, seq in failed, False)
            if seq in predicted:
                quiet = any(seq - back in failed for back in range(W + 1))
                alert = seq in alerting
                prediction = Prediction(
                    0.9 if alert else 0.1, alert and not quiet, event_time + 50, "v1", H, alert and quiet
                )
                state.predictions[(car, seq, event_time)] = prediction
    return state


FLEET = {
    # onset 40, alert 3 readings before it: warned 30 s ahead; the alerts at 41 (in failure) and 46, 47 (within W
    # after it) are suppressed: two alarms, neither false nor true. onset 80 with no alert in 75..79: missed.
    "car-1": (set(range(40, 45)) | set(range(80, 83)), {37, 41, 46, 47}, range(100)),
    # healthy, one alarm of two readings outside every warning stretch: one false alert.
    "car-2": (set(), {10, 11}, range(100)),
    # onset 50 before its first prediction (60): no judged reading in its warning stretch, not an episode.
    "car-3": ({50, 51, 52}, set(), range(60, 100)),
}


def test_episodes_are_warned_ahead_or_missed_with_the_lead_and_false_alerts_per_healthy_hour() -> None:
    state = stream(FLEET)
    figures = live_episodes(state.readings, state.alerts_by_reading(), H, W)
    # Healthy judged readings: car-1 100 - 8 in failure - 6 within W after them - 5 with an unknown future - 10 in
    # warning stretches = 71, car-2 100 - 5 = 95, car-3 readings 60..94 = 35 (52 the last within W of its
    # failure): 201 readings of 10 s.
    assert figures == {
        "episodes": 2,
        "episodes_warned": 1,
        "episodes_missed": 1,
        "median_lead_s": 30.0,
        "false_alerts": 1,
        "healthy_car_hours": pytest.approx(201 * 10 / 3600),
        "false_alerts_per_healthy_car_hour": pytest.approx(3600 / 2010),
        "suppressed_alerts": 2,
    }


def test_no_warned_episode_gives_no_lead_rather_than_nan() -> None:
    state = stream({"car-1": (set(range(40, 45)), set(), range(100))})
    figures = live_episodes(state.readings, state.alerts_by_reading(), H, W)
    assert (figures["episodes"], figures["episodes_missed"], figures["median_lead_s"]) == (1, 1, None)
    json.dumps(figures, allow_nan=False)


class Watcher:
    def __init__(self, state: StreamState) -> None:
        self.state = state

    def read(self, function):
        return function(self.state)


def test_the_summary_reports_episodes_beside_the_delivery_counts_and_writes_them_to_json() -> None:
    state = stream(FLEET)
    state.duplicates = 2
    result = DemoResult(
        cars=3, plan="plan", log_dir="logs", speedup=60, published=300, model={"horizon": H, "window": W}
    )
    result.take(Watcher(state))
    assert (result.in_kafka, result.predicted, result.missing, result.duplicates) == (300, 240, 60, 2)
    data = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert {k: data[k] for k in ("episodes", "episodes_warned", "episodes_missed", "median_lead_s")} == {
        "episodes": 2,
        "episodes_warned": 1,
        "episodes_missed": 1,
        "median_lead_s": 30.0,
    }
    assert data["false_alerts_per_healthy_car_hour"] == pytest.approx(3600 / 2010)
    assert (data["alerts"], data["suppressed_readings"], data["suppressed_alerts"]) == (3, 3, 2)
    console = Console(width=120, record=True)
    print_summary(result, console)
    text = console.export_text()
    assert "episodes warned ahead / missed" in text and "1 / 1" in text
    assert "median lead, s (simulated, 60x)" in text and "30.000" not in text and "30.0" in text
    assert "false alerts per healthy car-hour (simulated, 60x)" in text and "1.791 (1 in 0.558 h)" in text
    assert "alerts suppressed, the car reported a failure: readings / alarms" in text and "3 / 2" in text
    assert "readings with a prediction" in text and "alert precision" not in text


def test_without_a_model_horizon_the_episode_figures_stay_empty() -> None:
    result = DemoResult(cars=3, plan="plan", log_dir="logs", speedup=60)
    result.take(Watcher(stream(FLEET)))
    assert result.episodes is None and result.as_dict()["false_alerts_per_healthy_car_hour"] is None
