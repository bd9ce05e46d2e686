"""Out of distribution: how far a reading lies outside what the model was trained on.

A model's probabilities mean something only on data like its training data. Readings of other fleets (other
units: battery_voltage in centivolts, coolant_temp in kelvin, ...) reach the predictor as well-formed Avro, and
the LSTM answers them with a confident number. The artifact therefore keeps per-feature statistics of the
training cars' readings (`feature_stats` in metadata.json, written by `training_statistics`), and each
prediction gets a score:

    distance_f = max(0, x_f - max_f, min_f - x_f) / width_f        width_f = max_f - min_f (see `_widths`)
    ood_score  = max over the features f of distance_f             (0: every value inside the training range)
    out_of_distribution = ood_score > threshold                    (ML_OOD_THRESHOLD, default 1.0)
                          or the bridge listed a model feature in the reading's `out_of_range`
                          or the reading lacks a model feature (null: not reported)

x is the reading the prediction is for (the window's last one); min and max are the training cars' extremes;
`out_of_range` (readings schema version 2) names the values outside the schema's plausibility range for the
simulator's units: data in other units, whatever the training range says. A feature the reading lacks (null, such
as an accelerometer peak from a sender that measures none) is scored at its training mean (ml/features.py,
fill_missing), so its distance is 0, and the reading is flagged with the field named, whatever the scorer: the
model saw a value the car did not report.

Why the extremes and not the [0.5 %, 99.5 %] quantiles (kept too): the simulator's failure readings are the
tails of its distribution, and on held-out simulated cars (60 cars x 400 readings) the quantile range put 8 % of
the failure readings more than half a range width out. Against [min, max], over six fleets of 150 cars (the
demo's history) no held-out reading came 0.65 widths out; with 60 cars, up to 0.4 % of held-out readings passed
one width (at most 2: a tire leak on a wheel no training car leaked). Foreign units land far away:
battery_voltage 225 against a training range of about 9 to 13.4 V is 50 widths, current_draw 2730 about 5,
coolant_temp 292 about 3. The threshold, 1 width, sits between the two.

A model trained before these statistics existed has none: its scores are 0 and never flagged (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATS_KEY = "feature_stats"
QUANTILES = (0.0, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 1.0)
"""Quantile levels kept per feature (the drift report's bins use the sample, these describe the feature)."""
DEFAULT_THRESHOLD = 1.0
"""Distance beyond the training range, in widths of that range, above which a reading is out of distribution."""
MIN_WIDTH = 0.01
"""A feature that was constant in training gets a width of 1 % of its magnitude (at least 0.01)."""
NON_FINITE = 1e9
"""The distance of a NaN or infinite value: far out, yet finite for Avro consumers and Prometheus sums."""
SAMPLE_ROWS = 2000
"""Training readings kept in the artifact (training_sample.npy) for the drift report's distributions."""


def training_statistics(features: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Per-feature statistics of raw training readings [N, F] for metadata.json (`feature_stats`)."""
    values = np.asarray(features, dtype=np.float64)
    quantiles = np.quantile(values, QUANTILES, axis=0) if len(values) else np.zeros((len(QUANTILES), len(names)))
    per_feature = {}
    for i, name in enumerate(names):
        column = values[:, i]
        per_feature[name] = {
            "min": float(quantiles[0, i]),
            "max": float(quantiles[-1, i]),
            "mean": float(column.mean()) if len(column) else 0.0,
            "std": float(column.std()) if len(column) else 0.0,
            "q0_5": float(quantiles[QUANTILES.index(0.005), i]),
            "q99_5": float(quantiles[QUANTILES.index(0.995), i]),
            "quantiles": [float(q) for q in quantiles[:, i]],
        }
    return {"readings": len(values), "quantile_levels": list(QUANTILES), "features": per_feature}


def training_sample(features: np.ndarray, seed: int, rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to `rows` training readings drawn without replacement, float32 [n, F], in their original order."""
    if len(features) <= rows:
        return np.asarray(features, dtype=np.float32)
    picked = np.sort(np.random.default_rng(seed).choice(len(features), rows, replace=False))
    return np.asarray(features[picked], dtype=np.float32)


def _widths(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    magnitude = np.maximum(np.abs(low), np.abs(high))
    return np.maximum(high - low, MIN_WIDTH * np.maximum(magnitude, 1.0))


@dataclass(frozen=True)
class OodScores:
    """The scores of a batch of readings."""

    score: np.ndarray
    """float64 [N]: the largest distance beyond the training range over the features."""
    flagged: np.ndarray
    """bool [N]: score above the threshold."""
    outside: np.ndarray
    """bool [N, F]: the features whose distance is above the threshold."""
    names: tuple[str, ...]

    def features_of(self, i: int) -> list[str]:
        """The names of reading i's features beyond the threshold, in the model's feature order."""
        return [self.names[j] for j in np.flatnonzero(self.outside[i])]


class OodScorer:
    """Scores raw readings [N, F] (the model's feature order) against the training cars' range. Without a range
    (a model trained before the statistics existed) every score is 0 and nothing is flagged."""

    def __init__(
        self,
        names: Sequence[str],
        low: Sequence[float] | None,
        high: Sequence[float] | None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.names = tuple(names)
        self.enabled = low is not None and high is not None
        self.low = np.asarray(low if self.enabled else [-np.inf] * len(self.names), dtype=np.float64)
        self.high = np.asarray(high if self.enabled else [np.inf] * len(self.names), dtype=np.float64)
        self.width = _widths(self.low, self.high) if self.enabled else np.ones(len(self.names))
        self.threshold = float(threshold)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], threshold: float = DEFAULT_THRESHOLD) -> OodScorer:
        """The scorer of a model's metadata; a disabled one (logged) when the model keeps no training statistics."""
        names = list(metadata["features"])
        features = (metadata.get(STATS_KEY) or {}).get("features", {})
        if any(name not in features for name in names):
            log.warning(
                "model %s keeps no training statistics (trained before they existed): its predictions get "
                "ood_score 0 and are never flagged out of distribution; retrain it to score them",
                metadata.get("version", "?"),
            )
            return cls(names, None, None, threshold)
        return cls(names, [features[n]["min"] for n in names], [features[n]["max"] for n in names], threshold)

    def distances(self, rows: np.ndarray) -> np.ndarray:
        """float64 [N, F]: how far each value lies beyond the training range, in widths of it (NON_FINITE for
        NaN and infinities)."""
        values = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.names))
        if not self.enabled:
            return np.zeros(values.shape)
        finite = np.isfinite(values)
        values = np.where(finite, values, 0.0)
        beyond = np.maximum(np.maximum(values - self.high, self.low - values), 0.0) / self.width
        return np.where(finite, beyond, NON_FINITE)

    def score(
        self,
        rows: np.ndarray,
        out_of_range: Sequence[Sequence[str]] | None = None,
        missing: np.ndarray | None = None,
    ) -> OodScores:
        """Scores of raw readings [N, F]; `out_of_range` holds each reading's fields that the bridge found outside
        the plausibility range (its `out_of_range` field): they are out of distribution whatever their distance;
        `missing` (bool [N, F], ml/features.py missing_values) marks the features a reading lacks: flagged always."""
        distances = self.distances(rows)
        score = distances.max(axis=1, initial=0.0)
        outside = distances > self.threshold
        if missing is not None:
            outside |= np.asarray(missing, dtype=bool).reshape(outside.shape)
        if out_of_range is not None and self.enabled:
            column = {name: j for j, name in enumerate(self.names)}
            for i, fields in enumerate(out_of_range):
                for name in fields:
                    if name in column:
                        outside[i, column[name]] = True
        return OodScores(score, outside.any(axis=1), outside, self.names)


def out_of_range(readings: Sequence[dict[str, Any]]) -> list[Sequence[str]]:
    """Each decoded reading's `out_of_range` fields (absent before readings schema version 2)."""
    return [reading.get("out_of_range") or () for reading in readings]


def describe(features: Sequence[str]) -> str:
    """The words alerts use: `OUT OF DISTRIBUTION: battery_voltage, coolant_temp outside training range`."""
    return f"OUT OF DISTRIBUTION: {', '.join(features)} outside training range"
