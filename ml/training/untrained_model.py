"""A complete model artifact with untrained weights, for plumbing tests and benchmarks of the predictor.

Its probabilities mean nothing; what it exercises is delivery: the same architecture (ml/training/model.py), the same
artifact layout and SavedModel signature (ml/artifact.py) as a trained model, in a second instead of minutes.
"""

from __future__ import annotations

from pathlib import Path

import keras

from common.schemas import READING, SENSOR_FIELDS, SENSOR_RANGES
from ml import artifact
from ml.training.model import build_model


def save_untrained_model(
    model_dir: str | Path, window: int = 8, horizon: int = 5, units: int = 32, seed: int = 7, **extra
) -> Path:
    """Save a new version with random weights, the training defaults' size (32 LSTM units) unless told;
    `extra` goes into metadata.json (e.g. a threshold)."""
    keras.utils.set_random_seed(seed)
    features = list(SENSOR_FIELDS)
    mean = [sum(SENSOR_RANGES[f]) / 2 for f in features]
    std = [(SENSOR_RANGES[f][1] - SENSOR_RANGES[f][0]) / 4 for f in features]
    no_skill = {"pr_auc": 0.0, "roc_auc": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    metadata = {
        "window": window,
        "horizon": horizon,
        "features": features,
        "scaling": {"mean": mean, "std": std},
        "threshold": 0.5,
        "schema": {"name": READING},
        "training": {"records": 0, "note": "untrained: for plumbing tests and benchmarks only"},
        "metrics": no_skill,
        "baseline": no_skill,
        **extra,
    }
    return artifact.save(build_model(window, mean, std, units=units), metadata, model_dir)
