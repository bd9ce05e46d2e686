"""Models made of simple rules, for the live evaluation and promotion gate's tests: their predictions of the
simulator's readings, published as the predictors publish them (schemas/car_failure_prediction.avsc's fields), so
that the figures of a model whose quality is known by construction can be checked.

The ground truth is read here from the readings themselves (each car's failure_occurred, in seq order), apart from
ml/episodes.py, whose figures the tests check against it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from scripts.testkit.readings import as_in_kafka, readings

Key = tuple[str, int]
THRESHOLD = 0.5


def fleet(cars: int, per_car: int, seed: int, failure_rate: float = 2.0) -> list[dict[str, Any]]:
    """The simulator's readings as a reader decodes them from car-sensor, failures frequent enough to count."""
    return [as_in_kafka(r) for r in readings(cars, per_car, seed=seed, failure_rate=failure_rate)]


def failed_by_car(records: list[dict[str, Any]]) -> dict[str, list[bool]]:
    """Each car's failure_occurred, in seq order (the simulator numbers a car's readings 0, 1, ...)."""
    cars: dict[str, list[bool]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r["car_id"], r["seq"])):
        cars[record["car_id"]].append(bool(record["failure_occurred"]))
    return dict(cars)


def onsets(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each car's onsets: seqs of a failed reading after one that was not (or the car's first)."""
    return {
        car: [seq for seq, failed in enumerate(flags) if failed and (seq == 0 or not flags[seq - 1])]
        for car, flags in failed_by_car(records).items()
    }


def warning_keys(records: list[dict[str, Any]], horizon: int) -> set[Key]:
    """Readings with an onset within their next `horizon` readings: the truth an oracle knows."""
    return {
        (car, seq)
        for car, starts in onsets(records).items()
        for onset in starts
        for seq in range(max(0, onset - horizon), onset)
    }


def publish(
    records: list[dict[str, Any]], probability: Mapping[Key, float], version: str, window: int
) -> list[dict[str, Any]]:
    """A prediction of every reading, as the predictors write it: an alert at THRESHOLD, held back (failure_predicted
    false, alert_suppressed true) while the car reported a failure in the reading or its previous `window`."""
    predictions = []
    for car, flags in failed_by_car(records).items():
        for seq in range(len(flags)):
            p = float(probability.get((car, seq), 0.0))
            quiet = any(flags[max(0, seq - window) : seq + 1])
            alert = p >= THRESHOLD
            predictions.append(
                {
                    "car_id": car,
                    "seq": seq,
                    "failure_probability": p,
                    "failure_predicted": alert and not quiet,
                    "alert_suppressed": alert and quiet,
                    "model_version": version,
                }
            )
    return predictions


def oracle(records: list[dict[str, Any]], horizon: int, window: int, version: str = "oracle") -> list[dict]:
    """Probability 1 in the `horizon` readings before each onset, 0 elsewhere."""
    return publish(records, dict.fromkeys(warning_keys(records, horizon), 1.0), version, window)


def never(records: list[dict[str, Any]], window: int, version: str = "never") -> list[dict]:
    """Probability 0 everywhere: never alerts."""
    return publish(records, {}, version, window)


def noisy_oracle(records: list[dict[str, Any]], horizon: int, window: int, seed: int, version: str = "noisy"):
    """A reasonable model: the oracle's knowledge blurred by noise. About 5 in 6 readings of a warning stretch
    alert, and a few healthy readings do (false alerts)."""
    rng = np.random.default_rng(seed)
    truth = warning_keys(records, horizon)
    keys = [(r["car_id"], r["seq"]) for r in records]
    noise = rng.normal(0.2, 0.1, len(keys))
    probability = {key: float(np.clip(0.4 * (key in truth) + n, 0, 1)) for key, n in zip(keys, noise, strict=True)}
    return publish(records, probability, version, window)


def shuffled(predictions: list[dict[str, Any]], seed: int, window: int, records: list[dict[str, Any]], version: str):
    """`predictions`' probabilities dealt to other readings at random: what a model trained on shuffled labels
    knows (its alerts as many, their places chance)."""
    rng = np.random.default_rng(seed)
    values = rng.permutation([p["failure_probability"] for p in predictions])
    keys = [(p["car_id"], p["seq"]) for p in predictions]
    return publish(records, dict(zip(keys, values.tolist(), strict=True)), version, window)


def as_written(predictions: list[dict[str, Any]], records: list[dict[str, Any]], horizon: int) -> list[dict]:
    """`predictions` with the schema's other fields, as a predictor writes them to Kafka: the reading's event_time,
    predicted_at (the reading's event_time here), the model's horizon, in distribution."""
    times = {(r["car_id"], r["seq"]): r["event_time"] for r in records}
    return [
        {
            **p,
            "event_time": times[(p["car_id"], p["seq"])],
            "predicted_at": times[(p["car_id"], p["seq"])],
            "horizon": horizon,
        }
        for p in predictions
    ]
