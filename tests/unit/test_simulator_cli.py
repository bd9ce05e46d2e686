"""The command line: offline files, replay's CSV reading, and clear errors for bad options and input."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.schemas import OPTIONAL_SENSOR_FIELDS, SENSOR_FIELDS, payload_fields
from scripts.runtime.local import ROOT, free_port
from simulator.__main__ import dispatch
from simulator.fleet import generate_readings
from simulator.live import planned_readings
from simulator.replay import read_readings
from simulator.settings import LiveSettings

SEED_HEADER = ["time", "car", *SENSOR_FIELDS]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cars", "0"], "--cars"),
        (["--qos", "2"], "--qos"),
        (["--rate", "fast"], "--rate"),
        (["--connections", "-1"], "--connections"),
        (["offline", "--cars", "2"], "--out"),
        (["offline", "--out", "x.csv"], "give --count or --duration"),
        (["offline", "--out", "x.parquet", "--count", "3"], "cannot tell the format"),
        (["replay", "/nonexistent/file.csv"], "cannot open"),
        (["replay", "x.csv", "--pace", "slow"], "--pace"),
    ],
)
def test_bad_options_are_config_errors_naming_the_problem(args, message):
    with pytest.raises(ConfigError, match=message):
        dispatch(args)


def test_a_bad_option_gives_one_clear_line_not_a_stack_trace():
    result = run_cli("--cars", "many")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: invalid settings: --cars")


def test_unreachable_broker_is_a_clear_error():
    result = run_cli("--mqtt-port", str(free_port()), "--count", "5", "--no-progress")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot reach the MQTT broker" in result.stderr


def test_help_names_every_simulator_variable():
    text = " ".join(run_cli("--help").stdout.split())
    for env in (
        "SIMULATOR_CARS",
        "SIMULATOR_RATE",
        "SIMULATOR_QOS",
        "SIMULATOR_SEED",
        "SIMULATOR_DURATION",
        "SIMULATOR_COUNT",
        "SIMULATOR_CONNECTIONS",
        "SIMULATOR_FAILURE_RATE",
        "SIMULATOR_SPEEDUP",
        "MQTT_HOST",
        "MQTT_PORT",
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
        "MQTT_TLS",
    ):
        assert f"[env: {env}]" in text


def test_offline_csv_equals_generate_readings_and_replay_reads_it_back(tmp_path: Path):
    out = tmp_path / "fleet.csv"
    assert dispatch(["offline", "--cars", "4", "--count", "40", "--seed", "9", "--out", str(out)]) == 0
    with out.open() as handle:
        assert next(csv.reader(handle)) == payload_fields()
    assert list(read_readings(out)) == list(generate_readings(4, 10, seed=9))


def test_offline_jsonl_is_deterministic_and_honours_duration(tmp_path: Path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (first, second):
        assert dispatch(["offline", "--cars", "3", "--duration", "60", "--out", str(path)]) == 0
    assert first.read_bytes() == second.read_bytes()
    lines = [json.loads(line) for line in first.read_text().splitlines()]
    assert lines == list(generate_readings(3, 6))


def write_seed_csv(path: Path, rows: list[list]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SEED_HEADER)
        writer.writerows(rows)


def seed_row(time: float, car: str, value: float = 1.0) -> list:
    return [time, car, *([value] * len(SENSOR_FIELDS))]


def test_replay_reads_the_seed_layout(tmp_path: Path):
    path = tmp_path / "seed.csv"
    write_seed_csv(
        path, [seed_row(1_600_000_000.5, "car1"), seed_row(1_600_000_010, "car2"), seed_row(1_600_000_020, "car1")]
    )
    readings = list(read_readings(path))
    assert [(r["car_id"], r["seq"], r["event_time"]) for r in readings] == [
        ("car1", 0, 1_600_000_000_500),
        ("car2", 0, 1_600_000_010_000),
        ("car1", 1, 1_600_000_020_000),
    ]
    assert all(r["failure_occurred"] is None for r in readings), "a file without a label column is unlabelled"
    assert type(readings[0]["tire_pressure_1_1"]) is int and type(readings[0]["speed"]) is float


def test_replay_leaves_out_the_optional_sensors_a_recording_lacks(tmp_path: Path):
    reference = Path(__file__).parents[1] / "data" / "reference_demo_layout.csv"  # the 2019 layout: no peaks
    readings = list(read_readings(reference))
    assert len(readings) == 2000
    assert not any(name in r for r in readings for name in OPTIONAL_SENSOR_FIELDS)
    path = tmp_path / "some_peaks.csv"  # a column present, empty in one row
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SEED_HEADER)
        peak = SEED_HEADER.index("accelerometer_1_1_peak")
        writer.writerows([seed_row(1, "car1"), [*seed_row(2, "car1")[:peak], "", *seed_row(2, "car1")[peak + 1 :]]])
    first, second = read_readings(path)
    assert first["accelerometer_1_1_peak"] == 1.0 and "accelerometer_1_1_peak" not in second


def test_replay_skips_unreadable_rows_and_names_their_line(tmp_path: Path):
    path = tmp_path / "bad.csv"
    write_seed_csv(path, [seed_row(1, "car1"), seed_row(2, "car1", "n/a"), seed_row(3, "car1")])
    skipped: list[str] = []
    readings = list(read_readings(path, skipped))
    assert [r["seq"] for r in readings] == [0, 1]
    assert len(skipped) == 1 and "bad.csv:3" in skipped[0] and "not a number" in skipped[0]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (seed_row(2, "car1", "nan"), "not a finite number"),  # NaN in every column, int ones included
        (seed_row(float("inf"), "car1"), "time='inf' is not a finite number"),
        (seed_row(2, "car/2"), "cannot"),  # would publish outside vehicles/sensor/data/+
        (seed_row(2, "car+2"), "cannot"),  # a wildcard: paho refuses to publish it
        (seed_row(2, "car#"), "cannot"),
    ],
)
def test_replay_skips_rows_that_cannot_be_readings_and_goes_on(tmp_path: Path, row: list, reason: str):
    path = tmp_path / "foreign.csv"
    write_seed_csv(path, [seed_row(1, "car1"), row, seed_row(3, "car1")])
    skipped: list[str] = []
    readings = list(read_readings(path, skipped))
    assert [(r["car_id"], r["seq"]) for r in readings] == [("car1", 0), ("car1", 1)]
    assert len(skipped) == 1 and "foreign.csv:3" in skipped[0] and reason in skipped[0], skipped


def test_replay_rejects_a_file_without_the_columns(tmp_path: Path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="missing column"):
        list(read_readings(path))


def test_planned_readings_from_count_and_duration():
    settings = LiveSettings(cars=100, rate=0.1, duration=60)
    assert planned_readings(settings) == 600
    assert planned_readings(LiveSettings(cars=100, rate=0.1, duration=60, count=50)) == 50
    assert planned_readings(LiveSettings(cars=100, rate=0.1, duration=60, speedup=10)) == 6000
    assert planned_readings(LiveSettings(cars=100)) is None
