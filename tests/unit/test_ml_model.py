"""The model's in-graph contrasts (a corner against its axle partner) and gradient boosting's copy of them."""

import keras
import numpy as np

from common.schemas import SENSOR_FIELDS
from ml import artifact
from ml.training.baseline import summary_features, window_summaries
from ml.training.contrasts import contrast_columns, ratio_pairs, tire_pairs
from ml.training.model import RATIO_GAIN, build_model

WINDOW = 5
INDEX = {name: i for i, name in enumerate(SENSOR_FIELDS)}


def readings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Positive sensor values, as every accelerometer figure is (its floor is 0.05 m/s²)."""
    return rng.uniform(0.2, 3.0, size=(n, len(SENSOR_FIELDS))).astype(np.float32)


def test_contrast_columns_are_partner_differences_and_log_ratios():
    rng = np.random.default_rng(0)
    x = readings(rng, 7)
    columns = contrast_columns(x, SENSOR_FIELDS)
    tire = x[:, INDEX["tire_pressure_2_1"]] - x[:, INDEX["tire_pressure_2_2"]]
    peak = np.log(x[:, INDEX["accelerometer_1_1_peak"]] / x[:, INDEX["accelerometer_1_2_peak"]])
    assert columns.shape == (7, 2 + 4)
    np.testing.assert_allclose(columns[:, 1], tire, rtol=1e-6)
    np.testing.assert_allclose(columns[:, 4], peak, rtol=1e-5)
    # readings without the peaks (schema versions 1 and 2): the RMS pairs alone
    without_peaks = [name for name in SENSOR_FIELDS if not name.endswith("_peak")]
    assert len(ratio_pairs(without_peaks)) == 2
    assert contrast_columns(x[:, : len(without_peaks)], ("a", "b")).shape == (7, 0)


def test_gbm_summaries_gain_the_contrasts_only_when_the_columns_are_named():
    from ml.features import series_from_records

    rng = np.random.default_rng(1)
    x = readings(rng, 8)
    base = {"car_id": "c", "failure_occurred": False}
    records = [
        {**base, "seq": i, "event_time": i, **dict(zip(SENSOR_FIELDS, row.tolist(), strict=True))}
        for i, row in enumerate(x)
    ]
    series = series_from_records(records)
    ends = np.array([WINDOW - 1, 7])
    plain = window_summaries(series, ends, WINDOW)
    named = window_summaries(series, ends, WINDOW, SENSOR_FIELDS)
    assert plain.shape == (2, 6 * len(SENSOR_FIELDS)) and named.shape == (2, 6 * (len(SENSOR_FIELDS) + 6))
    expected = summary_features(contrast_columns(series.features, SENSOR_FIELDS)[None, 3:8])
    np.testing.assert_allclose(named[1, -6:], expected[0, -6:], rtol=1e-5)


def contrasts_of(model: keras.Model, windows: np.ndarray) -> np.ndarray:
    return keras.Model(model.inputs, model.get_layer("contrasts").output).predict(windows, verbose=0)


def test_the_model_computes_the_contrasts_from_raw_windows_and_reloads_with_safe_mode(tmp_path):
    rng = np.random.default_rng(2)
    std = rng.uniform(0.5, 2.0, len(SENSOR_FIELDS))
    model = build_model(WINDOW, np.ones(len(SENSOR_FIELDS)), std, units=4, features=SENSOR_FIELDS)
    windows = readings(rng, 3 * WINDOW).reshape(3, WINDOW, -1)
    got = contrasts_of(model, windows)
    assert got.shape == (3, WINDOW, len(tire_pairs(SENSOR_FIELDS)) + len(ratio_pairs(SENSOR_FIELDS)))
    a, b = INDEX["tire_pressure_1_1"], INDEX["tire_pressure_1_2"]
    np.testing.assert_allclose(got[..., 0], (windows[..., a] - windows[..., b]) / ((std[a] + std[b]) / 2), rtol=1e-4)
    a, b = INDEX["accelerometer_2_1_value"], INDEX["accelerometer_2_2_value"]
    unit = RATIO_GAIN * (windows[..., a] - windows[..., b]) / np.hypot(windows[..., a], windows[..., b])
    np.testing.assert_allclose(got[..., 3], unit, rtol=1e-4, atol=1e-5)
    # a rougher road scales both wheels of an axle alike: the accelerometer contrasts do not move
    rougher = windows.copy()
    accelerometers = [i for pair in ratio_pairs(SENSOR_FIELDS) for i in pair]
    rougher[..., accelerometers] *= 2.5
    np.testing.assert_allclose(contrasts_of(model, rougher)[..., 2:], got[..., 2:], rtol=1e-4, atol=1e-5)

    metadata = {"window": WINDOW, "horizon": 2, "features": list(SENSOR_FIELDS), "threshold": 0.5}
    metadata |= {"scaling": {"mean": [1.0] * len(SENSOR_FIELDS), "std": std.tolist()}, "schema": {}}
    loaded = artifact.load(artifact.save(model, metadata | {"training": {}, "metrics": {}}, tmp_path))
    expected = model.predict(windows, verbose=0).reshape(-1)
    np.testing.assert_allclose(loaded.predict(windows), expected, rtol=1e-5)  # the SavedModel: raw windows in
    reloaded = keras.models.load_model(loaded.path / artifact.KERAS_FILE, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(windows, verbose=0).reshape(-1), expected, rtol=1e-5)


def test_without_partner_names_the_model_has_no_contrasts():
    model = build_model(WINDOW, [0.0] * 3, [1.0] * 3, units=4, features=("a", "b", "c"))
    assert "contrasts" not in {layer.name for layer in model.layers}
