"""The data API: simulator.fleet.generate_readings."""

import itertools
from collections import defaultdict

import pytest

from common.errors import ConfigError
from common.schemas import INT_SENSOR_FIELDS, SENSOR_FIELDS, SENSOR_RANGES, payload_fields
from simulator.fleet import generate_readings


@pytest.fixture(scope="module")
def default_data() -> list[dict]:
    return list(generate_readings(50, 300))


def episodes(readings: list[dict]) -> dict[str, list[tuple[int, int]]]:
    """Per car, the (first seq, last seq) of each run of failure_occurred=true."""
    labels: dict[str, list[bool]] = defaultdict(list)
    for reading in readings:
        labels[reading["car_id"]].append(reading["failure_occurred"])
    runs = {}
    for car, flags in labels.items():
        runs[car] = []
        seq = 0
        for failed, group in itertools.groupby(flags):
            length = len(list(group))
            if failed:
                runs[car].append((seq, seq + length - 1))
            seq += length
    return runs


def test_readings_are_complete_typed_and_in_range(default_data):
    assert len(default_data) == 50 * 300
    for reading in default_data:
        assert list(reading) == payload_fields()
        for name in SENSOR_FIELDS:
            value = reading[name]
            assert type(value) is (int if name in INT_SENSOR_FIELDS else float), name
            low, high = SENSOR_RANGES[name]
            assert low <= value <= high, (name, value)
        assert reading["control_unit_firmware"] in (1000, 2000)
        assert type(reading["failure_occurred"]) is bool


def test_ids_seq_and_event_time_order(default_data):
    assert default_data[0]["car_id"] == "car-00001"
    assert default_data[49]["car_id"] == "car-00050"
    assert [r["car_id"] for r in default_data[:50]] == [r["car_id"] for r in default_data[50:100]]
    times = [r["event_time"] for r in default_data]
    assert times == sorted(times)
    per_car: dict[str, list[int]] = defaultdict(list)
    for reading in default_data:
        per_car[reading["car_id"]].append(reading["seq"])
    assert all(seqs == list(range(300)) for seqs in per_car.values())
    car_one = [r["event_time"] for r in default_data if r["car_id"] == "car-00001"]
    assert {b - a for a, b in itertools.pairwise(car_one)} == {10_000}


def test_defaults_hold_enough_announced_failures(default_data):
    runs = episodes(default_data)
    count = sum(len(r) for r in runs.values())
    assert count >= 20
    # Each failure is preceded by tens of unlabelled lead-up readings (the lead-up spans 300..900 s at 10 s).
    starts = [first for car_runs in runs.values() for first, _ in car_runs]
    assert sum(first >= 30 for first in starts) >= 20


def test_same_seed_same_data_other_seed_other_data():
    first = list(generate_readings(5, 40, seed=7))
    assert first == list(generate_readings(5, 40, seed=7))
    assert first != list(generate_readings(5, 40, seed=8))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown fleet option"):
        next(generate_readings(2, 2, speed_of_light=3))
    with pytest.raises(ConfigError, match="cars"):
        next(generate_readings(0, 2))
    with pytest.raises(ConfigError, match="lead_up_s"):
        next(generate_readings(2, 2, lead_up_s=(10, 5)))
