"""A model folder whose registry (ml/registry.py) names a champion and a pending challenger: what the shadow and the
judge work on."""

from __future__ import annotations

from pathlib import Path

from ml.registry import Registry
from ml.training.untrained_model import save_untrained_model


def champion_and_challenger(models: Path, window: int, horizon: int) -> tuple[str, str]:
    """Two untrained versions of `window` and `horizon` in `models`: the first registered and promoted, the second
    registered; returns (champion, challenger)."""
    champion = save_untrained_model(models, window=window, horizon=horizon, seed=1).name
    challenger = save_untrained_model(models, window=window, horizon=horizon, seed=2).name
    registry = Registry(models)
    registry.register_challenger(champion, "the first model")
    registry.promote("the first model")
    registry.register_challenger(challenger, "retrained")
    return champion, challenger
