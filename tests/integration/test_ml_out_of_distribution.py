"""Data of other fleets against the real Kafka: a small model trained on simulator data keeps its training
statistics; `python -m ml drift` flags the features in other units; the predictor marks their predictions out
of distribution (seq-less readings, seq = a content hash, included); unlabelled data stops training clearly.

Readings in other units are the simulator's readings converted: battery_voltage in centivolts, current_draw in
deciamperes, coolant_temp in kelvin, and a vibration sensor of another scale (still inside the training range).
"""

from __future__ import annotations

import collections
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from common.settings import PLAINTEXT
from ml import artifact, ood
from scripts.testkit.predictor import Stream, covered, start_predictor
from scripts.testkit.readings import OTHER_UNITS, in_other_units, write_readings
from scripts.testkit.services import run_module
from scripts.testkit.training import train_small_model
from simulator.fleet import generate_readings

FAR_OUT = ("battery_voltage", "current_draw", "coolant_temp")


def run_ml(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return run_module("ml", *args, KAFKA_BOOTSTRAP_SERVERS=bootstrap)


def fleet() -> list[dict]:
    """The training fleet: 20 cars x 200 readings, failures often enough for every split to hold some."""
    return list(generate_readings(20, 200, seed=42, failure_rate=4.0))


@pytest.fixture(scope="module")
def trained(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(kafka_bootstrap, fleet(), tmp_path_factory.mktemp("ood-models"), window=6)


def test_the_artifact_keeps_training_statistics_of_the_training_cars(trained):
    meta = json.loads((trained / "metadata.json").read_text())
    stats = meta[ood.STATS_KEY]
    train_cars = set(meta["training"]["split"]["train"])
    readings = [r for r in fleet() if r["car_id"] in train_cars]
    assert stats["readings"] == len(readings) and list(stats["features"]) == meta["features"]
    voltage = [r["battery_voltage"] for r in readings]
    assert stats["features"]["battery_voltage"]["max"] == pytest.approx(max(voltage), rel=1e-6)
    assert stats["features"]["battery_voltage"]["mean"] == pytest.approx(np.mean(voltage), rel=1e-4)
    sample = artifact.read_training_sample(trained)
    assert sample.shape == (ood.SAMPLE_ROWS, len(meta["features"]))


def test_drift_report_flags_the_features_in_other_units_and_only_them(kafka_bootstrap, topic_factory, trained):
    """One partition: 1000 simulator readings, then the fleet in other units; the recent stretch is the latter."""
    topic = topic_factory("ml-drift", 1)
    readings = fleet()
    recorded = readings[:1000] + [in_other_units(r) for r in readings]
    write_readings(kafka_bootstrap, PLAINTEXT, topic, recorded, partitions=1)
    drift_dir = trained.parent.parent / "drift"
    options = ("--recent-records", str(len(readings)), "--reader", "tfio", "--drift-dir", str(drift_dir))
    result = run_ml(kafka_bootstrap, "drift", "--topic", topic, "--model-dir", str(trained.parent), *options)

    page = Path(result.stdout.strip().splitlines()[-1])
    assert page.name == "drift.html" and page.parent.parent == drift_dir
    assert (page.parent / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((page.parent / "drift.json").read_text())
    assert report["offsets"] == {"0": [1000, 1000 + len(readings)]} and report["readings"] == len(readings)
    assert report["model"] == trained.name
    verdicts = {f["name"]: f["verdict"] for f in report["features"]}
    assert {name for name, verdict in verdicts.items() if verdict == "OUT OF RANGE"} == set(FAR_OUT)
    assert verdicts["engine_vibration_amplitude"] == "DRIFT", "another scale inside the training range"
    untouched = set(verdicts) - set(OTHER_UNITS)
    assert {verdicts[name] for name in untouched} == {"ok"}, verdicts
    html = page.read_text()
    assert '<tr class="out"><td>battery_voltage</td><td>OUT OF RANGE</td>' in html
    assert '<tr class="ok"><td>speed</td><td>ok</td>' in html


def test_the_predictor_flags_readings_in_other_units_as_out_of_distribution(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, trained, tmp_path
):
    """The training cars' own readings score 0; readings of seq-less devices in other units (seq = a content hash,
    one payload delivered twice) are flagged, score far out, and say so in the alert log and the metrics."""
    meta = json.loads((trained / "metadata.json").read_text())
    train_cars = set(meta["training"]["split"]["train"])
    familiar = [r for r in fleet() if r["car_id"] in train_cars and r["seq"] < 20]
    hashes = np.random.default_rng(7).integers(0, 2**63 - 1, size=4 * 20).tolist()
    foreign = [
        in_other_units(r) | {"car_id": f"other-{r['car_id']}", "seq": h, "seq_origin": "CONTENT_HASH"}
        for r, h in zip(generate_readings(4, 20, seed=5), hashes, strict=True)
    ]
    foreign.append(foreign[10])  # an MQTT redelivery: the same payload, the same hash
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    stream.write(familiar + foreign)
    predictor = start_predictor(stream, trained.parent, tmp_path, "predictor")
    try:
        predictions = stream.collect(covered(familiar + foreign))
        by_car = collections.defaultdict(list)
        for p in predictions:
            by_car[p["car_id"].startswith("other-")].append(p)
        assert len(by_car[True]) == len(foreign) and len(by_car[False]) == len(familiar)
        for p in by_car[False]:
            assert (p["out_of_distribution"], p["ood_score"], p["ood_features"]) == (False, 0.0, [])
        for p in by_car[True]:
            assert p["out_of_distribution"] and p["ood_score"] > 10, p
            assert {"battery_voltage", "coolant_temp"} <= set(p["ood_features"]), p
            assert p["model_version"] == trained.name

        predictor.wait_for_log("OUT OF DISTRIBUTION: coolant_temp, battery_voltage")  # the model's feature order
        assert predictor.metric("predictor_ood_predictions_total") == len(foreign)
        metrics = predictor.metrics()
        assert metrics.value("predictor_ood_features_total", default=-1, feature="battery_voltage") == len(foreign)
        assert metrics.label_values("predictor_ood_score_bucket", "le"), "the OOD score's histogram"
        assert "keeps no training statistics" not in predictor.log()
        predictor.stop_ok()
    finally:
        predictor.kill()


def test_training_on_unlabelled_data_stops_with_one_line_saying_where_labels_come_from(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory("ml-unlabelled", 1)
    write_readings(
        kafka_bootstrap, PLAINTEXT, topic, [r | {"failure_occurred": None} for r in fleet()[:600]], partitions=1
    )
    result = run_module(
        "ml", "train", "--topic", topic, "--model-dir", str(tmp_path), "--reader", "confluent",
        timeout=300, check=False, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "no failure label" in errors[0] and "failure_occurred column" in errors[0]
    assert artifact.latest(tmp_path) is None
