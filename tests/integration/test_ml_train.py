"""`python -m ml train` and the seed's form end to end: simulator data in the real Kafka, read through both readers,
a model measured beside its baselines on cars it never saw (window, episode and calibration figures), an artifact
that predicts the same in a fresh process, and an evaluation that labels without signal cannot fool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from common.avro import AvroCodec
from common.schemas import OPTIONAL_SENSOR_FIELDS, PREDICTION, SENSOR_FIELDS
from common.settings import PLAINTEXT
from ml import artifact
from ml.episodes import episode_report
from ml.features import gather_windows, series_from_records, window_ends
from scripts.runtime.local import ROOT
from scripts.testkit.kafka import read_to_end
from scripts.testkit.readings import write_readings
from scripts.testkit.services import run_module
from simulator.fleet import generate_readings

SECTIONS = ("pr_auc", "roc_auc", "precision", "recall", "f1", "brier", "brier_uncalibrated", "threshold")
EPISODE_FIGURES = ("episodes", "warned", "warned_share", "false_alerts", "false_alerts_per_healthy_car_hour")
MODELS = ("lstm", "gbm", "logistic", "prevalence")
FLEET = (150, 300)  # cars, readings per car
BRIER_TOLERANCE = 2e-3
"""The LSTM is trained without class weights, so its raw probabilities are nearly calibrated already: Platt
scaling fitted on 30 validation cars moved the Brier score of 30 test cars by less than 1e-3 either way on four
seeds (by up to 3e-3 with 60-car fleets). It must not do real harm; miscalibration that matters (class weights, a
flipped slope) costs several hundredths, as the balanced logistic regression shows."""


def run_ml(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return run_module("ml", *args, KAFKA_BOOTSTRAP_SERVERS=bootstrap)


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
        write_readings(self.bootstrap, PLAINTEXT, topic, readings, partitions)
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
    """One training run through tensorflow-io on 150 simulated cars x 300 readings (45,000 records, 3
    partitions): half the demo's history fleet, to keep the suite short. With 60 cars, 12 test cars hold about 15
    failure episodes, and gradient boosting beat the LSTM on one of three seeds."""
    topic = topics.with_readings("ml-train", list(generate_readings(*FLEET, seed=42)))
    model_dir = tmp_path_factory.mktemp("models")
    result = run_ml(kafka_bootstrap, "train", "--topic", topic, "--model-dir", str(model_dir), "--reader", "tfio")
    path = artifact.latest(model_dir)
    assert path is not None and result.stdout.strip() == str(path)
    return path


def test_training_leaves_a_complete_artifact_and_report(trained):
    assert {"model.keras", "saved_model", "metadata.json", "report"} <= {p.name for p in trained.iterdir()}
    meta = json.loads((trained / "metadata.json").read_text())
    assert meta["version"] == trained.name
    assert (meta["window"], meta["horizon"], meta["features"]) == (36, 60, list(SENSOR_FIELDS))
    assert "starts" in meta["label"]
    assert len(meta["scaling"]["mean"]) == len(meta["scaling"]["std"]) == len(SENSOR_FIELDS)
    assert 0 < meta["threshold"] <= 1 and meta["threshold"] == meta["metrics"]["threshold"]
    assert meta["schema"]["name"] == "io.carstream.CarSensorReading" and len(meta["schema"]["fingerprint"]) == 16
    training = meta["training"]
    assert training["records"] == training["readings"] == 45_000 and training["cars"] == 150
    assert training["start_offsets"] == {"0": 0, "1": 0, "2": 0}
    assert sum(training["end_offsets"].values()) == 45_000
    assert training["time_range"]["first"] < training["time_range"]["last"]
    assert 1 <= training["epochs"] <= 25 and training["samples_per_s"] > 0
    assert meta["evaluation"]["false_alarm_budget_per_healthy_car_hour"] == 0.1
    assert meta["calibration"]["method"] == "platt" and meta["calibration"]["fitted"] is True
    report = json.loads((trained / "report" / "report.json").read_text())
    assert report["models"]["lstm"] == meta["metrics"] and report["models"]["gbm"] == meta["baseline"]
    for name in MODELS:
        figures = report["models"][name]
        assert all(figures[key] is not None for key in SECTIONS), (name, figures)
        assert all(figures["episodes"][key] is not None for key in EPISODE_FIGURES), (name, figures)
        assert figures["episodes"]["episodes"] > 0 and report["tradeoff"][name]
    # the floor ranks nothing: its PR-AUC is the test windows' prevalence
    floor = report["models"]["prevalence"]
    assert floor["pr_auc"] == pytest.approx(floor["prevalence"]) and floor["roc_auc"] == 0.5
    comparison = report["comparison"]
    assert comparison["resamples"] > 100 and comparison["low"] <= comparison["difference"] <= comparison["high"]
    assert set(report["targets"]) == {"warned_share", "median_lead_s", "false_alerts_per_healthy_car_hour"}
    text = (trained / "report" / "report.txt").read_text()
    assert all(word in text for word in ("PR-AUC", "GBM", "logistic", "prevalence", "Brier", "episodes warned"))
    assert "gradient boosting" in text and "95 % interval" in text
    assert "test - budget" in text and "LSTM at its threshold: windows TP" in text
    assert comparison["outcome"] in ("lstm_better", "gbm_better", "not_distinguishable")
    for name in MODELS:
        figures = report["models"][name]
        windows, episodes = figures["confusion"]["windows"], figures["confusion"]["episodes"]
        assert sum(windows.values()) == figures["windows"] and windows["tp"] + windows["fn"] == figures["positives"]
        assert episodes["warned"] + episodes["missed"] == figures["episodes"]["episodes"]
        assert episodes["suppressed"] == figures["episodes"]["suppressed_alerts"]
        by_mode = figures["episodes"]["by_mode"]  # the readings name what failed (failure_mode, schema v3)
        assert sum(m["episodes"] for m in by_mode.values()) == figures["episodes"]["episodes"]
        assert sum(m["warned"] for m in by_mode.values()) == figures["episodes"]["warned"]
        assert sum(b["windows"] for b in figures["reliability"]) == figures["windows"]
    point = report["operating_point"]
    assert set(point["models"]) == {"lstm", "gbm"} and point["targets"]["false_alerts_per_healthy_car_hour"] == 0.1
    assert point["models"]["lstm"]["warned"] == report["models"]["lstm"]["episodes"]["warned"]
    plots = ("training_curves", "precision_recall", "roc", "tradeoff", "reliability", "leads", "operating_point")
    for plot in (*plots, "recall_by_mode"):
        assert (trained / "report" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_windows_before_a_failure_are_scored_and_cars_stay_apart(trained):
    meta = json.loads((trained / "metadata.json").read_text())
    split = meta["training"]["split"]
    assert not set(split["test"]) & (set(split["train"]) | set(split["validation"]))
    assert not set(split["validation"]) & set(split["train"])
    series = series_from_records(list(generate_readings(*FLEET, seed=42))).select_cars(split["test"])
    eligible = window_ends(series, 36)
    eligible = eligible[~series.failure[eligible]]
    # windows ending in failure are not scored; neither are the last 60 readings of a car unless an onset is near
    assert meta["metrics"]["windows"] < len(eligible) <= meta["metrics"]["windows"] + 60 * len(split["test"])


def test_the_lstm_is_ahead_of_gradient_boosting_and_calibration_does_no_harm(trained):
    """On this fleet, as on seeds 1, 2 and 3 of it, the LSTM's PR-AUC is above gradient boosting's. On seed 42 the
    car bootstrap's 95 % interval of the difference includes 0 (about +0.05 [-0.05, +0.14]): this asserts the
    point estimate on fixed data, not a reliable win; `lstm_beats_baseline` and the verdict say "beats" only
    where the interval lies above 0."""
    meta = json.loads((trained / "metadata.json").read_text())
    lstm, baselines = meta["metrics"], meta["baselines"]
    assert lstm["positives"] > 0 and lstm["episodes"]["episodes"] > 0
    assert lstm["pr_auc"] > 2 * baselines["prevalence"]["pr_auc"]  # far above what a constant scores
    assert lstm["pr_auc"] > baselines["gbm"]["pr_auc"], (lstm, baselines["gbm"])
    comparison = meta["comparison"]
    assert meta["lstm_beats_baseline"] is (comparison["low"] > 0)
    verdict = json.loads((trained / "report" / "report.json").read_text())["verdict"]
    assert ("beats" in verdict) is (comparison["low"] > 0 or comparison["high"] < 0)
    assert lstm["brier"] <= lstm["brier_uncalibrated"] + BRIER_TOLERANCE
    # class weights inflate probabilities: the balanced logistic regression's, and Platt scaling repairs them
    logistic = baselines["logistic"]
    assert lstm["brier"] < logistic["brier_uncalibrated"] and logistic["brier"] < logistic["brier_uncalibrated"] - 0.03
    assert meta["calibration"]["brier_test_calibrated"] == lstm["brier"]


def test_the_thresholds_transfer_is_measured_on_the_test_cars(trained):
    """The report's false-alarm rate of the threshold, where it was chosen (validation cars) and on the test cars,
    recomputed here from the artifact's own scores of those cars and the readings' ground truth."""
    meta = json.loads((trained / "metadata.json").read_text())
    transfer = meta["metrics"]["threshold_transfer"]
    split, threshold = meta["training"]["split"], meta["threshold"]
    model = artifact.load(trained).keras_model()
    everything = series_from_records(list(generate_readings(*FLEET, seed=42)))
    for cars, figures in ((split["test"], transfer["test"]), (split["validation"], transfer["chosen_on"])):
        series = everything.select_cars(cars)
        ends = window_ends(series, meta["window"])
        scores = model.predict(gather_windows(series.features, ends, meta["window"]), batch_size=2048, verbose=0)
        judged = np.zeros(len(series), bool)
        judged[ends] = True
        alerts = np.zeros(len(series), bool)
        alerts[ends] = scores.reshape(-1) >= threshold
        recomputed = episode_report(series, alerts, judged, meta["horizon"], window=meta["window"])
        assert figures["cars"] == len(cars)
        assert figures["false_alerts"] == recomputed.false_alerts
        assert figures["healthy_car_hours"] == pytest.approx(recomputed.healthy_hours)
        assert figures["rate"] == pytest.approx(recomputed.false_alerts_per_car_hour)
        assert figures["interval"][0] <= figures["rate"] <= figures["interval"][1]
    budget = meta["evaluation"]["false_alarm_budget_per_healthy_car_hour"]
    assert transfer["chosen_on"]["rate"] <= budget, "the threshold meets the budget where it was chosen"
    assert transfer["transfer_error"] == pytest.approx(transfer["test"]["rate"] - budget)
    assert transfer["gap"] == pytest.approx(transfer["test"]["rate"] - transfer["chosen_on"]["rate"])
    assert transfer["test"]["rate"] == pytest.approx(meta["metrics"]["episodes"]["false_alerts_per_healthy_car_hour"])


def test_artifact_predicts_identically_in_a_fresh_process(trained, tmp_path):
    series = series_from_records(list(generate_readings(5, 60, seed=99)))
    windows = gather_windows(series.features, window_ends(series, 36), 36)
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
    """failure_occurred shuffled across all readings: nothing to learn, so every model's held-out PR-AUC must sit
    near the prevalence (the floor) and its ROC-AUC near 0.5. A horizon of 5 readings keeps the prevalence near
    a fifth (onsets are everywhere once labels are shuffled). Read through the confluent-kafka reader."""
    readings = list(generate_readings(30, 300, seed=7))
    labels = np.random.default_rng(0).permutation([r["failure_occurred"] for r in readings])
    for reading, label in zip(readings, labels, strict=True):
        reading["failure_occurred"] = bool(label)
    topic = topics.with_readings("ml-noise", readings)
    args = ("--topic", topic, "--model-dir", str(tmp_path), "--reader", "confluent", "--epochs", "3", "--patience", "1")
    run_ml(kafka_bootstrap, "train", *args, "--horizon", "5")
    meta = json.loads((artifact.latest(tmp_path) / "metadata.json").read_text())
    for name, metrics in {"lstm": meta["metrics"], **meta["baselines"]}.items():
        assert abs(metrics["roc_auc"] - 0.5) < 0.1, (name, metrics)
        assert abs(metrics["pr_auc"] - metrics["prevalence"]) < 0.1, (name, metrics)


def test_training_leaves_out_the_sensors_some_readings_do_not_report(kafka_bootstrap, topics, tmp_path):
    """Readings of two senders, one without accelerometer peaks (null, as a version-2 record or a 2019 sender):
    the model reads the sensors every reading reports, and its metadata and statistics say which."""
    readings = list(generate_readings(20, 150, seed=5, failure_rate=4.0))
    for reading in readings[::2]:
        reading.update(dict.fromkeys(OPTIONAL_SENSOR_FIELDS))
    topic = topics.with_readings("ml-null", readings)
    args = ("--topic", topic, "--model-dir", str(tmp_path), "--reader", "confluent", "--epochs", "1")
    run_ml(kafka_bootstrap, "train", *args, "--window", "10", "--horizon", "5")
    meta = json.loads((artifact.latest(tmp_path) / "metadata.json").read_text())
    reported = [name for name in SENSOR_FIELDS if name not in OPTIONAL_SENSOR_FIELDS]
    assert meta["features"] == reported and len(meta["scaling"]["mean"]) == len(reported)
    assert sorted(meta["feature_stats"]["features"]) == sorted(reported)
    assert all(np.isfinite(meta["metrics"][key]) for key in ("pr_auc", "brier"))


def test_seed_form_trains_then_writes_avro_predictions(kafka_bootstrap, topics, tmp_path):
    """`python -m ml SERVERS TOPIC START_OFFSET RESULT_TOPIC`: train on the first 1000 records from the offset,
    one Avro prediction (key = car_id) for each of the following 200."""
    readings = list(generate_readings(10, 130, seed=11, failure_rate=6.0))
    topic = topics.with_readings("ml-seed", readings, partitions=1)
    result_topic = topics.name("ml-seed-result")
    options = ("--model-dir", str(tmp_path), "--window", "12", "--horizon", "5", "--epochs", "2")
    run_ml(kafka_bootstrap, kafka_bootstrap, topic, "100", result_topic, *options)
    version = artifact.latest(tmp_path)
    assert json.loads((version / "metadata.json").read_text())["training"]["records"] == 1000
    codec = AvroCodec(PREDICTION, result_topic)
    values = [(m.key().decode(), codec.decode(m.value())) for m in read_to_end(kafka_bootstrap, result_topic)]
    expected = {(r["car_id"], r["seq"]) for r in readings[1100:1300]}  # offsets 100.. in one partition
    assert {(p["car_id"], p["seq"]) for _, p in values} == expected and len(values) == 200
    assert all(key == p["car_id"] and p["model_version"] == version.name and p["horizon"] == 5 for key, p in values)
    assert all(0 <= p["failure_probability"] <= 1 for _, p in values)
    # schema version 2: the training range's verdict on each reading (ml/ood.py)
    assert all(p["ood_score"] >= 0 and p["out_of_distribution"] == bool(p["ood_features"]) for _, p in values)
