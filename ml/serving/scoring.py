"""One model's prediction records for a batch whose readings entered the car rings: the champion's (the product,
ml/serving/batch.py) and a challenger's (the shadow, ml/serving/shadow.py) are made here the same way.

The rings hold the last L readings of every car, L the longest window of the models scored (ml/serving/ring_buffer.py);
a model of window W is called on the last W rows of each window, which are exactly the window a ring of W would
have given (the left padding of a car's first readings included). Each model brings its own threshold, horizon,
version, training range (the OOD score, ml/ood.py) and W for the suppression rule (ml/episodes.py: a reading whose
car reported a failure in it or in its previous W readings gets no alert, `alert_suppressed` where it reached the
threshold). The records follow schemas/car_failure_prediction.avsc.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ml.artifact import LoadedModel
from ml.ood import OodScorer, OodScores


class Pushed(NamedTuple):
    """A batch's readings, in the order read, after they entered the rings: what every model's records are made of."""

    cars: list[str]
    seqs: np.ndarray
    times: np.ndarray
    """event_time (ms) of each reading."""
    rows: np.ndarray
    """float32 [N, F] as pushed: a feature the reading lacks at the served model's training mean (ml/features.py)."""
    missing: np.ndarray
    """bool [N, F]: the features each reading lacks."""
    out_of_range: list[Sequence[str]]
    """Each reading's `out_of_range` fields (the bridge's plausibility check)."""
    hashed: np.ndarray
    """bool per reading: its seq is a content hash, no order."""
    failure: np.ndarray
    """int8 per reading: failure_occurred (1 or 0), -1 where it is null."""
    windows: np.ndarray
    """float32 [N, L, F]: the window of the rings' length L that ends at each reading."""
    since_failure: np.ndarray
    """int64 per reading: readings since its car last reported a failure (0: in this one), at most L + 1."""


class ModelScorer:
    """A model as scored: its windows, threshold, suppression rule, OOD scores and records."""

    def __init__(self, model: LoadedModel, threshold: float, ood_threshold: float) -> None:
        self.model = model
        self.version = model.version
        self.window = model.window
        self.horizon = model.horizon
        self.features = model.features
        self.threshold = threshold
        self.ood = OodScorer.from_metadata(model.metadata, ood_threshold)

    def probabilities(self, pushed: Pushed) -> np.ndarray:
        """The model's failure probability on each reading's last W readings (float32)."""
        if not len(pushed.windows):
            return np.empty(0, dtype=np.float32)
        windows = pushed.windows[:, pushed.windows.shape[1] - self.window :]
        return self.model.predict(windows)  # in calls of at most artifact.SIGNATURE_BATCH windows

    def ood_scores(self, pushed: Pushed) -> OodScores:
        return self.ood.score(pushed.rows, pushed.out_of_range, pushed.missing)

    def records(self, pushed: Pushed, probabilities: np.ndarray, ood: OodScores) -> list[dict]:
        """The prediction records, in the order read."""
        # Python values (tolist) build the records several times faster than numpy scalars; the alert compares
        # the float32 probability as float64, as `float(p) >= threshold` does
        above = probabilities.astype(np.float64) >= self.threshold
        suppressed = pushed.since_failure <= self.window
        alert, quieted = above & ~suppressed, above & suppressed
        predicted_at, version, horizon = int(time.time() * 1000), self.version, self.horizon
        return [
            {
                "car_id": car,
                "seq": seq,
                "event_time": event_time,
                "predicted_at": predicted_at,
                "failure_probability": probability,
                "failure_predicted": alerting,
                "model_version": version,
                "horizon": horizon,
                "ood_score": score,
                "out_of_distribution": flagged,
                "ood_features": ood.features_of(i) if flagged else [],
                "alert_suppressed": held_back,
            }
            for i, (car, seq, event_time, probability, alerting, score, flagged, held_back) in enumerate(
                zip(
                    pushed.cars,
                    pushed.seqs.tolist(),
                    pushed.times.tolist(),
                    probabilities.tolist(),
                    alert.tolist(),
                    ood.score.tolist(),
                    ood.flagged.tolist(),
                    quieted.tolist(),
                    strict=True,
                )
            )
        ]
