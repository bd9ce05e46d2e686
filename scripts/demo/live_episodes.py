"""The live run in failure episodes: the readings the demo saw on `car-sensor` (with the simulator's ground truth)
and their predictions, measured with ml/episodes.py, the definition training reports in, so that the demo's
"warned ahead" means what the model's test report means.

The series is built from the readings (a reading's truth is known whether or not it got a prediction); the
alerts are the predictions at or above the threshold (failure_predicted, or alert_suppressed: ml/episodes.py
counts the alerts it suppressed apart, by the same rule the predictors follow), and only readings with a
prediction are judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.schemas import SEQ_FROM_CONTENT, SEQ_FROM_SENDER
from ml.episodes import episode_report
from ml.features import series_from_records
from scripts.demo.stream_watch import Reading


def live_episodes(
    readings: Mapping[tuple[str, int], Reading],
    alerts: Mapping[tuple[str, int], tuple[bool, bool]],
    horizon: int,
    window: int,
) -> dict[str, Any]:
    """The summary's episode figures. `readings` by (car_id, seq) in the order they arrived (a content-hash
    car's order); `alerts`: (failure_predicted, alert_suppressed) by (car_id, seq), one per predicted reading;
    `window`: the served model's W."""
    records = [
        {
            "car_id": car,
            "seq": seq,
            "event_time": reading.event_time,
            "failure_occurred": reading.failure,
            "seq_origin": SEQ_FROM_CONTENT if reading.hashed else SEQ_FROM_SENDER,
        }
        for (car, seq), reading in readings.items()
    ]
    series = series_from_records(records, features=())
    keys = list(zip(series.car_ids.tolist(), series.seq.tolist(), strict=True))
    judged = np.fromiter((key in alerts for key in keys), dtype=bool, count=len(keys))
    alerting = np.fromiter((any(alerts.get(key, ())) for key in keys), dtype=bool, count=len(keys))
    report = episode_report(series, alerting, judged, horizon, window=window)
    return {
        "episodes": report.episodes,
        "episodes_warned": report.warned,
        "episodes_missed": report.episodes - report.warned,
        "median_lead_s": _finite(report.median_lead_s),
        "false_alerts": report.false_alerts,
        "healthy_car_hours": report.healthy_hours,
        "false_alerts_per_healthy_car_hour": _finite(report.false_alerts_per_car_hour),
        "suppressed_alerts": report.suppressed_alerts,
    }


def _finite(value: float) -> float | None:
    """None for "no such figure" (no warned episode, no healthy hour): JSON has no NaN."""
    return None if math.isnan(value) else value
