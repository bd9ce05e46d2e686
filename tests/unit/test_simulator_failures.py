"""Failure modes: labels line up with each lead-up, and the lead-up moves the documented sensors (README) in the
documented direction.

The direction test pairs two fleets with the same seed, one with failures and one without: every random draw is
the same in both, so during a car's first lead-up the readings differ only where the failure acts.
"""

import itertools

import numpy as np
import pytest

from common.schemas import SENSOR_FIELDS
from simulator.failures import FailureMode, Phase
from simulator.fleet import ACCELEROMETER_PEAKS, ACCELEROMETERS, TIRES, Fleet, FleetConfig

CARS, STEPS = 400, 150
# Sensors each mode may change during its lead-up (README.md, "Failure modes").
AFFECTED = {
    FailureMode.TIRE_PRESSURE_LOSS: set(TIRES),
    FailureMode.SHOCK_ABSORBER: set(ACCELEROMETERS) | set(ACCELEROMETER_PEAKS),
    FailureMode.DRIVE_SHAFT: {"engine_vibration_amplitude"},
    FailureMode.COOLANT_OVERHEATING: {"coolant_temp", "intake_air_temp"},
    FailureMode.BATTERY_CELL: set(SENSOR_FIELDS),  # a faster drain changes when the car stops to recharge
}


@pytest.fixture(scope="module")
def paired() -> list[tuple]:
    """(step with failures, the same step without) per reading interval."""
    failing = Fleet(CARS, seed=11, config=FleetConfig(failure_rate=4.0))
    healthy = Fleet(CARS, seed=11, config=FleetConfig(failure_rate=0.0))
    return [(failing.step(), healthy.step()) for _ in range(STEPS)]


def first_lead_up(paired, mode: FailureMode) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Severity, corner, and the readings of both fleets, for cars in their first lead-up of `mode`."""
    ever_failed = np.zeros(CARS, bool)
    rows_failing: dict[str, list] = {name: [] for name in SENSOR_FIELDS}
    rows_healthy: dict[str, list] = {name: [] for name in SENSOR_FIELDS}
    severity, corners = [], []
    for failing, healthy in paired:
        ever_failed |= failing.phase == Phase.FAILED
        pick = (failing.phase == Phase.LEAD_UP) & (failing.mode == mode) & ~ever_failed
        for name in SENSOR_FIELDS:
            rows_failing[name].append(failing.values[name][pick])
            rows_healthy[name].append(healthy.values[name][pick])
        severity.append(failing.severity[pick])
        corners.append(failing.corner[pick].astype(int))
    a = {k: np.concatenate(v) for k, v in rows_failing.items()}
    b = {k: np.concatenate(v) for k, v in rows_healthy.items()}
    return np.concatenate(severity), np.concatenate(corners), a, b


def corner_values(values: dict, names: tuple[str, ...], corner: np.ndarray) -> np.ndarray:
    stacked = np.stack([values[n] for n in names], axis=1)
    return stacked[np.arange(len(corner)), corner]


@pytest.mark.parametrize("mode", list(FailureMode)[1:], ids=lambda m: m.name.lower())
def test_lead_up_moves_only_the_documented_sensors(paired, mode):
    severity, _, a, b = first_lead_up(paired, mode)
    assert len(severity) > 100, "too few lead-up readings to judge"
    for name in set(SENSOR_FIELDS) - AFFECTED[mode]:
        assert np.array_equal(a[name], b[name]), f"{mode.name} changed {name}"


def test_tire_pressure_loss_lowers_one_tire(paired):
    severity, corner, a, b = first_lead_up(paired, FailureMode.TIRE_PRESSURE_LOSS)
    drop = corner_values(a, TIRES, corner) - corner_values(b, TIRES, corner)
    assert (drop <= 0).all()
    assert drop[severity > 0.4].mean() < -5
    others = sum(a[t] - b[t] for t in TIRES) - drop
    assert (others == 0).all(), "only the leaking tire loses pressure"


def test_shock_absorber_wear_raises_its_corners_rms_and_peak_against_the_axle_partner(paired):
    severity, corner, a, b = first_lead_up(paired, FailureMode.SHOCK_ABSORBER)
    partner = corner ^ 1  # the other corner of the axle: 1_1 <-> 1_2, 2_1 <-> 2_2
    moving = b["speed"] > 30
    for names in (ACCELEROMETERS, ACCELEROMETER_PEAKS):
        for i, name in enumerate(names):
            assert np.array_equal(a[name][corner != i], b[name][corner != i]), f"{name} moved for another corner"
        # The partner is untouched, so the corner-vs-partner ratio moves by the corner's own change.
        ratio = np.log(corner_values(a, names, corner) / corner_values(a, names, partner))
        healthy_ratio = np.log(corner_values(b, names, corner) / corner_values(b, names, partner))
        shift = ratio - healthy_ratio
        early, middle, late = (severity < 0.15), (severity >= 0.15) & (severity < 0.4), severity >= 0.4
        means = [shift[moving & stage].mean() for stage in (early, middle, late)]
        assert 0 < means[0] < means[1] < means[2], f"{names[0]}: not progressive with severity: {means}"
        assert means[2] > 0.15, f"{names[0]}: {means}"
        # Noisy: late in the lead-up one reading's ratio still sits within the healthy spread of that ratio.
        assert means[2] < 1.5 * healthy_ratio[moving].std(), f"{names[0]}: one reading tells, {means}"


def test_drive_shaft_wear_raises_vibration_with_the_square_of_speed(paired):
    severity, _, a, b = first_lead_up(paired, FailureMode.DRIVE_SHAFT)
    extra = a["engine_vibration_amplitude"] - b["engine_vibration_amplitude"]
    assert (extra >= 0).all()
    assert (extra[b["speed"] < 1] < 5).all(), "a shaft that does not turn does not shake (the interval may end a stop)"
    late = severity > 0.4
    fast, slow = late & (b["speed"] > 100), late & (b["speed"] > 20) & (b["speed"] < 60)
    assert extra[fast].mean() > 300
    assert extra[fast].mean() > 3 * extra[slow].mean()


def test_coolant_overheating_raises_coolant_and_intake_temperature_the_more_under_load(paired):
    severity, _, a, b = first_lead_up(paired, FailureMode.COOLANT_OVERHEATING)
    hotter = a["coolant_temp"] - b["coolant_temp"]
    assert (hotter >= 0).all()
    late = severity > 0.4
    assert hotter[late].mean() > 5
    loaded = b["current_draw"] > np.median(b["current_draw"][late])
    assert hotter[late & loaded].mean() > hotter[late & ~loaded].mean()
    assert (a["intake_air_temp"] - b["intake_air_temp"]).mean() > 0


def test_battery_cell_degradation_lowers_voltage_and_charge(paired):
    severity, _, a, b = first_lead_up(paired, FailureMode.BATTERY_CELL)
    late = severity > 0.4
    assert np.median((a["battery_voltage"] - b["battery_voltage"])[late]) < -0.5
    assert np.median((a["battery_percentage"] - b["battery_percentage"])[late]) < 0


def test_labels_line_up_with_each_lead_up(paired):
    config = FleetConfig()
    min_lead_up = int(config.lead_up_s[0] // config.interval_s)
    failures = 0
    for car in range(CARS):
        phases = [int(f.phase[car]) for f, _ in paired]
        labels = [bool(f.failure[car]) for f, _ in paired]
        modes = [int(f.mode[car]) for f, _ in paired]
        severity = [float(f.severity[car]) for f, _ in paired]
        assert labels == [p == Phase.FAILED for p in phases]
        runs = [(phase, len(list(group))) for phase, group in itertools.groupby(phases)]
        position = 0
        for index, (phase, length) in enumerate(runs):
            if phase == Phase.FAILED:
                failures += 1
                if index > 0:  # a failure at the very start of the data has its lead-up before it
                    previous_phase, lead_length = runs[index - 1]
                    assert previous_phase == Phase.LEAD_UP
                    assert lead_length >= min_lead_up
                    lead = slice(position - lead_length, position)
                    assert len(set(modes[lead] + modes[position : position + length])) == 1
                    assert severity[lead] == sorted(severity[lead])
                    assert max(severity[lead]) < min(severity[position : position + length])
                if index + 1 < len(runs):
                    assert runs[index + 1][0] == Phase.HEALTHY, "a repaired car runs healthy again"
            if phase == Phase.LEAD_UP and index + 1 < len(runs):
                assert runs[index + 1][0] == Phase.FAILED
            position += length
    assert failures > 50
