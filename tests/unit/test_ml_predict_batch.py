"""The predictor's batch path gives what the plain path gives: the decoder the codec's readings (and its errors),
and every prediction the model's output on the window a reference builds from the car's readings alone."""

import io

import fastavro
import numpy as np
import pytest

from common import schemas
from common.avro import AvroCodec, single_object_header
from common.errors import DecodeError
from ml import artifact
from ml.serving.batch import BatchPredictor
from ml.serving.decoding import ReadingDecoder
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


def _v1_record(codec_name: str, reading: dict) -> bytes:
    writer = schemas.wire_schema(codec_name, "v1")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, writer, {k: v for k, v in reading.items() if k not in ("seq_origin",)})
    return single_object_header(codec_name, "v1") + body.getvalue()


def test_the_decoder_returns_what_the_codec_returns_in_every_framing_and_version():
    codec = AvroCodec(schemas.READING, TOPIC)
    decoder = ReadingDecoder(codec)
    reading = _readings(1, 1)[0]
    current = codec.encode(reading)
    confluent = b"\x00\x00\x00\x00\x01" + current[10:]  # no registry: the newest local version that reads it
    for value in (current, _v1_record(schemas.READING, reading), confluent):
        assert decoder.decode(value) == codec.decode(value)


@pytest.mark.parametrize("value", [b"\x00", None, b"\xc3\x01" + b"\x00" * 12, b"not avro at all"])
def test_the_decoder_raises_the_codecs_error_for_what_does_not_decode(value):
    codec = AvroCodec(schemas.READING, TOPIC)
    with pytest.raises(DecodeError) as expected:
        codec.decode(value)
    with pytest.raises(DecodeError) as got:
        ReadingDecoder(codec).decode(value)
    assert str(got.value) == str(expected.value)


def test_a_corrupt_body_under_the_current_header_raises_the_codecs_error():
    codec = AvroCodec(schemas.READING, TOPIC)
    truncated = codec.encode(_readings(1, 1)[0])[:30]
    with pytest.raises(DecodeError) as expected:
        codec.decode(truncated)
    with pytest.raises(DecodeError) as got:
        ReadingDecoder(codec).decode(truncated)
    assert str(got.value) == str(expected.value)


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
    np.testing.assert_array_equal(np.array([p["failure_probability"] for p in scored], dtype=np.float32), expected)
    assert [p["failure_predicted"] for p in scored] == [float(e) >= 0.5 for e in expected]
    assert all(isinstance(p["failure_probability"], float) and type(p["seq"]) is int for p in scored)
