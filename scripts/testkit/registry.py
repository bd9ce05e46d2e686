"""Model folders for registry tests (ml/registry.py): a champion and a pending challenger (what the shadow and the
judge work on), and versions of metadata alone."""

from __future__ import annotations

import json
from pathlib import Path

from ml import artifact
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


def metadata_version(model_dir: Path, name: str, **metadata: object) -> Path:
    """A version folder holding only a metadata.json that reads (window 4, horizon 2, one feature, unless
    `metadata` says otherwise): enough for the registry, which never loads a model."""
    folder = model_dir / name
    folder.mkdir(parents=True)
    base = dict.fromkeys(artifact.REQUIRED_METADATA, {}) | {"window": 4, "horizon": 2, "features": ["a"]}
    (folder / artifact.METADATA_FILE).write_text(json.dumps(base | metadata))
    return folder
