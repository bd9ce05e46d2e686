"""A model judged live: its predictions against the readings' ground truth, once that truth is known.

Whether a reading preceded a failure is known only H readings later (H, the model's horizon). The figures here are
therefore computed over MATURED readings only: a reading whose next H readings of its run have arrived, or whose
next readings already hold a failure onset. Everything else is ml/episodes.py's, unchanged: the label, episodes,
warned, lead time, false alerts per healthy car-hour, suppression (W, the model's window). The series is built
from the readings as training builds it (`ml.features.series_from_records`): each car in its order, duplicates of
(car_id, seq) dropped, runs cut at gaps in seq.

Inputs are dicts as the readers decode them: readings of `car-sensor` (car_id, seq, event_time, failure_occurred,
seq_origin, ...) and one model's predictions (schemas/car_failure_prediction.avsc: car_id, seq,
failure_probability, failure_predicted, alert_suppressed, model_version), joined by (car_id, seq). A prediction
that comes twice (a predictor's restart) counts once, the first kept. A matured reading without a prediction of
the model is not judged: `unjudged` counts those. An alert is failure_predicted or alert_suppressed (the
probability reached the threshold): ml/episodes.py counts the suppressed ones apart, by the rule the predictors
follow.

`head_to_head` judges two models on the SAME readings, those both predicted: what the promotion gate (ml/gate.py)
compares. Both are judged with one H and one W (a model of another horizon answers another question). No Kafka
here: a service reads the topics and hands the records in.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from ml.episodes import episode_report, onset_labels
from ml.features import series_from_records

Key = tuple[str, int]
"""(car_id, seq): what joins a prediction to its reading."""


@dataclass(frozen=True)
class LiveFigures:
    """One model's figures over the matured readings it predicted. JSON-ready (`as_dict`): "no such figure" is None."""

    model_version: str
    matured_readings: int
    """Matured readings judged: a prediction of this model exists, the reading not in failure."""
    unjudged: int
    """Matured readings (not in failure) that this model did not predict (or that another model did not, in a
    head-to-head): left out of every figure."""
    episodes: int
    """Matured failure onsets with at least one judged reading in their warning stretch (ml/episodes.py)."""
    warned: int
    """Of those, the episodes with an alert in their warning stretch."""
    lead_s: tuple[float, ...]
    """Lead time of each warned episode, seconds from its first alert to the onset, ascending."""
    false_alerts: int
    healthy_car_hours: float
    false_alerts_per_car_hour: float | None
    """None when no healthy car-hour was judged."""
    pr_auc: float | None
    """Average precision of the probabilities against the label, over the judged readings; None with one class."""

    @property
    def median_lead_s(self) -> float | None:
        return float(np.median(self.lead_s)) if self.lead_s else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lead_s": list(self.lead_s), "median_lead_s": self.median_lead_s}


def _key(record: dict[str, Any]) -> Key:
    return record["car_id"], int(record["seq"])


def _one_per_reading(predictions: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Predictions by (car_id, seq), the first of duplicates kept."""
    by_key: dict[Key, dict[str, Any]] = {}
    for prediction in predictions:
        by_key.setdefault(_key(prediction), prediction)
    return by_key


def _model_version(predictions: Sequence[dict[str, Any]]) -> str:
    versions = sorted({p["model_version"] for p in predictions})
    if len(versions) != 1:
        raise ValueError(f"predictions of exactly one model are judged at a time, got versions {versions}")
    return versions[0]


def live_figures(
    readings: Sequence[dict[str, Any]],
    predictions: Sequence[dict[str, Any]],
    horizon: int,
    window: int,
    *,
    only: Collection[Key] | None = None,
) -> LiveFigures:
    """One model's figures over the matured readings it predicted. `readings` in the order they arrived (a
    content-hash car's order); `predictions` of one model_version (else ValueError); `only`: judge no reading
    outside these keys (a head-to-head's common readings). `horizon` and `window`: the model's H and W."""
    version = _model_version(predictions)
    by_key = _one_per_reading(predictions)
    if only is not None:
        by_key = {key: p for key, p in by_key.items() if key in only}
    series = series_from_records(readings, features=())
    keys = zip(series.car_ids.tolist(), series.seq.tolist(), strict=True)
    matched = [by_key.get(key) for key in keys]
    judged = np.array([p is not None for p in matched], dtype=bool)
    alerts = np.array(
        [p is not None and bool(p["failure_predicted"] or p.get("alert_suppressed")) for p in matched], dtype=bool
    )
    probability = np.array([p["failure_probability"] if p is not None else 0.0 for p in matched], dtype=np.float64)

    # episode_report judges only matured readings (eligible: the future known, not in failure)
    report = episode_report(series, alerts, judged, horizon, window=window)
    label, eligible = onset_labels(series, horizon)
    scored = eligible & judged
    labels = label[scored]
    both_classes = 0 < labels.sum() < len(labels)
    rate = report.false_alerts_per_car_hour
    return LiveFigures(
        model_version=version,
        matured_readings=int(scored.sum()),
        unjudged=int((eligible & ~judged).sum()),
        episodes=report.episodes,
        warned=report.warned,
        lead_s=tuple(sorted(float(lead) for lead in report.leads_s)),
        false_alerts=report.false_alerts,
        healthy_car_hours=report.healthy_hours,
        false_alerts_per_car_hour=None if math.isnan(rate) else rate,
        pr_auc=float(average_precision_score(labels, probability[scored])) if both_classes else None,
    )


def head_to_head(
    readings: Sequence[dict[str, Any]],
    champion: Sequence[dict[str, Any]],
    challenger: Sequence[dict[str, Any]],
    horizon: int,
    window: int,
) -> tuple[LiveFigures, LiveFigures]:
    """(champion's, challenger's) figures on the same readings: those both models predicted. `champion` and
    `challenger`: each one model's predictions; `horizon` and `window` as in `live_figures`, one for both."""
    common = {_key(p) for p in champion} & {_key(p) for p in challenger}
    return (
        live_figures(readings, champion, horizon, window, only=common),
        live_figures(readings, challenger, horizon, window, only=common),
    )
