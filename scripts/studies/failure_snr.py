"""Each failure mode's signal-to-noise over its lead-up: the table in simulator/README.md ("Signal-to-noise").

    python -m scripts.studies.failure_snr --cars 1000 --readings 360 --seed 7

Two fleets with one seed, one with failures and one without (every random draw is the same in both). Per mode, a
statistic of the readings that a detector of that mode could compute from what the car reports:

- tire pressure loss: the affected tire's pressure minus its axle partner's (psi);
- shock absorber: log of the affected corner's accelerometer RMS over its axle partner's, and the same of the peak;
- drive shaft, coolant, battery: the affected sensor minus what the healthy fleet's readings predict from the
  driving (a least-squares fit on the healthy fleet: vibration from speed, speed^2, throttle and firmware; coolant
  from the current drawn over the last 10 readings; voltage from the charge and the current).

Healthy cars' corner statistics pool their four corners. The statistic is averaged over a window of W consecutive
readings; the SNR of a mode is (mean over the lead-up windows that end in the last third of the lead-up, all W
readings in it, minus the mean over healthy windows) / the standard deviation over healthy windows. Its sign is the
direction of the shift. W = 1 is one reading.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulator.failures import LEAD_UP_EXPONENT, LEAD_UP_PEAK, FailureMode, Phase
from simulator.fleet import ACCELEROMETER_PEAKS, ACCELEROMETERS, TIRES, Fleet, FleetConfig

PARTNER = np.array([1, 0, 3, 2])
"""The axle partner of each corner (1_1 <-> 1_2, 2_1 <-> 2_2)."""
LATE = 2 / 3
"""The last part of a lead-up: progress (elapsed / lead-up span) from here to the failure."""
CURRENT_LAGS = 10


@dataclass(frozen=True)
class Row:
    mode: str
    statistic: str
    unit: str
    shift: float
    """Mean shift of the window statistic over the late lead-up windows, against healthy windows."""
    noise: float
    """Standard deviation of the window statistic over healthy windows."""
    snr_reading: float
    snr_window: float
    lead_ups: int


@dataclass
class Columns:
    """[steps, cars] arrays of both fleets (healthy: the fleet without failures)."""

    failing: dict[str, np.ndarray]
    healthy: dict[str, np.ndarray]
    phase: np.ndarray
    mode: np.ndarray
    severity: np.ndarray
    corner: np.ndarray


def record(cars: int, readings: int, seed: int) -> Columns:
    failing = Fleet(cars, seed, FleetConfig(failure_rate=2.0))
    healthy = Fleet(cars, seed, FleetConfig(failure_rate=0.0))
    a: dict[str, list] = {}
    b: dict[str, list] = {}
    phase, mode, severity, corner = [], [], [], []
    for _ in range(readings):
        step, twin = failing.step(), healthy.step()
        for name, column in step.values.items():
            a.setdefault(name, []).append(column)
            b.setdefault(name, []).append(twin.values[name])
        phase.append(step.phase)
        mode.append(step.mode)
        severity.append(step.severity)
        corner.append(step.corner)
    stack = lambda d: {k: np.stack(v).astype(np.float64) for k, v in d.items()}  # noqa: E731
    return Columns(stack(a), stack(b), np.stack(phase), np.stack(mode), np.stack(severity), np.stack(corner))


def _window_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the `window` readings ending at each step ([steps, cars, ...]); NaN before the first full one."""
    total = np.cumsum(values, axis=0)
    out = np.full(values.shape, np.nan)
    out[window - 1 :] = total[window - 1 :] - np.concatenate([np.zeros_like(total[:1]), total[:-window]])
    out[window - 1 :] /= window
    return out


def _corner_stat(names: tuple[str, ...], transform: Callable[[np.ndarray], np.ndarray]):
    """A statistic of every corner against its partner: [steps, cars, 4]."""

    def stat(columns: dict[str, np.ndarray]) -> np.ndarray:
        corners = transform(np.stack([columns[name] for name in names], axis=2))
        return corners - corners[:, :, PARTNER]

    return stat


def _lagged(values: np.ndarray, lag: int) -> np.ndarray:
    """`values` `lag` readings earlier ([steps, cars]); the first reading stands in before the start."""
    return np.concatenate([np.repeat(values[:1], lag, axis=0), values[: len(values) - lag]])


def _regressors(columns: dict[str, np.ndarray], target: str) -> np.ndarray:
    speed, throttle = columns["speed"], columns["throttle_pos"]
    if target == "engine_vibration_amplitude":
        parts = [speed, speed**2, throttle, columns["control_unit_firmware"] == 2000]
    elif target == "coolant_temp":
        current = columns["current_draw"]
        # the current of the last readings (the first one repeated before the start): the heat the coolant lags
        parts = [_lagged(current, lag) for lag in range(CURRENT_LAGS)]
    else:
        parts = [columns["battery_percentage"], columns["current_draw"]]
    return np.stack([np.ones_like(speed), *parts], axis=2)


def _residual(target: str):
    """The sensor minus its least-squares prediction from the driving, fitted once on the healthy fleet."""
    fitted: dict[str, np.ndarray] = {}

    def stat(columns: dict[str, np.ndarray], healthy: dict[str, np.ndarray]) -> np.ndarray:
        if target not in fitted:
            x = _regressors(healthy, target)
            fitted[target] = np.linalg.lstsq(x.reshape(-1, x.shape[2]), healthy[target].ravel(), rcond=None)[0]
        prediction = _regressors(columns, target) @ fitted[target]
        return (columns[target] - prediction)[:, :, None]

    return stat


def _late_lead_up(columns: Columns, mode: FailureMode, window: int) -> np.ndarray:
    """[steps, cars]: windows that end in the last third of a lead-up of `mode`, all of their readings in it."""
    leading = (columns.phase == Phase.LEAD_UP) & (columns.mode == mode)
    whole = _window_mean(leading.astype(np.float64), window) == 1.0
    progress = (columns.severity / LEAD_UP_PEAK) ** (1.0 / LEAD_UP_EXPONENT)
    return whole & leading & (progress >= LATE)


def _snr(columns: Columns, mode: FailureMode, stat: np.ndarray, healthy: np.ndarray, window: int) -> tuple:
    late = _late_lead_up(columns, mode, window)
    failing = _window_mean(stat, window)
    # the affected corner where the statistic is per corner; healthy cars pool all of theirs
    affected = np.take_along_axis(failing, np.minimum(columns.corner, stat.shape[2] - 1)[:, :, None], axis=2)[:, :, 0]
    normal = _window_mean(healthy, window)
    normal = normal[np.isfinite(normal)]
    shift = float(affected[late].mean() - normal.mean())
    return shift, float(normal.std()), int(late.sum())


SHOCK = FailureMode.SHOCK_ABSORBER
STATISTICS = (
    (FailureMode.TIRE_PRESSURE_LOSS, "tire pressure - axle partner's", "psi", _corner_stat(TIRES, lambda x: x)),
    (SHOCK, "log(accelerometer RMS / axle partner's)", "1", _corner_stat(ACCELEROMETERS, np.log)),
    (SHOCK, "log(accelerometer peak / axle partner's)", "1", _corner_stat(ACCELEROMETER_PEAKS, np.log)),
    (FailureMode.DRIVE_SHAFT, "engine vibration - healthy fit", "1", _residual("engine_vibration_amplitude")),
    (FailureMode.COOLANT_OVERHEATING, "coolant temp - healthy fit", "degC", _residual("coolant_temp")),
    (FailureMode.BATTERY_CELL, "battery voltage - healthy fit", "V", _residual("battery_voltage")),
)


def measure(cars: int = 1000, readings: int = 360, seed: int = 7, window: int = 10) -> list[Row]:
    columns = record(cars, readings, seed)
    rows = []
    for mode, name, unit, stat in STATISTICS:
        if "fit" in name:
            failing, healthy = stat(columns.failing, columns.healthy), stat(columns.healthy, columns.healthy)
        else:
            failing, healthy = stat(columns.failing), stat(columns.healthy)
        one = _snr(columns, mode, failing, healthy, 1)
        many = _snr(columns, mode, failing, healthy, window)
        onsets = (columns.phase[1:] == Phase.FAILED) & (columns.phase[:-1] == Phase.LEAD_UP)
        leads = int((onsets & (columns.mode[1:] == mode)).sum())
        rows.append(Row(mode.name.lower(), name, unit, many[0], many[1], one[0] / one[1], many[0] / many[1], leads))
    return rows


def table(rows: list[Row], window: int) -> str:
    lines = [
        f"| mode | statistic | shift (W={window}) | healthy spread (W={window}) | SNR, one reading | SNR, W={window} "
        "| lead-ups |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = "" if r.unit == "1" else f" {r.unit}"
        lines.append(
            f"| {r.mode.replace('_', ' ')} | {r.statistic} | {r.shift:+.3g}{unit} | {r.noise:.3g}{unit} | "
            f"{r.snr_reading:+.2f} | {r.snr_window:+.2f} | {r.lead_ups} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.studies.failure_snr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cars", type=int, default=1000)
    parser.add_argument("--readings", type=int, default=360, help="readings per car (one per 10 s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window", type=int, default=10, help="readings per window (W)")
    args = parser.parse_args(argv)
    print(table(measure(args.cars, args.readings, args.seed, args.window), args.window))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
