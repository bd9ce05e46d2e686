"""Shadow evaluation (ml/serving/shadow.py): the challenger is scored on the same readings as the champion, each
prediction its own model's output on the car's last W readings of ITS window (longer or shorter than the
champion's), with its own threshold and suppression rule; nothing is scored without a challenger, and the
champion's predictions stay what they are alone."""

import json

import numpy as np
import pytest

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
TOLERANCE = 1e-6  # the model's kernels sum in another order for another batch shape (6e-8 seen)


def _readings(cars: int = 5, per_car: int = 14) -> list[dict]:
    """Readings of several cars interleaved in arrival order, seq from 0 per car, some reporting a failure."""
    readings = sorted(
        generate_readings(cars=cars, readings_per_car=per_car, seed=3), key=lambda r: (r["seq"], r["car_id"])
    )
    failed = {("car-00001", 2), ("car-00001", 9), ("car-00003", 5)}
    return [r | {"failure_occurred": (r["car_id"], r["seq"]) in failed} for r in readings]


def _reference_windows(readings: list[dict], features: list[str], window: int) -> np.ndarray:
    """The window of `window` readings ending at each reading, from its car's earlier readings only, left-padded
    with its first."""
    seen: dict[str, list[list[float]]] = {}
    windows = []
    for reading in readings:
        rows = seen.setdefault(reading["car_id"], [])
        rows.append([reading[name] for name in features])
        last = rows[-window:]
        windows.append([last[0]] * (window - len(last)) + last)
    return np.array(windows, dtype=np.float32)


def _records(readings: list[dict]) -> list[RawRecord]:
    """Two partitions (a car in one), their records interleaved."""
    codec = AvroCodec(schemas.READING, TOPIC)
    return [
        RawRecord(int(r["car_id"][-1]) % 2, i, r["car_id"].encode(), codec.encode(r)) for i, r in enumerate(readings)
    ]


def _run(predictor: BatchPredictor, records: list[RawRecord], size: int = 9) -> tuple[list[dict], list[dict]]:
    """The product's and the shadow's predictions of `records`, in batches of `size` that split cars' readings."""
    product, shadow = [], []
    for start in range(0, len(records), size):
        scored = predictor.predict(predictor.decode(records[start : start + size]))
        product += scored.predictions
        shadow += predictor.challenger.predict(scored.pushed)
    return product, shadow


def _assert_outputs(predictions: list[dict], readings: list[dict], model: artifact.LoadedModel, start: int = 0) -> None:
    """The predictions of readings[start:] are `model`'s outputs on each car's last W readings (W the model's
    window), in reading order."""
    assert [(p["car_id"], p["seq"], p["model_version"]) for p in predictions] == [
        (r["car_id"], r["seq"], model.version) for r in readings[start:]
    ]
    expected = model.predict(_reference_windows(readings, model.features, model.window))[start:]
    got = np.array([p["failure_probability"] for p in predictions], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def _predictor(tmp_path, **settings) -> BatchPredictor:
    return BatchPredictor(PredictorSettings(model_dir=str(tmp_path), topic=TOPIC, **settings), Progress(), None)


@pytest.mark.parametrize(("champion_window", "challenger_window"), [(4, 7), (7, 3)])
def test_the_challenger_scores_each_reading_on_its_own_last_w_readings(tmp_path, champion_window, challenger_window):
    champion = artifact.load(save_untrained_model(tmp_path, window=champion_window, seed=1, horizon=5))
    # threshold 0: every probability reaches it, so each reading shows the suppression rule of its own W
    challenger = artifact.load(
        save_untrained_model(tmp_path, window=challenger_window, seed=2, horizon=9, threshold=0.0)
    )
    predictor = _predictor(
        tmp_path, threshold=2.0
    )  # ML_THRESHOLD is the served model's only: the champion never alerts
    predictor.use_model(champion)
    predictor.use_challenger(challenger)
    assert predictor.window == max(champion_window, challenger_window), "the rings hold the longest window"
    readings = _readings()

    product, shadow = _run(predictor, _records(readings))

    _assert_outputs(product, readings, champion)  # the product is what the champion alone gives
    _assert_outputs(shadow, readings, challenger)
    assert not any(p["failure_predicted"] or p["alert_suppressed"] for p in product)
    assert {p["horizon"] for p in shadow} == {9}
    series = series_from_records(readings, features=())
    keys = zip(series.car_ids.tolist(), series.seq.tolist(), strict=True)
    quiet = dict(zip(keys, suppressed(series, challenger_window).tolist(), strict=True))
    got = {(p["car_id"], p["seq"]): (p["failure_predicted"], p["alert_suppressed"]) for p in shadow}
    assert got == {key: (not held, held) for key, held in quiet.items()}
    assert 0 < sum(quiet.values()) < len(readings)


def test_nothing_is_scored_in_the_shadow_without_a_challenger_and_after_it_is_cleared(tmp_path):
    champion = artifact.load(save_untrained_model(tmp_path, window=4, seed=1))
    challenger = artifact.load(save_untrained_model(tmp_path, window=8, seed=2))
    predictor = _predictor(tmp_path)
    assert predictor.use_model(champion), "the first model: empty windows"
    readings = _readings()
    records = _records(readings)
    product, shadow = _run(predictor, records[:20])
    assert len(product) == 20 and shadow == []

    assert predictor.use_challenger(challenger), "a longer window: the history is rebuilt"
    predictor.refill(0, [r for r in records[:20] if r.partition == 0])
    predictor.refill(1, [r for r in records[:20] if r.partition == 1])
    product, shadow = _run(predictor, records[20:40])
    _assert_outputs(product, readings[:40], champion, start=20)
    _assert_outputs(shadow, readings[:40], challenger, start=20)

    assert predictor.use_challenger(None), "back to the champion's window: the history is rebuilt"
    assert predictor.window == 4
    predictor.refill(0, [r for r in records[:40] if r.partition == 0])
    predictor.refill(1, [r for r in records[:40] if r.partition == 1])
    product, shadow = _run(predictor, records[40:])
    _assert_outputs(product, readings, champion, start=40)
    assert shadow == []


def test_a_promoted_challenger_and_one_of_other_features_are_not_scored_in_the_shadow(tmp_path):
    champion = artifact.load(save_untrained_model(tmp_path, window=4, seed=1))
    challenger = artifact.load(save_untrained_model(tmp_path, window=6, seed=2))
    predictor = _predictor(tmp_path)
    predictor.use_model(champion)
    predictor.use_challenger(challenger)
    assert predictor.challenger.scorer is not None and predictor.window == 6
    assert not predictor.use_model(challenger), "promoted: its window is held already"
    records = _records(_readings())
    product, shadow = _run(predictor, records[:10])
    assert {p["model_version"] for p in product} == {challenger.version} and shadow == []

    other = save_untrained_model(tmp_path, window=4, seed=3)
    metadata = artifact.read_metadata(other)
    metadata["features"] = metadata["features"][::-1]  # the same model, its features named in another order
    (other / artifact.METADATA_FILE).write_text(json.dumps(metadata))
    predictor.use_challenger(artifact.load(other))
    assert predictor.challenger.scorer is None
    assert _run(predictor, records[10:20])[1] == []
