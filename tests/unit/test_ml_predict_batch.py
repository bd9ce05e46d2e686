"""The predictor's batch path gives what the plain path gives: every prediction the model's output on the window
a reference builds from the car's readings alone."""

import numpy as np

from common import schemas
from common.avro import AvroCodec
from ml import artifact
from ml.episodes import suppressed
from ml.features import series_from_records
from ml.serving.batch import BatchPredictor
from ml.serving.progress import Progress
from ml.serving.settings import PredictorSettings
from ml.source import RawRecord
from ml.training.untrained_model import save_untrained_model
from simulator.fleet import generate_readings

TOPIC = "car-sensor-test"
WINDOW = 4


def _readings(cars: int = 6, per_car: int = 9) -> list[dict]:
    """Readings of several cars interleaved in arrival order, seq from 0 per car."""
    readings = list(generate_readings(cars=cars, readings_per_car=per_car, seed=3))
    return sorted(readings, key=lambda r: (r["seq"], r["car_id"]))


def _reference_windows(readings: list[dict], features: list[str]) -> np.ndarray:
    """The window ending at each reading, from its car's earlier readings only, left-padded with its first."""
    seen: dict[str, list[list[float]]] = {}
    windows = []
    for reading in readings:
        rows = seen.setdefault(reading["car_id"], [])
        rows.append([reading[name] for name in features])
        last = rows[-WINDOW:]
        windows.append([last[0]] * (WINDOW - len(last)) + last)
    return np.array(windows, dtype=np.float32)


def test_each_prediction_is_the_models_output_on_its_cars_window(tmp_path):
    model = artifact.load(save_untrained_model(tmp_path, window=WINDOW, threshold=0.5))
    settings = PredictorSettings(model_dir=str(tmp_path), topic=TOPIC, threshold=0.5)
    dead: list[RawRecord] = []
    predictor = BatchPredictor(settings, Progress(), lambda record, reason: dead.append(record))
    predictor.use_model(model)
    codec = AvroCodec(schemas.READING, TOPIC)
    readings = _readings()
    # two partitions (a car in one), their records interleaved as no read returns them: windows stay per car
    records = [
        RawRecord(int(r["car_id"][-1]) % 2, i, r["car_id"].encode(), codec.encode(r)) for i, r in enumerate(readings)
    ]
    records.insert(5, RawRecord(0, 999, b"car-x", b"garbage"))
    scored = []
    for start in range(0, len(records), 7):  # batches that split cars' readings
        scored += predictor.predict(predictor.decode(records[start : start + 7])).predictions
    assert [r.offset for r in dead] == [999]
    assert [(p["car_id"], p["seq"], p["event_time"]) for p in scored] == [
        (r["car_id"], r["seq"], r["event_time"]) for r in readings
    ]
    expected = model.predict(_reference_windows(readings, model.features))
    # equal up to float rounding: the model's kernels sum in another order for another batch shape (6e-8 seen)
    got = np.array([p["failure_probability"] for p in scored], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert [p["failure_predicted"] or p["alert_suppressed"] for p in scored] == [float(e) >= 0.5 for e in expected]
    assert all(isinstance(p["failure_probability"], float) and type(p["seq"]) is int for p in scored)


def test_a_reading_that_lacks_a_model_feature_is_scored_at_its_training_mean_and_flagged(tmp_path):
    model = artifact.load(save_untrained_model(tmp_path, window=WINDOW, threshold=0.5))
    predictor = BatchPredictor(PredictorSettings(model_dir=str(tmp_path), topic=TOPIC), Progress(), print)
    predictor.use_model(model)
    codec = AvroCodec(schemas.READING, TOPIC)
    peaks = sorted(schemas.OPTIONAL_SENSOR_FIELDS)
    assert set(peaks) <= set(model.features)
    readings = _readings(cars=2, per_car=5)
    lacking = [{**r, **dict.fromkeys(peaks)} if i % 2 else r for i, r in enumerate(readings)]  # as v2 records read
    records = [RawRecord(0, i, r["car_id"].encode(), codec.encode(r)) for i, r in enumerate(lacking)]
    scored = predictor.predict(predictor.decode(records)).predictions
    mean = dict(zip(model.features, model.metadata["scaling"]["mean"], strict=True))
    filled = [{**r, **{name: mean[name] for name in peaks}} if i % 2 else r for i, r in enumerate(readings)]
    expected = model.predict(_reference_windows(filled, model.features))
    # equal up to float rounding: the model's kernels sum in another order for another batch shape (6e-8 seen)
    got = np.array([p["failure_probability"] for p in scored], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # the untrained model keeps no training range: only what a reading lacks flags it
    assert [p["ood_features"] for p in scored] == [peaks if i % 2 else [] for i in range(len(readings))]
    assert [p["out_of_distribution"] for p in scored] == [bool(i % 2) for i in range(len(readings))]


def test_no_alert_while_a_car_reports_a_failure_and_for_w_readings_after_it_rebuilt_history_included(tmp_path):
    """Threshold 0: every probability would alert. Readings in a reported failure and the W after it do not (the
    car told us), by the rule of ml/episodes.py, also after the history is rebuilt; null failure never suppresses."""
    model = artifact.load(save_untrained_model(tmp_path, window=WINDOW, threshold=0.5))
    predictor = BatchPredictor(PredictorSettings(model_dir=str(tmp_path), topic=TOPIC, threshold=0.0), Progress(), None)
    predictor.use_model(model)
    codec = AvroCodec(schemas.READING, TOPIC)
    failed = {"car-00001": {3, 4, 12}, "car-00002": {15}}  # 12: just before the rebuild
    readings = [
        r | {"failure_occurred": None if r["car_id"] == "car-00003" else r["seq"] in failed.get(r["car_id"], ())}
        for r in _readings(cars=3, per_car=25)
    ]
    records = [RawRecord(0, i, r["car_id"].encode(), codec.encode(r)) for i, r in enumerate(readings)]
    scored = []
    for start in range(0, 40, 9):
        scored += predictor.predict(predictor.decode(records[start : min(start + 9, 40)])).predictions
    predictor.forget(0)  # a rebalance: the partition's history is read again before the next batch
    predictor.refill(0, records[:40])
    for start in range(40, len(records), 9):
        scored += predictor.predict(predictor.decode(records[start : start + 9])).predictions
    series = series_from_records(readings, features=())
    keys = zip(series.car_ids.tolist(), series.seq.tolist(), strict=True)
    quiet = dict(zip(keys, suppressed(series, WINDOW).tolist(), strict=True))
    got = {(p["car_id"], p["seq"]): (p["failure_predicted"], p["alert_suppressed"]) for p in scored}
    assert got == {key: (not quiet[key], quiet[key]) for key in quiet}
    assert [seq for (car, seq), (_, held) in sorted(got.items()) if held and car == "car-00001"] == [
        *range(3, 4 + WINDOW + 1),
        *range(12, 12 + WINDOW + 1),
    ]
    assert got[("car-00002", 15 + WINDOW + 1)] == (True, False), "the first reading past W alerts again"
