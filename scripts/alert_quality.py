"""How good were the live alerts? Predictions joined to the simulator's ground truth by (car_id, seq).

A reading is positive when a failure occurs within the model's horizon as the simulator labelled it: one of the
car's readings seq .. seq + horizon carries failure_occurred (horizon 0 = the failure is happening now). Readings
whose horizon reaches past the last reading seen are left out unless a failure already shows in the known part:
their truth is not known yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AlertQuality:
    evaluated: int
    positives: int
    alerts: int
    true_alerts: int
    undetermined: int

    @property
    def precision(self) -> float | None:
        return self.true_alerts / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        return self.true_alerts / self.positives if self.positives else None

    def as_dict(self) -> dict:
        return asdict(self) | {"precision": self.precision, "recall": self.recall}


def failure_within(truth: Mapping[int, bool], seq: int, horizon: int, last_seq: int) -> bool | None:
    """Whether a failure occurs in readings seq .. seq + horizon of one car; None while that is not known."""
    for ahead in range(seq, seq + horizon + 1):
        if truth.get(ahead):
            return True
    return False if seq + horizon <= last_seq else None


def alert_quality(
    truth: Mapping[str, Mapping[int, bool]], predictions: Mapping[tuple[str, int], bool], horizon: int
) -> AlertQuality:
    """`truth`: failure_occurred per car and seq; `predictions`: failure_predicted per (car_id, seq)."""
    last_seq = {car: max(seqs) for car, seqs in truth.items() if seqs}
    evaluated = positives = alerts = true_alerts = undetermined = 0
    for (car, seq), predicted in predictions.items():
        if car not in last_seq:
            undetermined += 1
            continue
        label = failure_within(truth[car], seq, horizon, last_seq[car])
        if label is None:
            undetermined += 1
            continue
        evaluated += 1
        positives += label
        alerts += predicted
        true_alerts += label and predicted
    return AlertQuality(evaluated, positives, alerts, true_alerts, undetermined)
