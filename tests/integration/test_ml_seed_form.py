"""The 2019 seed's command line, `python -m ml SERVERS TOPIC START_OFFSET [RESULT_TOPIC]`, on its own defaults
(1000 records to train, 200 to predict) against a topic written by the simulator's default fleet (25 cars, seed 42,
one reading per car per 10 s, its default failure rate) on car-sensor's 4 partitions: the window and horizon are
fitted to the records and said in the output; the first 1000 records (400 s of each car) hold (almost) no
failure, so no model is trained and nothing is written, with the numbers; more records of the same topic do hold
failures, and then a model is trained with W and H fitted to them and its 200 predictions are written."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.avro import AvroCodec
from common.defaults import FLEET_CARS
from common.lifecycle import EXIT_USAGE
from common.schemas import PREDICTION
from common.settings import PLAINTEXT
from common.topics import READINGS_TOPIC, TOPIC_PARTITIONS
from ml import artifact
from ml.episodes import onsets, suppressed
from ml.features import series_from_records
from ml.training.seed_fit import MIN_FAILING_CARS, failing_cars, fit_window, records_held
from scripts.testkit.kafka import delete_topics, end_offsets, read_to_end, unique
from scripts.testkit.readings import write_readings
from scripts.testkit.services import run_module
from simulator.fleet import generate_readings

READINGS_PER_CAR = 188  # 4700 records: 4500 to train in the second run, 200 to predict
MORE_RECORDS = 4500
"""180 readings per car: under the 192 that the defaults W = 36, H = 60 need within half of them, so W and H are
fitted down (to 33 and 57); seed 42's first 4500 records hold 8 failure onsets on 7 cars."""


@pytest.fixture(scope="module")
def fleet() -> list[dict]:
    """The simulator's default fleet: 25 cars, seed 42 and every other option at its default."""
    return list(generate_readings(FLEET_CARS, READINGS_PER_CAR))


@pytest.fixture(scope="module")
def topic(kafka_bootstrap: str, fleet: list[dict]) -> Iterator[str]:
    name = unique("seed-form")
    write_readings(kafka_bootstrap, PLAINTEXT, name, fleet, TOPIC_PARTITIONS[READINGS_TOPIC])
    try:
        yield name
    finally:
        delete_topics(kafka_bootstrap, [name])


def seed_form(kafka_bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return run_module("ml", kafka_bootstrap, *args, check=False, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)


def test_on_its_defaults_it_fits_w_and_h_and_trains_nothing_without_failures(
    kafka_bootstrap: str, topic: str, fleet: list[dict], topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    first = series_from_records(fleet[:1000])
    onsets_held = int(onsets(first).sum())
    assert onsets_held < MIN_FAILING_CARS, "the first 400 s of each car of the default fleet hold (almost) no failure"
    result_topic = topic_factory("seed-form-result")
    process = seed_form(kafka_bootstrap, topic, "0", result_topic, "--model-dir", str(tmp_path))
    output = process.stdout + process.stderr
    assert process.returncode == EXIT_USAGE, output[-5000:]
    assert "window and horizon: W=7, H=13:" in output  # 40 readings per car: W + H <= 20, the defaults' ratio
    assert "25 cars, 40 readings per car, 400 s of each car" in output
    error = [line for line in process.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, output[-5000:]
    held = "no failure" if onsets_held == 0 else "too few failures"
    assert f"hold {held} to learn from (failure onsets: {onsets_held};" in error[0]
    assert "no model was trained and nothing was predicted" in error[0]
    assert f"{topic} holds {len(fleet)} records from offset 0: --train-records up to {len(fleet) - 200}" in error[0]
    assert process.stdout == "" and artifact.latest(tmp_path) is None
    assert end_offsets(kafka_bootstrap, result_topic) == {0: 0}, "nothing was written to the result topic"


def test_records_that_hold_failures_train_a_model_with_w_and_h_fitted_and_write_predictions(
    kafka_bootstrap: str, topic: str, fleet: list[dict], topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    history = series_from_records(fleet[:MORE_RECORDS])
    expected_fit = fit_window(records_held(history), None, None)
    failures = failing_cars(history, expected_fit)
    assert (expected_fit.window, expected_fit.horizon) == (33, 57) and failures["cars_with_labelled_onset"] >= 3
    result_topic = topic_factory("seed-form-result")
    options = ("--train-records", str(MORE_RECORDS), "--model-dir", str(tmp_path), "--epochs", "3")
    process = seed_form(kafka_bootstrap, topic, "0", result_topic, *options)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-5000:]
    assert "window and horizon: W=33, H=57:" in output and "180 readings per car" in output
    version = artifact.latest(tmp_path)
    assert version is not None and process.stdout.strip() == str(version)
    meta = json.loads((version / "metadata.json").read_text())
    assert (meta["window"], meta["horizon"]) == (33, 57)
    stated = meta["seed_form"]
    assert (stated["train_records"], stated["predict_records"]) == (MORE_RECORDS, 200)
    assert (stated["window"], stated["horizon"], stated["fitted"]) == (33, 57, ["window", "horizon"])
    assert stated["readings_per_car"] == 180 and stated["labelled_windows_per_car"] == 180 - 33 - 57 + 1
    assert "scaled down in their ratio" in stated["reason"] and stated["failures"] == failures
    report = json.loads((version / "report" / "report.json").read_text())
    assert report["seed_form"] == stated and report["window"] == 33
    assert meta["training"]["records"] == MORE_RECORDS and meta["training"]["positives"]["test"] > 0

    codec = AvroCodec(PREDICTION, result_topic)
    values = [(m.key().decode(), codec.decode(m.value())) for m in read_to_end(kafka_bootstrap, result_topic)]
    # The fleet's readings are in event-time order already; every following reading's car lent 180 readings.
    following = {(r["car_id"], r["seq"]) for r in fleet[MORE_RECORDS : MORE_RECORDS + 200]}
    assert len(values) == 200 and {(p["car_id"], p["seq"]) for _, p in values} == following
    assert all(key == p["car_id"] and p["model_version"] == version.name for key, p in values)
    assert all(p["horizon"] == 57 and 0 <= p["failure_probability"] <= 1 for _, p in values)
    # The serving rule holds here too: no alert in a failure the car reports nor in the W readings after it.
    whole = series_from_records(fleet[: MORE_RECORDS + 200], features=())
    at = {(car, int(seq)): i for i, (car, seq) in enumerate(zip(whole.car_ids, whole.seq, strict=True))}
    quiet = suppressed(whole, 33)
    for _, p in values:
        above, held = p["failure_probability"] >= meta["threshold"], bool(quiet[at[(p["car_id"], p["seq"])]])
        assert (p["failure_predicted"], p["alert_suppressed"]) == (above and not held, above and held)
    assert quiet[[at[key] for key in following]].any(), "the 200 predicted readings include suppressed ones"
