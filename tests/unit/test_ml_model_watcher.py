"""The predictor's model watcher (ml/serving/model_watcher.py) serves the registry's champion, else the newest
version, and loads whatever differs from the version served: a promotion and a rollback switch it, a version that
fails to load is logged and skipped, an unreadable registry keeps the current model. The challenger is loaded
beside it, its changes handed over apart, and a promotion's two changes (the new champion, no challenger) together."""

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml import artifact
from ml.registry import Registry
from ml.serving.model_watcher import ChallengerChange, ModelWatcher
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


def next_challenger(watcher: ModelWatcher) -> ChallengerChange:
    deadline = time.monotonic() + DEADLINE_S
    while (change := watcher.take_challenger()) is None:
        assert time.monotonic() < deadline, "no challenger change"
        time.sleep(0.02)
    return change


def test_the_challenger_is_loaded_beside_the_champion_cleared_when_rejected_and_promoted_with_it(watched, caplog):
    models, watcher = watched
    a = save_untrained_model(models, window=4, units=4, seed=1).name
    registry = Registry(models)
    registry.register_challenger(a, "first")
    registry.promote("first")
    assert watcher.wait_first(threading.Event()).version == a
    assert watcher.take_challenger() is None, "no challenger named: nothing changes"
    watcher.start()

    b = save_untrained_model(models, window=6, units=4, seed=2).name
    registry.register_challenger(b, "retrained")
    assert next_challenger(watcher).model.version == b
    assert watcher.take() is None, "the challenger is not served"
    registry.reject("worse")
    assert next_challenger(watcher).model is None

    broken = models / "20240101T000000Z"  # metadata that reads, no SavedModel
    broken.mkdir()
    shutil.copy(models / a / artifact.METADATA_FILE, broken / artifact.METADATA_FILE)
    registry.register_challenger(broken.name, "broken")
    logged(caplog, f"cannot load model {broken}, not scoring it in the shadow")
    assert watcher.take_challenger() is None, "nothing was scored: nothing to stop"
    registry.reject("broken")

    registry.register_challenger(b, "again")
    assert next_challenger(watcher).model.version == b
    watcher.stop()  # one look below decides what is handed over: a promotion's two changes come together
    watcher._thread.join(DEADLINE_S)
    assert not watcher._thread.is_alive()
    registry.promote("better")
    watcher._look()
    assert (watcher.take().version, watcher.take_challenger()) == (b, ChallengerChange(None))
