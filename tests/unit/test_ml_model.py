"""The model's graph: raw windows in, every reading's changes and levels through one Dense layer before the LSTM,
saved and reloaded with safe_mode on."""

import keras
import numpy as np

from common.schemas import SENSOR_FIELDS
from ml import artifact
from ml.training.model import PER_READING_UNITS, build_model

WINDOW = 5


def test_every_reading_goes_through_the_dense_layer_with_its_changes_and_levels():
    n = len(SENSOR_FIELDS)
    model = build_model(WINDOW, [0.0] * n, [1.0] * n, units=4)
    assert model.get_layer("changes_and_levels").output.shape == (None, WINDOW - 1, 3 * n)
    assert model.get_layer("per_reading").output.shape == (None, WINDOW - 1, PER_READING_UNITS)
    # levels reach the per-reading layer: two windows with the same changes but other levels differ there
    windows = np.random.default_rng(0).normal(size=(1, WINDOW, n)).astype(np.float32)
    inner = keras.Model(model.inputs, model.get_layer("changes_and_levels").output)
    a, b = inner.predict(windows, verbose=0), inner.predict(windows + 3.0, verbose=0)
    np.testing.assert_allclose(a[..., : 2 * n], b[..., : 2 * n], atol=1e-5)
    np.testing.assert_allclose(b[..., 2 * n :] - a[..., 2 * n :], 3.0, rtol=1e-5)


def test_the_artifact_takes_raw_windows_and_model_keras_reloads_with_safe_mode(tmp_path):
    n = len(SENSOR_FIELDS)
    rng = np.random.default_rng(1)
    mean, std = rng.uniform(0, 100, n), rng.uniform(0.5, 20, n)
    model = build_model(WINDOW, mean, std, units=4)
    windows = rng.normal(mean, std, size=(3, WINDOW, n)).astype(np.float32)
    metadata = {"window": WINDOW, "horizon": 2, "features": list(SENSOR_FIELDS), "threshold": 0.5, "schema": {}}
    metadata |= {"scaling": {"mean": mean.tolist(), "std": std.tolist()}, "training": {}, "metrics": {}}
    loaded = artifact.load(artifact.save(model, metadata, tmp_path))
    expected = model.predict(windows, verbose=0).reshape(-1)
    np.testing.assert_allclose(loaded.predict(windows), expected, rtol=1e-5)  # the SavedModel signature
    reloaded = keras.models.load_model(loaded.path / artifact.KERAS_FILE, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(windows, verbose=0).reshape(-1), expected, rtol=1e-5)
