"""`python -m ml train` and the seed's form end to end: simulator data in the real Kafka, read through both readers,
a model that beats its baseline on cars it never saw, an artifact that predicts the same in a fresh process, and
an evaluation that labels without signal cannot fool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from common.avro import AvroCodec
from common.schemas import PREDICTION
from ml import artifact
from ml.features import gather_windows, series_from_records, window_ends
from scripts.bench.ml_read import write_readings
from scripts.local_runtime import ROOT
from simulator.fleet import generate_readings

SECTIONS = ("pr_auc", "roc_auc", "precision", "recall", "f1", "mean_lead_time_readings")


def run_ml(bootstrap: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "ml", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


class Topics:
    """Topics of this module's tests, deleted at the end."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.created: list[str] = []

    def name(self, prefix: str) -> str:
        self.created.append(f"{prefix}-{os.urandom(4).hex()}")
        return self.created[-1]

    def with_readings(self, prefix: str, readings: list[dict], partitions: int = 3) -> str:
        topic = self.name(prefix)
        write_readings(self.bootstrap, topic, readings, partitions)
        return topic


@pytest.fixture(scope="module")
def topics(kafka_bootstrap: str):
    made = Topics(kafka_bootstrap)
    yield made
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    existing = set(admin.list_topics(timeout=30).topics)
    names = [name for name in made.created if name in existing]
    for future in admin.delete_topics(names).values() if names else ():
        future.result(timeout=30)


@pytest.fixture(scope="module")
def trained(kafka_bootstrap, topics, tmp_path_factory) -> Path:
    """One training run through tensorflow-io on 60 simulated cars x 400 readings (24,000 records, 3 partitions)."""
    topic = topics.with_readings("ml-train", list(generate_readings(60, 400, seed=42)))
    model_dir = tmp_path_factory.mktemp("models")
    result = run_ml(kafka_bootstrap, "train", "--topic", topic, "--model-dir", str(model_dir), "--reader", "tfio")
    path = artifact.latest(model_dir)
    assert path is not None and result.stdout.strip() == str(path)
    return path


def test_training_leaves_a_complete_artifact_and_report(trained):
    assert {"model.keras", "saved_model", "metadata.json", "report"} <= {p.name for p in trained.iterdir()}
    meta = json.loads((trained / "metadata.json").read_text())
    assert meta["version"] == trained.name
    assert (meta["window"], meta["horizon"], len(meta["features"])) == (24, 10, 18)
    assert len(meta["scaling"]["mean"]) == len(meta["scaling"]["std"]) == 18
    assert 0 < meta["threshold"] < 1
    assert meta["schema"]["name"] == "io.carstream.CarSensorReading" and len(meta["schema"]["fingerprint"]) == 16
    training = meta["training"]
    assert training["records"] == training["readings"] == 24_000 and training["cars"] == 60
    assert training["start_offsets"] == {"0": 0, "1": 0, "2": 0}
    assert sum(training["end_offsets"].values()) == 24_000
    assert training["time_range"]["first"] < training["time_range"]["last"]
    assert 1 <= training["epochs"] <= 15 and training["samples_per_s"] > 0
    for section in ("metrics", "baseline"):
        assert all(meta[section][key] is not None for key in SECTIONS), meta[section]
    report = trained / "report"
    assert json.loads((report / "report.json").read_text())["metrics"] == meta["metrics"]
    assert "PR-AUC" in (report / "report.txt").read_text()
    for plot in ("training_curves.png", "precision_recall.png", "roc.png"):
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lstm_beats_the_baseline_on_held_out_cars(trained):
    meta = json.loads((trained / "metadata.json").read_text())
    split = meta["training"]["split"]
    assert not set(split["test"]) & (set(split["train"]) | set(split["validation"]))
    assert not set(split["validation"]) & set(split["train"])
    lstm, baseline = meta["metrics"], meta["baseline"]
    assert lstm["positives"] > 0 and lstm["failure_episodes"] > 0
    assert lstm["pr_auc"] > baseline["pr_auc"], (lstm, baseline)
    assert lstm["pr_auc"] > 2 * lstm["prevalence"]  # far above what a random ranking scores
    assert meta["lstm_beats_baseline"] is True
    assert lstm["mean_lead_time_readings"] > 0  # alerts come before the failure, not only during it


def test_artifact_predicts_identically_in_a_fresh_process(trained, tmp_path):
    series = series_from_records(list(generate_readings(5, 60, seed=99)))
    windows = gather_windows(series.features, window_ends(series, 24), 24)
    np.save(tmp_path / "windows.npy", windows)
    script = (
        "import sys, numpy as np; from ml import artifact; "
        "m = artifact.load(sys.argv[1]); np.save(sys.argv[3], m.predict(np.load(sys.argv[2])))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(
        [sys.executable, "-c", script, str(trained), str(tmp_path / "windows.npy"), str(tmp_path / "out.npy")],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    fresh = np.load(tmp_path / "out.npy")
    loaded = artifact.load(trained)
    assert fresh.shape == (len(windows),)
    np.testing.assert_array_equal(fresh, loaded.predict(windows))
    np.testing.assert_allclose(loaded.keras_model().predict(windows, verbose=0).reshape(-1), fresh, atol=1e-6)


def test_labels_without_signal_score_near_chance(kafka_bootstrap, topics, tmp_path):
    """failure_occurred shuffled across all readings: nothing to learn, so held-out metrics must sit at chance.
    Read through the confluent-kafka reader, the second implementation."""
    readings = list(generate_readings(30, 300, seed=7))
    labels = np.random.default_rng(0).permutation([r["failure_occurred"] for r in readings])
    for reading, label in zip(readings, labels, strict=True):
        reading["failure_occurred"] = bool(label)
    topic = topics.with_readings("ml-noise", readings)
    args = ("--topic", topic, "--model-dir", str(tmp_path), "--reader", "confluent", "--epochs", "3", "--patience", "1")
    run_ml(kafka_bootstrap, "train", *args)
    meta = json.loads((artifact.latest(tmp_path) / "metadata.json").read_text())
    for section in ("metrics", "baseline"):
        metrics = meta[section]
        assert abs(metrics["roc_auc"] - 0.5) < 0.1, (section, metrics)
        assert metrics["pr_auc"] < metrics["prevalence"] + 0.1, (section, metrics)


def test_seed_form_trains_then_writes_avro_predictions(kafka_bootstrap, topics, tmp_path, consumer_factory):
    """`python -m ml SERVERS TOPIC START_OFFSET RESULT_TOPIC`: train on the first 1000 records from the offset,
    one Avro prediction (key = car_id) for each of the following 200."""
    readings = list(generate_readings(10, 130, seed=11, failure_rate=6.0))
    topic = topics.with_readings("ml-seed", readings, partitions=1)
    result_topic = topics.name("ml-seed-result")
    options = ("--model-dir", str(tmp_path), "--window", "12", "--horizon", "5", "--epochs", "2")
    run_ml(kafka_bootstrap, kafka_bootstrap, topic, "100", result_topic, *options)
    version = artifact.latest(tmp_path)
    assert json.loads((version / "metadata.json").read_text())["training"]["records"] == 1000
    consumer = consumer_factory()
    consumer.assign([TopicPartition(result_topic, 0, 0)])  # no group rebalance to wait for
    codec = AvroCodec(PREDICTION, result_topic)
    values = []
    while len(values) < 200:
        batch = consumer.consume(num_messages=500, timeout=10)
        assert batch, f"only {len(values)} predictions arrived"
        values += [(m.key().decode(), codec.decode(m.value())) for m in batch if m.error() is None]
    expected = {(r["car_id"], r["seq"]) for r in readings[1100:1300]}  # offsets 100.. in one partition
    assert {(p["car_id"], p["seq"]) for _, p in values} == expected and len(values) == 200
    assert all(key == p["car_id"] and p["model_version"] == version.name and p["horizon"] == 5 for key, p in values)
    assert all(0 <= p["failure_probability"] <= 1 for _, p in values)
    # schema version 2: the training range's verdict on each reading (ml/ood.py)
    assert all(p["ood_score"] >= 0 and p["out_of_distribution"] == bool(p["ood_features"]) for _, p in values)
