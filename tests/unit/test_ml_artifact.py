"""The model artifact: written whole or not at all, found by version, loaded for inference through its SavedModel."""

import json

import numpy as np
import pytest

from ml import artifact
from ml.training.model import build_model

FEATURES = ["a", "b", "c"]


def metadata() -> dict:
    return {
        "window": 4,
        "horizon": 2,
        "features": FEATURES,
        "scaling": {"mean": [1.0, 2.0, 3.0], "std": [1.0, 2.0, 4.0]},
        "threshold": 0.4,
        "schema": {"name": "test", "fingerprint": "0"},
        "training": {},
        "metrics": {},
    }


def test_saved_artifact_predicts_like_the_keras_model(tmp_path):
    model = build_model(4, [1.0, 2.0, 3.0], [1.0, 2.0, 4.0], units=4)
    windows = np.random.default_rng(0).normal(2.0, 2.0, size=(5, 4, 3)).astype(np.float32)
    path = artifact.save(model, metadata(), tmp_path, extras=lambda staging: (staging / "note.txt").write_text("x"))
    assert artifact.latest(tmp_path) == path
    assert artifact.VERSION_PATTERN.match(path.name)
    assert {p.name for p in path.iterdir()} == {"model.keras", "saved_model", "metadata.json", "note.txt"}
    loaded = artifact.load(path)
    assert loaded.version == path.name == json.loads((path / "metadata.json").read_text())["version"]
    assert (loaded.window, loaded.horizon, loaded.features, loaded.threshold) == (4, 2, FEATURES, 0.4)
    assert loaded.warm_up() > 0  # one call at the largest batch, which changes nothing the next calls return
    expected = model.predict(windows, verbose=0).reshape(-1)
    np.testing.assert_allclose(loaded.predict(windows), expected, rtol=1e-5)
    many = np.resize(windows, (artifact.SIGNATURE_BATCH + 3, 4, 3))  # in two signature calls
    np.testing.assert_allclose(loaded.predict(many), np.resize(expected, len(many)), rtol=1e-5)
    np.testing.assert_allclose(loaded.keras_model().predict(windows, verbose=0).reshape(-1), expected, rtol=1e-5)
    with pytest.raises(artifact.ArtifactError, match="shape"):
        loaded.predict(windows[:, :3])
    second = artifact.save(model, metadata(), tmp_path)
    assert second.name > path.name and artifact.latest(tmp_path) == second


def test_unfinished_or_broken_versions_are_not_served(tmp_path):
    (tmp_path / ".20250101T000000Z-tmp").mkdir()  # a save in progress
    assert artifact.latest(tmp_path) is None
    broken = tmp_path / "20250101T000000Z"
    broken.mkdir()
    assert artifact.latest(tmp_path) == broken
    with pytest.raises(artifact.ArtifactError, match="no metadata.json"):
        artifact.load(broken)
    (broken / "metadata.json").write_text(json.dumps({"window": 4}))
    with pytest.raises(artifact.ArtifactError, match="lacks"):
        artifact.load(broken)
    assert artifact.latest(tmp_path / "missing") is None


def test_a_version_named_in_the_future_does_not_hide_the_versions_trained_after_it(tmp_path, caplog):
    future = tmp_path / "20991231T235959Z"
    impossible = tmp_path / "20251399T000000Z"  # month 13
    for folder in (future, impossible):
        folder.mkdir()
    model = build_model(4, [0.0] * 3, [1.0] * 3, units=4)
    saved = artifact.save(model, metadata(), tmp_path)
    assert artifact.versions(tmp_path) == [saved] and artifact.latest(tmp_path) == saved
    artifact.latest(tmp_path)  # looked at again, as the predictor's model watcher does every few seconds
    warnings = [r.getMessage() for r in caplog.records if "ignoring model version" in r.getMessage()]
    assert len(warnings) == 2 and any(future.name in w for w in warnings), warnings


def test_a_failed_save_leaves_nothing_behind(tmp_path):
    model = build_model(4, [0.0] * 3, [1.0] * 3, units=4)

    def fail(staging):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        artifact.save(model, metadata(), tmp_path, extras=fail)
    assert list(tmp_path.iterdir()) == []


def test_training_statistics_and_sample_travel_with_the_artifact_and_old_versions_still_load(tmp_path):
    from ml import ood

    model = build_model(4, [1.0, 2.0, 3.0], [1.0, 2.0, 4.0], units=4)
    old = artifact.save(model, metadata(), tmp_path)  # as written before feature_stats existed
    loaded = artifact.load(old)
    assert artifact.read_training_sample(old) is None
    assert not ood.OodScorer.from_metadata(loaded.metadata).enabled

    readings = np.random.default_rng(1).normal(2.0, 1.0, size=(50, 3))
    stats = ood.training_statistics(readings, FEATURES)
    new = artifact.save(
        model,
        {**metadata(), ood.STATS_KEY: stats},
        tmp_path,
        extras=lambda staging: artifact.write_training_sample(staging, readings),
    )
    np.testing.assert_array_equal(artifact.read_training_sample(new), readings.astype(np.float32))
    scorer = ood.OodScorer.from_metadata(artifact.load(new).metadata)
    assert scorer.enabled and scorer.low.tolist() == [stats["features"][f]["min"] for f in FEATURES]
