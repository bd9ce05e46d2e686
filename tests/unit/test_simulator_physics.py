"""The physical relations of the fleet model (healthy cars: failure_rate 0)."""

import numpy as np
import pytest

from simulator.fleet import ACCELEROMETERS, Fleet, FleetConfig


@pytest.fixture(scope="module")
def healthy() -> tuple[Fleet, dict[str, np.ndarray]]:
    """200 cars x 200 readings; columns of shape [steps, cars]."""
    fleet = Fleet(200, seed=3, config=FleetConfig(failure_rate=0.0))
    steps = [fleet.step() for _ in range(200)]
    columns = {name: np.stack([s.values[name] for s in steps]) for name in steps[0].values}
    assert not any(s.failure.any() for s in steps)
    return fleet, columns


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_speed_follows_throttle_with_inertia(healthy):
    fleet, c = healthy
    target = c["throttle_pos"] * fleet.top_speed
    assert corr(c["speed"], target) > 0.8
    # Inertia: speed moves less from one reading to the next than the speed the throttle asks for.
    assert np.diff(c["speed"], axis=0).std() < 0.8 * np.diff(target, axis=0).std()
    # And it lags: today's speed matches the previous reading's target better than the next one's.
    assert corr(c["speed"][1:], target[:-1]) > corr(c["speed"][:-1], target[1:])


def test_engine_vibration_scales_with_speed(healthy):
    _, c = healthy
    assert corr(c["engine_vibration_amplitude"], c["speed"]) > 0.9


def test_coolant_follows_current_draw_with_a_lag(healthy):
    _, c = healthy
    current = c["current_draw"]
    smoothed = np.stack([current[max(0, t - 9) : t + 1].mean(axis=0) for t in range(len(current))])
    assert corr(c["coolant_temp"], smoothed) > 0.8
    assert corr(c["coolant_temp"], smoothed) > corr(c["coolant_temp"], current)


def test_battery_drains_with_use_and_voltage_follows_the_charge(healthy):
    _, c = healthy
    # Over 10 readings (100 s) the charge falls by what was drawn and rises while charging.
    change = c["battery_percentage"][10:] - c["battery_percentage"][:-10]
    drawn = np.stack([c["current_draw"][t + 1 : t + 11].sum(axis=0) for t in range(len(change))])
    assert corr(change, drawn) < -0.9
    assert (change[drawn > 600] < 0).mean() > 0.95
    assert (change[drawn < -1000] > 0).mean() > 0.95
    light_load = np.abs(c["current_draw"]) < 40
    assert corr(c["battery_voltage"][light_load], c["battery_percentage"][light_load]) > 0.8


def test_bumps_show_on_the_accelerometers_when_moving(healthy):
    _, c = healthy
    accel = np.abs(np.stack([c[name] for name in ACCELEROMETERS]))
    moving, stopped = c["speed"] > 60, c["speed"] < 1
    assert stopped.any() and moving.any()
    assert accel[:, moving].max() > 5 * accel[:, stopped].max()
    assert np.percentile(accel[:, moving], 99) > 4


def test_firmware_is_1000_or_2000_and_fixed_per_car(healthy):
    _, c = healthy
    firmware = c["control_unit_firmware"]
    assert set(np.unique(firmware)) == {1000, 2000}
    assert (firmware == firmware[0]).all()


def test_every_sensor_is_noisy(healthy):
    _, c = healthy
    for name, column in c.items():
        if name == "control_unit_firmware":
            continue
        varies = [np.unique(column[:, car]).size > 1 for car in range(column.shape[1])]
        assert np.mean(varies) > 0.95, name
