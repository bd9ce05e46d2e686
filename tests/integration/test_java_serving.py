"""The Java serving program (ml/streams/, Kafka Streams) against the Python predictor and under SIGKILL, on the real
Kafka: the artifact's SavedModel contract holds for a second program in another language.

- Parity: the same readings through both programs give probabilities equal within 1e-5 and the same alerts and OOD
  fields, on a model trained in the test; the readings hold every case the windows treat apart (gaps, a car seen for
  fewer than W readings, duplicates, values in other units, a content-hash car) in every framing and schema version
  the Python side reads, and undecodable records, which both send to their DLQ under the same contract.
- The car told us: no alert on a reading whose car reported a failure in it or in its previous W readings, in both
  programs alike, by the rule of ml/episodes.py; the first reading past W alerts again.
- The model registry: promoted and rolled back (ml/registry.py), the version it serves switches without a restart,
  each reading predicted once; an aliases file that does not parse leaves the current model serving.
- Exactly once: SIGKILLed while readings it had committed were not predicted yet, and restarted, the program gives
  every reading exactly one prediction (counted by (car_id, seq) at read_committed), and the windows restored from
  its changelogs give the probabilities of a run without the kill.
"""

from __future__ import annotations

import collections
import io
import random
import re
import time
from pathlib import Path

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from common import dlq, schemas
from common.avro import AvroCodec, legacy_single_object_header
from common.schemas import SEQ_FROM_CONTENT
from ml import artifact
from ml.episodes import suppressed
from ml.features import series_from_records
from ml.registry import ALIASES_FILE, REGISTRY_DIR, Registry
from ml.training.untrained_model import save_untrained_model
from scripts.testkit.kafka import read_until
from scripts.testkit.predictor import TOLERANCE, Stream, assert_same_as_reference, assert_served_in_phases, covered
from scripts.testkit.readings import readings
from scripts.testkit.training import train_small_model
from simulator.fleet import generate_readings

WINDOW = 10
GARBAGE = (b"\xc3\x01 not an avro reading", b"\x07\x07\x07\x07\x07\x07")


@pytest.fixture(scope="module")
def trained(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained here (20 cars x 200 readings, window 10): its folder, holding that one version."""
    model_dir = tmp_path_factory.mktemp("java-serving-models")
    train_small_model(kafka_bootstrap, generate_readings(20, 200, seed=42, failure_rate=4.0), model_dir, WINDOW)
    return model_dir


def body(reading: dict, version: str = "") -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schemas.wire_schema(schemas.READING, version), reading)
    return out.getvalue()


def v1(reading: dict) -> dict:
    return {k: v for k, v in reading.items() if k not in ("out_of_range", "seq_origin")}


def parity_readings() -> tuple[list[dict], list[tuple[dict, bytes]]]:
    """(readings written with the current schema, (reading, bytes) written as they are) in one write order: the
    simulator's cars, a car with gaps, a car of 4 readings, duplicates, a car in other units whose readings the
    bridge flagged, a content-hash car with a redelivered payload, a schema-1 car in the legacy header and in
    Confluent framing without a registry."""
    fleet = list(generate_readings(cars=6, readings_per_car=40, seed=5, failure_rate=4.0))
    gaps = [r | {"car_id": "gappy"} for r in fleet if r["car_id"] == "car-00001" and r["seq"] not in (10, 11, 12, 25)]
    short = [r | {"car_id": "short"} for r in fleet if r["car_id"] == "car-00002"][:4]
    duplicates = [r for r in fleet if r["car_id"] == "car-00003" and r["seq"] in (15, 16, 39)]
    units = [
        r | {"car_id": "units", "battery_voltage": r["battery_voltage"] * 100, "current_draw": r["current_draw"] * 10,
             "out_of_range": ["battery_voltage"]}
        for r in fleet if r["car_id"] == "car-00004"
    ]  # fmt: skip
    rng = random.Random(3)
    hashed = [r | {"car_id": "hashed", "seq": rng.getrandbits(62), "seq_origin": SEQ_FROM_CONTENT}
              for r in fleet if r["car_id"] == "car-00005"]  # fmt: skip
    hashed.insert(25, hashed[20])  # a payload delivered twice: the same hash
    current = fleet + gaps + short + duplicates + units + hashed
    old = [v1(r | {"car_id": "schema-1"}) for r in fleet if r["car_id"] == "car-00006"]
    raw = [(r, legacy_single_object_header(schemas.READING, "v1") + body(r, "v1")) for r in old[:20]]
    raw += [(r, b"\x00" + (4242).to_bytes(4, "big") + body(r, "v1")) for r in old[20:]]
    return current, raw


def by_reading(predictions: list[dict]) -> dict[tuple[str, int], list[dict]]:
    found: dict[tuple[str, int], list[dict]] = {}
    for p in predictions:
        found.setdefault((p["car_id"], p["seq"]), []).append(p)
    return found


def assert_equal_predictions(java: list[dict], python: list[dict]) -> float:
    """Both programs predicted the same readings as often, alike; returns the largest probability difference."""
    java_by, python_by = by_reading(java), by_reading(python)
    assert java_by.keys() == python_by.keys()
    largest = 0.0
    for key, expected in python_by.items():
        got = java_by[key]
        assert len(got) == len(expected), f"{key}: {len(got)} predictions in Java, {len(expected)} in Python"
        for j, p in zip(got, expected, strict=True):
            largest = max(largest, abs(j["failure_probability"] - p["failure_probability"]))
            assert abs(j["failure_probability"] - p["failure_probability"]) <= TOLERANCE, (key, j, p)
            assert (j["failure_predicted"], j["alert_suppressed"]) == (p["failure_predicted"], p["alert_suppressed"])
            assert j["ood_score"] == pytest.approx(p["ood_score"], rel=1e-12, abs=1e-12), (key, j, p)
            same = ("event_time", "model_version", "horizon", "out_of_distribution", "ood_features")
            assert {f: j[f] for f in same} == {f: p[f] for f in same}, key
    return largest


def test_java_and_python_give_the_same_predictions_and_dead_letters(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, trained, predictors, java_predictors
):
    current, raw = parity_readings()
    python = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    java = Stream(kafka_bootstrap, topic_factory, consumer_factory, f"{group_id}-java", input_topic=python.input)
    python.write(current[:150])
    for reading, value in raw[:10]:
        python.producer.produce(python.input, value, reading["car_id"].encode())
    for value in GARBAGE:
        python.producer.produce(python.input, value, b"car-00001")
    python.write(current[150:])
    for reading, value in raw[10:]:
        python.producer.produce(python.input, value, reading["car_id"].encode())
    assert python.producer.flush(30) == 0
    wanted = current + [reading for reading, _ in raw]

    java_service = java_predictors(java, trained)
    predictors(python, trained)
    java_predictions = java.collect(covered(wanted))
    python_predictions = python.collect(covered(wanted))
    time.sleep(2)  # any prediction beyond one per record would arrive now
    java_predictions = java.collect(lambda _: False, timeout=1)
    python_predictions = python.collect(lambda _: False, timeout=1)

    assert len(java_predictions) == len(current) + len(raw), "one prediction per decodable record"
    largest = assert_equal_predictions(java_predictions, python_predictions)
    print(f"parity: {len(java_predictions)} predictions, largest probability difference {largest:.3g}")
    counts = collections.Counter((p["car_id"], p["seq"]) for p in java_predictions)
    assert counts[("car-00003", 15)] == 2 and counts[("hashed", current[-1]["seq"])] == 1
    assert len([p for p in java_predictions if p["car_id"] == "short"]) == 4
    units = [p for p in java_predictions if p["car_id"] == "units"]
    assert all(p["out_of_distribution"] and "battery_voltage" in p["ood_features"] for p in units)
    assert all(p["ood_score"] > 10 for p in units), "centivolts lie tens of training ranges out"
    assert {p["model_version"] for p in java_predictions} == {artifact.latest(trained).name}
    # schema-1 readings report no accelerometer peak, a feature of the model: scored at its mean, flagged by name
    peaks = sorted(schemas.OPTIONAL_SENSOR_FIELDS)
    old = [p for p in java_predictions if p["car_id"] == "schema-1"]
    assert old and all(p["out_of_distribution"] and set(peaks) <= set(p["ood_features"]) for p in old)
    assert not any(set(peaks) & set(p["ood_features"]) for p in java_predictions if p["car_id"] != "schema-1")

    dead = {s: read_until(kafka_bootstrap, s.dlq, lambda m: len(m) >= 2, timeout=30) for s in (java, python)}
    for stream, service in ((java, "predictor-java"), (python, "predictor")):
        assert sorted(m.value() for m in dead[stream]) == sorted(GARBAGE)
        for message in dead[stream]:
            headers = dlq.parse(message.headers())
            assert (headers[dlq.ERROR], headers[dlq.SERVICE]) == ("undecodable", service)
            assert headers[dlq.SOURCE_TOPIC] == python.input and message.key() == b"car-00001"
            assert headers[dlq.RECEIVED_AT].endswith("+00:00") and len(headers[dlq.ERROR_DETAIL]) > 10
    source = {s: sorted((dlq.parse(m.headers())[dlq.SOURCE_PARTITION], dlq.parse(m.headers())[dlq.SOURCE_OFFSET])
                        for m in dead[s]) for s in dead}  # fmt: skip
    assert source[java] == source[python], "the same records, by partition and offset"

    assert java_service.health("/healthz")[0] == 200 and java_service.health("/readyz")[0] == 200
    metrics = java_service.metrics()
    assert metrics.value("predictor_serving_info", program="java") == 1
    assert metrics.value("predictor_predictions_total") == len(java_predictions)
    assert metrics.value("predictor_dlq_total") == len(GARBAGE)
    java_service.stop_ok()


def test_both_programs_suppress_alerts_while_a_car_reports_a_failure_and_for_w_readings_after_it(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, tmp_path, predictors, java_predictors
):
    """ML_THRESHOLD 0: every probability would alert. Readings in a failure the car reported and in the W readings
    after it get failure_predicted false and alert_suppressed true, the others an alert; failure_occurred null
    never suppresses; both programs publish the same and count the suppressed alerts apart."""
    window = 6
    models = tmp_path / "models"
    save_untrained_model(models, window=window, threshold=0.3)
    failed = {"car-00001": {10, 11, 12, 30}, "car-00002": {0, 44}}
    written = [
        r | {"failure_occurred": None if r["car_id"] == "car-00003" else r["seq"] in failed.get(r["car_id"], ())}
        for r in readings(cars=4, per_car=45, seed=11)
    ]
    python = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    java = Stream(kafka_bootstrap, topic_factory, consumer_factory, f"{group_id}-java", input_topic=python.input)
    python.write(written)
    services = {
        python: predictors(python, models, ML_THRESHOLD="0"),
        java: java_predictors(java, models, ML_THRESHOLD="0"),
    }
    series = series_from_records(written, features=())
    keys = zip(series.car_ids.tolist(), series.seq.tolist(), strict=True)
    expected = dict(zip(keys, suppressed(series, window).tolist(), strict=True))
    quiet = sum(expected.values())
    assert quiet == (9 + 7) + (7 + 1), "car-00001: 10..18, 30..36; car-00002: 0..6, 44"
    for stream, service in services.items():
        published = {(p["car_id"], p["seq"]): p for p in stream.collect(covered(written))}
        got = {key: (p["failure_predicted"], p["alert_suppressed"]) for key, p in published.items()}
        assert got == {key: (not held, held) for key, held in expected.items()}, service.name
        assert got[("car-00001", 19)] == got[("car-00001", 37)] == (True, False), "the first reading past W alerts"
        service.wait_until(lambda s=service: s.metric("predictor_alerts_suppressed_total") == quiet,
                           "suppressed alerts counted", 60)  # fmt: skip
        assert service.metric("predictor_alerts_total") == len(written) - quiet
    assert_equal_predictions(java.predictions, python.predictions)
    alert_lines = re.findall(r"ALERT car car-00001: .*\(seq (\d+),", services[python].log())
    assert alert_lines == ["0", "19", "37"], "a suppressed reading starts no alert; the first past W does"
    for service in services.values():
        service.stop_ok()


def test_with_a_schema_registry_both_read_every_version_and_write_registered_predictions(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, trained, predictors, java_predictors,
    schema_registry_url,
):  # fmt: skip
    python = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    java = Stream(kafka_bootstrap, topic_factory, consumer_factory, f"{group_id}-java", input_topic=python.input)
    readings = list(generate_readings(cars=4, readings_per_car=30, seed=8))
    context = SerializationContext(python.input, MessageField.VALUE)
    old = AvroSerializer(SchemaRegistryClient({"url": schema_registry_url}), schemas.schema_json(schemas.READING, "v1"))
    new = AvroCodec(schemas.READING, python.input, schema_registry_url)
    for i, reading in enumerate(readings):  # schema 1 and 2 interleaved, each under its own registry id
        value = old(v1(reading), context) if i % 2 else new.encode(reading)
        python.producer.produce(python.input, value, reading["car_id"].encode())
    assert python.producer.flush(30) == 0
    env = {"SCHEMA_REGISTRY_URL": schema_registry_url}

    java_service = java_predictors(java, trained, **env)
    predictors(python, trained, **env)
    java_predictions = java.collect(covered(readings))
    python_predictions = python.collect(covered(readings))
    assert_equal_predictions(java_predictions, python_predictions)
    registered = AvroCodec(schemas.PREDICTION, java.output, schema_registry_url)
    first = read_until(kafka_bootstrap, java.output, lambda m: len(m) >= 1, timeout=30)[0]
    assert first.value()[0] == 0, "Confluent framing"
    assert registered.decode(first.value())["car_id"] == first.key().decode()
    java_service.stop_ok()


def test_sigkilled_with_committed_readings_unpredicted_it_loses_none_and_repeats_none(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, tmp_path, java_predictors
):
    models = tmp_path / "models"
    save_untrained_model(models, window=12, threshold=0.3)
    readings = list(generate_readings(cars=40, readings_per_car=60, seed=5))  # car by car within each step
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=4)
    reference = Stream(kafka_bootstrap, topic_factory, consumer_factory, f"{group_id}-ref", input_topic=stream.input)
    stream.write(readings[:1200])
    # Predicting only every 10 s, it commits what it read (into its pending store) long before it predicts it.
    first = java_predictors(stream, models, ML_BATCH_LINGER="10", ML_MAX_BATCH="100000")
    first.wait_until(lambda: sum(max(o, 0) for o in stream.committed(4)) >= 1200, "the first half committed", 120)
    first.kill()
    seen_at_kill = len(stream.collect(lambda _: False, timeout=1))
    stream.write(readings[1200:])

    second = java_predictors(stream, models)
    java_predictors(reference, models)
    predictions = stream.collect(covered(readings), timeout=120)
    time.sleep(2)  # a reading predicted twice would show now
    predictions = stream.collect(lambda _: False, timeout=1)

    assert seen_at_kill < 1200, "the kill came before everything was predicted"
    restored = re.findall(r"(\d+) readings restored from the pending store's changelog", second.log())
    assert sum(map(int, restored)) > 0, "the kill left none pending"
    print(f"exactly once: {sum(map(int, restored))} committed readings were pending at the SIGKILL")
    counts = collections.Counter((p["car_id"], p["seq"]) for p in predictions)  # the consumer reads read_committed
    assert set(counts) == {(r["car_id"], r["seq"]) for r in readings}, "a reading lost its prediction"
    assert max(counts.values()) == 1, "a reading predicted twice"
    assert_same_as_reference(predictions, reference.collect(covered(readings)))
    second.stop_ok()


def test_a_new_model_version_is_served_without_a_restart(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, tmp_path, java_predictors
):
    models = tmp_path / "models"
    old = save_untrained_model(models, window=6, threshold=0.3).name
    readings = list(generate_readings(cars=5, readings_per_car=20, seed=9))
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    stream.write(readings[:50])
    service = java_predictors(stream, models)
    assert {p["model_version"] for p in stream.collect(covered(readings[:50]))} == {old}

    new = save_untrained_model(models, window=8, seed=11, threshold=0.3).name
    service.wait_for_log(f"model {new} loaded")
    stream.write(readings[50:])
    later = [p for p in stream.collect(covered(readings)) if (p["car_id"], p["seq"]) in
             {(r["car_id"], r["seq"]) for r in readings[50:]}]  # fmt: skip
    assert {p["model_version"] for p in later} == {new}
    assert service.metric("predictor_model_info", version=new) == 1
    service.stop_ok()


def test_it_serves_the_registrys_champion_and_follows_promotion_and_rollback_without_a_restart(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, tmp_path, java_predictors
):
    models = tmp_path / "models"
    registry = Registry(models)
    a = save_untrained_model(models, window=6, threshold=0.3, seed=1).name
    registry.register_challenger(a, "the first model")
    registry.promote("adopting the registry")
    b = save_untrained_model(models, window=6, threshold=0.3, seed=2).name  # newer, but not served until promoted
    assert b > a
    readings = list(generate_readings(cars=8, readings_per_car=40, seed=4))  # car by car within each step
    phases = [readings[:80], readings[80:160], readings[160:240], readings[240:]]
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    service = java_predictors(stream, models)
    stream.write(phases[0])
    stream.collect(covered(phases[0]))

    registry.register_challenger(b, "retrained")
    registry.promote("better on the test cars")
    service.wait_for_log(f"model {b} loaded")
    stream.write(phases[1])
    stream.collect(covered(phases[1]))

    registry.rollback("too many alerts live")
    service.wait_for_log(f"model {a} loaded", times=2)  # once at the start, once after the rollback
    stream.write(phases[2])
    stream.collect(covered(phases[2]))

    # Half an aliases file: were it read as no registry, the newest version (B) would be served.
    (models / REGISTRY_DIR / ALIASES_FILE).write_text('{"champion": ')
    complaint = "cannot tell which model to serve"
    service.wait_for_log(complaint)
    stream.write(phases[3])
    stream.collect(covered(readings))
    assert sum(complaint in line for line in service.log_lines()) == 1, "logged once while it lasts"
    assert service.running(), "the program must not restart to switch models"
    assert service.metric("predictor_model_info", version=a) == 1
    service.stop_ok()
    assert_served_in_phases(stream, 2, phases, (a, b, a, a))
