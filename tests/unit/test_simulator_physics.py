"""The physical relations of the fleet model (healthy cars: failure_rate 0)."""

import numpy as np
import pytest

from simulator import suspension
from simulator.fleet import ACCELEROMETER_PEAKS, ACCELEROMETERS, Fleet, FleetConfig


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


def test_accelerometers_report_rms_and_peak_growing_with_speed(healthy):
    _, c = healthy
    rms = np.stack([c[name] for name in ACCELEROMETERS])
    peak = np.stack([c[name] for name in ACCELEROMETER_PEAKS])
    assert (rms >= 0).all() and (peak >= rms).all(), "a peak is at least the RMS, and neither is negative"
    stopped = np.zeros_like(c["speed"], bool)
    stopped[1:] = (c["speed"][1:] == 0) & (c["speed"][:-1] == 0)  # standing through the whole interval
    assert stopped.any()
    assert np.median(rms[:, stopped]) == suspension.FLOOR_RMS and np.percentile(rms[:, stopped], 95) < 0.1
    fast, slow = c["speed"] > 90, (c["speed"] > 15) & (c["speed"] < 40)
    # ISO 8608 roads: the excitation's variance grows with speed, so the RMS grows about as its square root.
    assert 1.3 < np.median(rms[:, fast]) / np.median(rms[:, slow]) < 2.5
    assert np.median(peak[:, fast]) > 2 * np.median(rms[:, fast])


def test_road_events_hit_both_wheels_of_an_axle(healthy):
    _, c = healthy
    peak = np.stack([c[name] for name in ACCELEROMETER_PEAKS])
    rms = np.stack([c[name] for name in ACCELEROMETERS])
    moving = c["speed"] > 60
    crest = np.log(peak / rms)[:, moving]  # a bump raises the peak far above what the steady road gives
    # Partners share each event (same bump, each wheel meeting it a little differently): their crests move together.
    assert np.corrcoef(crest[0], crest[1])[0, 1] > 0.5
    assert np.corrcoef(crest[2], crest[3])[0, 1] > 0.5
    # And the rear axle meets the front's bump within the same interval.
    assert np.corrcoef(crest[0], crest[2])[0, 1] > 0.5


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
