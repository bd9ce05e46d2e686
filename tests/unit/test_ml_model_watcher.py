"""The predictor's model watcher (ml/serving/model_watcher.py) serves the registry's champion, else the newest
version, and loads whatever differs from the version served: a promotion and a rollback switch it, a version that
fails to load is logged and skipped, an unreadable registry keeps the current model."""

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml import artifact
from ml.registry import Registry
from ml.serving.model_watcher import ModelWatcher
from ml.training.untrained_model import save_untrained_model

DEADLINE_S = 30


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, ModelWatcher]]:
    watcher = ModelWatcher(tmp_path, interval=0.05)
    yield tmp_path, watcher
    watcher.stop()


def next_model(watcher: ModelWatcher) -> artifact.LoadedModel:
    deadline = time.monotonic() + DEADLINE_S
    while (model := watcher.take()) is None:
        assert time.monotonic() < deadline, "no model loaded"
        time.sleep(0.02)
    return model


def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"never logged: {text}"
        time.sleep(0.02)


def test_promotion_and_rollback_switch_the_served_model_and_a_broken_one_is_skipped(watched, caplog):
    models, watcher = watched
    a = save_untrained_model(models, window=4, units=4, seed=1).name
    b = save_untrained_model(models, window=4, units=4, seed=2).name
    assert watcher.wait_first(threading.Event()).version == b, "no registry: the newest"
    registry = Registry(models)
    registry.register_challenger(a, "older, chosen by hand")
    registry.promote("test")
    watcher.start()
    assert next_model(watcher).version == a, "an older champion is served too"

    registry.register_challenger(b, "retrained")
    registry.promote("better")
    assert next_model(watcher).version == b
    registry.rollback("worse live")
    assert next_model(watcher).version == a, "rolled back without a restart"

    broken = models / "20240101T000000Z"  # metadata that reads, no SavedModel
    broken.mkdir()
    shutil.copy(models / a / artifact.METADATA_FILE, broken / artifact.METADATA_FILE)
    registry.register_challenger(broken.name, "broken")
    registry.promote("to be skipped")
    logged(caplog, f"cannot load model {broken}, keeping the current one")
    assert watcher.take() is None

    (models / "registry" / "aliases.json").write_text("{")
    logged(caplog, "cannot tell which model to serve")
    registry.rollback("back to a model that loads")  # rewrites the aliases: a, served already, nothing to load
    registry.register_challenger(b, "again")
    registry.promote("again")
    assert next_model(watcher).version == b
    complaints = [r for r in caplog.records if "cannot tell which model" in r.getMessage()]
    assert len(complaints) == 1, "an unreadable registry is logged once while it lasts"
