"""Physical contrasts between a car's corners: what a lead-up moves against what the road moves alike.

A corner and its axle partner (1_1 <-> 1_2, 2_1 <-> 2_2) share the road: its roughness, its bumps, the car's speed
and load (simulator/README.md, "Accelerometers"). A worn shock absorber raises its corner's accelerometer RMS and
peak against the partner's; a leaking tire falls against its partner's pressure. The ratio (accelerometers, which
scale with the road) or the difference (tire pressures) takes most of the shared part out: the statistics behind
the simulator's signal-to-noise table (scripts/studies/failure_snr.py). Both models get them: the LSTM computes them
inside its graph (ml/training/model.py), gradient boosting from the readings (ml/training/baseline.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AXLES = (("1_1", "1_2"), ("2_1", "2_2"))
TIRE = "tire_pressure_{}"
RATIO_SENSORS = ("accelerometer_{}_value", "accelerometer_{}_peak")
"""Accelerometer RMS and peak: compared by their ratio (log ratio for the trees)."""


def pairs(features: Sequence[str], pattern: str) -> list[tuple[int, int]]:
    """(corner, partner) column indices of every axle whose two fields of `pattern` the model reads."""
    index = {name: i for i, name in enumerate(features)}
    found = []
    for left, right in AXLES:
        a, b = pattern.format(left), pattern.format(right)
        if a in index and b in index:
            found.append((index[a], index[b]))
    return found


def tire_pairs(features: Sequence[str]) -> list[tuple[int, int]]:
    return pairs(features, TIRE)


def ratio_pairs(features: Sequence[str]) -> list[tuple[int, int]]:
    return [pair for pattern in RATIO_SENSORS for pair in pairs(features, pattern)]


def contrast_columns(readings: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """[N, F] readings -> [N, C]: each axle's tire pressure difference, then the log ratio of each axle's
    accelerometer RMS and peak (floored at 1e-3 m/s²: a reading is never below the sensor's floor, 0.05)."""
    columns = [readings[:, a] - readings[:, b] for a, b in tire_pairs(features)]
    floor = np.float32(1e-3)
    columns += [
        np.log(np.maximum(readings[:, a], floor)) - np.log(np.maximum(readings[:, b], floor))
        for a, b in ratio_pairs(features)
    ]
    if not columns:
        return np.zeros((len(readings), 0), np.float32)
    return np.stack(columns, axis=1).astype(np.float32)
