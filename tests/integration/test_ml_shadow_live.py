"""Shadow evaluation against the real Kafka: a running `python -m ml predict` scores the registry's challenger beside
the champion on the same readings and writes its predictions to the shadow topic, never to the product's; it stops
when the challenger is rejected, and a promoted challenger serves alone. A shadow topic that refuses every record
costs the product nothing: every reading still gets exactly one prediction.

The models are untrained (ml/training/untrained_model.py) with different seeds, so their probabilities differ, and
the challenger has a longer window than the champion: its probabilities are checked against its own model on each
car's last W readings of its window.
"""

from __future__ import annotations

import collections
import time

import numpy as np
from confluent_kafka import Producer

from common import schemas
from common.avro import AvroCodec
from ml import artifact
from ml.registry import Registry
from ml.training.untrained_model import save_untrained_model
from scripts.testkit.kafka import alter_topic_config, read_to_end
from scripts.testkit.predictor import WAIT_S, Stream, covered
from simulator.fleet import generate_readings

CHAMPION_WINDOW, CHALLENGER_WINDOW = 6, 9
TOLERANCE = 1e-5  # the same window through the same model: equal up to float rounding across batch shapes


def keys(readings: list[dict]) -> set[tuple[str, int]]:
    return {(r["car_id"], r["seq"]) for r in readings}


def windows_of(readings: list[dict], features: list[str], window: int) -> dict[tuple[str, int], list[list[float]]]:
    """The window of `window` readings ending at each reading, from its car's readings in seq order, left-padded
    with the car's first."""
    found: dict[tuple[str, int], list[list[float]]] = {}
    rows: dict[str, list[list[float]]] = collections.defaultdict(list)
    for r in sorted(readings, key=lambda r: (r["car_id"], r["seq"])):
        rows[r["car_id"]].append([r[name] for name in features])
        last = rows[r["car_id"]][-window:]
        found[(r["car_id"], r["seq"])] = [last[0]] * (window - len(last)) + last
    return found


def wait_for_metric(predictor, name: str, value: float) -> None:
    deadline = time.monotonic() + WAIT_S
    while predictor.metric(name) != value:
        assert time.monotonic() < deadline, f"{name} is {predictor.metric(name)}, not {value}"
        time.sleep(0.2)


def test_the_challenger_is_scored_in_the_shadow_until_rejected_and_a_promoted_one_serves_alone(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, predictors, tmp_path
):
    models = tmp_path / "models"
    registry = Registry(models)
    a = save_untrained_model(models, window=CHAMPION_WINDOW, threshold=0.3, seed=1).name
    registry.register_challenger(a, "the first model")
    registry.promote("the first model")
    b = save_untrained_model(models, window=CHALLENGER_WINDOW, threshold=0.6, seed=2).name
    registry.register_challenger(b, "retrained with a longer window")

    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    readings = list(generate_readings(cars=8, readings_per_car=30, seed=4))
    phases = [readings[:100], readings[100:170], readings[170:]]
    predictor = predictors(stream, models)
    predictor.wait_for_log(f"scoring challenger {b} in the shadow")
    stream.write(phases[0])
    stream.collect(covered(phases[0]))
    wait_for_metric(predictor, "predictor_shadow_predictions_total", len(phases[0]))  # counted after the commit
    assert predictor.metrics().label_values("predictor_challenger_info", "version") == {b}

    registry.reject("warned fewer episodes")
    predictor.wait_for_log(f"shadow scoring of challenger {b} stopped")
    assert predictor.metrics().label_values("predictor_challenger_info", "version") == set()
    stream.write(phases[1])
    stream.collect(covered(phases[0] + phases[1]))

    c = save_untrained_model(models, window=CHAMPION_WINDOW, threshold=0.3, seed=3).name
    registry.register_challenger(c, "retrained again")
    predictor.wait_for_log(f"scoring challenger {c} in the shadow")
    registry.promote("better live")
    predictor.wait_for_log(f"serving model {c}")
    predictor.wait_for_log(f"shadow scoring of challenger {c} stopped")
    stream.write(phases[2])
    stream.collect(covered(readings))
    assert predictor.running(), "the predictor must not restart to start or stop a shadow"
    assert predictor.metric("predictor_shadow_predictions_total") == len(phases[0])
    predictor.stop_ok()

    codec = AvroCodec(schemas.PREDICTION, stream.output)
    product = [(m.key(), codec.decode(m.value())) for m in read_to_end(kafka_bootstrap, stream.output)]
    counts = collections.Counter((p["car_id"], p["seq"]) for _, p in product)
    assert set(counts) == keys(readings) and max(counts.values()) == 1, "exactly one product prediction per reading"
    served = {(p["car_id"], p["seq"]): p["model_version"] for _, p in product}
    for phase, version in zip(phases, (a, a, c), strict=True):
        assert {served[key] for key in keys(phase)} == {version}, "the product never carries a challenger's"

    shadow = stream.shadow_predictions()
    assert all(key == p["car_id"].encode() for key, p in shadow), "keyed by car_id"
    shadow_counts = collections.Counter((p["car_id"], p["seq"]) for _, p in shadow)
    assert set(shadow_counts) == keys(phases[0]), "shadow predictions while B was the challenger, and only then"
    assert max(shadow_counts.values()) == 1, "exactly one shadow prediction per reading"
    assert {p["model_version"] for _, p in shadow} == {b}
    model = artifact.load(models / b)
    windows = windows_of(readings, model.features, CHALLENGER_WINDOW)
    order = [(p["car_id"], p["seq"]) for _, p in shadow]
    expected = model.predict(np.array([windows[key] for key in order], dtype=np.float32))
    got = np.array([p["failure_probability"] for _, p in shadow], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)  # B's own window of 9, not the champion's 6
    assert all(
        p["failure_predicted"] == (p["failure_probability"] >= 0.6) for _, p in shadow if not p["alert_suppressed"]
    )


def refuses(stream: Stream, topic: str, timeout: float = 30) -> bool:
    """Whether the broker refuses a prediction-sized record on `topic` yet (a topic config applies
    asynchronously); a probe that got through is a prediction of car "probe"."""
    producer = Producer({"bootstrap.servers": stream.bootstrap})
    errors: list = []
    probe = {
        "car_id": "probe", "seq": -1, "event_time": 0, "predicted_at": 0, "failure_probability": 0.0,
        "failure_predicted": False, "model_version": "probe", "horizon": 0,
    }  # fmt: skip
    value = AvroCodec(schemas.PREDICTION, topic).encode(probe)
    producer.produce(topic, value, b"probe", on_delivery=lambda error, message: errors.append(error))
    producer.flush(timeout)
    return bool(errors) and errors[0] is not None and errors[0].name() == "MSG_SIZE_TOO_LARGE"


def test_a_shadow_topic_that_refuses_every_record_costs_the_product_nothing(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, predictors, tmp_path
):
    models = tmp_path / "models"
    registry = Registry(models)
    registry.register_challenger(save_untrained_model(models, window=6, seed=1).name, "first")
    registry.promote("first")
    registry.register_challenger(save_untrained_model(models, window=6, seed=2).name, "the challenger")
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    alter_topic_config(kafka_bootstrap, stream.shadow, **{"max.message.bytes": "64"})  # no prediction fits
    deadline = time.monotonic() + WAIT_S
    while not refuses(stream, stream.shadow):
        assert time.monotonic() < deadline, "the broker never applied max.message.bytes"

    readings = list(generate_readings(cars=8, readings_per_car=20, seed=5))
    predictor = predictors(stream, models, ML_MAX_BATCH="20")
    stream.write(readings)
    predictions = stream.collect(covered(readings))
    counts = collections.Counter((p["car_id"], p["seq"]) for p in predictions)
    assert set(counts) == keys(readings) and max(counts.values()) == 1, "every reading predicted once, no rewind"
    deadline = time.monotonic() + WAIT_S
    while stream.committed(2) != stream.high_watermarks(2):
        assert time.monotonic() < deadline, "the batches were not committed"
        time.sleep(0.2)
    assert predictor.metric("predictor_shadow_undelivered_batches_total") >= 1
    assert predictor.metric("predictor_undelivered_batches_total") == 0
    assert "given up, the batch is committed all the same" in predictor.log()
    assert [p for _, p in stream.shadow_predictions() if p["car_id"] != "probe"] == []
    predictor.stop_ok()
