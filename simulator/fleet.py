"""The physical model of a fleet of cars, simulated all at once with numpy (state arrays of shape [cars]).

One `Fleet.step()` advances every car by one reading interval and returns one reading per car. Relations the
model keeps: speed follows throttle with inertia; engine vibration scales with speed; coolant temperature
follows current draw with a lag; the battery drains with use (and recharges when low) and its voltage follows
the charge; the accelerometers report each corner's RMS and peak over the interval, from the road and its bumps
(simulator/suspension.py); firmware is 1000 or 2000. Failure modes (simulator/failures.py)
shift the sensors they affect progressively, and every sensor carries noise. See simulator/README.md.

`generate_readings()` is the data API for training and tests: no MQTT, deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import ConfigError
from common.schemas import INT_SENSOR_FIELDS, SENSOR_FIELDS, SENSOR_RANGES
from common.topics import car_id
from simulator import suspension
from simulator.failures import FailureMode, FailureState, reported_modes

DEFAULT_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: offline data do not depend on the clock
TIRES = ("tire_pressure_1_1", "tire_pressure_1_2", "tire_pressure_2_1", "tire_pressure_2_2")
CORNERS = ("1_1", "1_2", "2_1", "2_2")
"""Front left, front right, rear left, rear right; a corner's axle partner is the other of its axle."""
ACCELEROMETERS = tuple(f"accelerometer_{corner}_value" for corner in CORNERS)
"""Each corner's RMS vertical acceleration over the interval (simulator/suspension.py)."""
ACCELEROMETER_PEAKS = tuple(f"accelerometer_{corner}_peak" for corner in CORNERS)
"""Each corner's peak vertical acceleration over the interval."""
DAMPING_LOSS = 0.8
"""A worn shock absorber keeps 1 - 0.8 x severity of its damping: 44 % at the end of the lead-up, 20 % failed."""
SHAFT_IMBALANCE = 2500.0
"""Vibration a failed drive shaft adds at 100 km/h (arbitrary units; the imbalance's force grows with speed^2): a
modelling choice, simulator/README.md."""
COOLING_LOSS = 0.85
"""A failing cooling circuit sheds 1 - 0.85 x severity of the heat a healthy one does (a modelling choice)."""
# Decimals kept per sensor: enough for the physics, short on the wire.
DECIMALS = {name: 2 for name in SENSOR_FIELDS} | {"throttle_pos": 3, "battery_voltage": 3}
DECIMALS |= dict.fromkeys(ACCELEROMETERS + ACCELEROMETER_PEAKS, 3)


@dataclass(frozen=True)
class FleetConfig:
    """How the fleet behaves. Times are simulated seconds."""

    interval_s: float = 10.0
    """Simulated seconds between two readings of one car (the seed sent one every 10 s)."""
    failure_rate: float = 1.3
    """Failure lead-ups started per car per simulated hour of healthy running."""
    lead_up_s: tuple[float, float] = (300.0, 900.0)
    """Range of lead-up spans: how long before a failure its sensors start to drift."""
    failure_s: tuple[float, float] = (60.0, 180.0)
    """Range of failure spans: how long readings carry failure_occurred=true before the repair."""
    start_time_ms: int = DEFAULT_START_MS
    """event_time of the first reading of car-00001."""

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ConfigError(f"interval_s must be > 0, got {self.interval_s}")
        if self.failure_rate < 0:
            raise ConfigError(f"failure_rate must be >= 0, got {self.failure_rate}")
        for name in ("lead_up_s", "failure_s"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(f"{name} must be a range (low, high) with 0 < low <= high, got {(low, high)}")

    @classmethod
    def from_options(cls, **options: Any) -> FleetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown fleet option(s) {unknown}; known: {sorted(known)}")
        return cls(**options)


@dataclass
class FleetStep:
    """One reading per car: sensor columns, labels, and the ground truth behind them (for tests and docs)."""

    seq: int
    event_time_ms: np.ndarray
    values: dict[str, np.ndarray]
    failure: np.ndarray
    new_failure: np.ndarray
    """True where this reading is the first of a failure episode (for counting episodes)."""
    mode: np.ndarray
    phase: np.ndarray
    severity: np.ndarray
    corner: np.ndarray
    """The tire / suspension corner (0..3) a tire or shock absorber failure acts on."""

    def readings(self, car_ids: list[str], start: int = 0, stop: int | None = None) -> Iterator[dict]:
        """Reading dicts (schema field order, plain Python types) for cars [start, stop)."""
        window = slice(start, stop)
        columns = [self.values[name][window].tolist() for name in SENSOR_FIELDS]
        times = self.event_time_ms[window].tolist()
        failures = self.failure[window].tolist()
        modes = reported_modes(self.mode[window], self.failure[window])
        for car, when, failed, mode, *sensors in zip(car_ids[window], times, failures, modes, *columns, strict=True):
            reading = {"car_id": car, "seq": self.seq, "event_time": when}
            reading.update(zip(SENSOR_FIELDS, sensors, strict=True))
            reading["failure_occurred"] = failed
            reading["failure_mode"] = mode
            yield reading


@dataclass
class Fleet:
    """The state of every car, advanced one reading interval per `step()`."""

    cars: int
    seed: int = 42
    config: FleetConfig = field(default_factory=FleetConfig)

    def __post_init__(self) -> None:
        if self.cars < 1:
            raise ConfigError(f"cars must be >= 1, got {self.cars}")
        n = self.cars
        self.rng = np.random.default_rng(self.seed)
        rng = self.rng
        self.car_ids = [car_id(i + 1) for i in range(n)]
        self.seq = 0
        # Fixed per car.
        self.firmware = rng.choice(np.array([1000, 2000], dtype=np.int64), n)
        self.ambient = rng.uniform(-5.0, 32.0, n)
        self.top_speed = rng.uniform(160.0, 220.0, n)
        self.cruise = rng.uniform(0.25, 0.6, n)
        self.capacity_ah = rng.uniform(120.0, 180.0, n)
        self.tire_base = rng.uniform(30.0, 36.0, (n, 1)) + rng.normal(0.0, 0.4, (n, 4))
        self.damping = suspension.healthy_damping(rng, n)
        # Evolving.
        self.driving = rng.random(n) < 0.9
        self.charging = np.zeros(n, bool)
        self.throttle = np.where(self.driving, self.cruise, 0.0)
        self.speed = self.top_speed * self.throttle
        self.soc = rng.uniform(40.0, 100.0, n)
        self.coolant = rng.uniform(70.0, 90.0, n)
        self.roughness = np.ones(n)
        self.failures = FailureState.healthy(n)
        self.was_failed = np.zeros(n, bool)
        # Readings within one step are spread evenly over the interval, car by car: event-time order.
        self.offset_ms = np.arange(n) * (self.config.interval_s * 1000.0 / n)

    def step(self) -> FleetStep:
        cfg, rng, n = self.config, self.rng, self.cars
        dt = cfg.interval_s
        noise = lambda: rng.standard_normal(n)  # noqa: E731 - one fresh draw per call keeps the code readable

        self.failures.advance(rng, dt, cfg.failure_rate, cfg.lead_up_s, cfg.failure_s)
        severity = self.failures.severity()
        tire_sev = self.failures.severity_of(FailureMode.TIRE_PRESSURE_LOSS, severity)
        shock_sev = self.failures.severity_of(FailureMode.SHOCK_ABSORBER, severity)
        shaft_sev = self.failures.severity_of(FailureMode.DRIVE_SHAFT, severity)
        cool_sev = self.failures.severity_of(FailureMode.COOLANT_OVERHEATING, severity)
        batt_sev = self.failures.severity_of(FailureMode.BATTERY_CELL, severity)
        failed = self.failures.failed

        # Driving pattern: trips of ~20 min and stops of ~2 min; a nearly empty battery stops the car to recharge.
        stop_draw, start_draw = rng.random(n), rng.random(n)
        self.charging = (self.soc < 12.0) | (self.charging & (self.soc < 90.0))
        stops = self.driving & (stop_draw < 1 - np.exp(-dt / 1200.0))
        starts = ~self.driving & (start_draw < 1 - np.exp(-dt / 120.0))
        self.driving = (self.driving & ~stops) | starts
        self.driving &= ~self.charging

        # Throttle: a mean-reverting walk around each car's cruising level; closed when stopped, limp when failed.
        keep = np.exp(-dt / 30.0)
        walk = self.cruise + keep * (self.throttle - self.cruise) + 0.15 * np.sqrt(1 - keep**2) * noise()
        self.throttle = np.clip(np.where(self.driving, walk, 0.0), 0.0, 1.0)
        self.throttle = np.where(failed, np.minimum(self.throttle, 0.15), self.throttle)

        # Speed follows throttle with inertia; decelerating recovers current (negative draw).
        target = self.top_speed * self.throttle
        new_speed = target + np.exp(-dt / 20.0) * (self.speed - target)
        accel = (new_speed - self.speed) / dt  # km/h per second
        mean_speed = 0.5 * (self.speed + new_speed)  # over the interval: what the per-interval statistics see
        self.speed = new_speed
        moving_draw = 15.0 + 260.0 * self.throttle + 0.25 * self.speed + 30.0 * np.minimum(accel, 0.0)
        current = np.select([self.charging, self.driving], [-150.0, moving_draw], 8.0)

        # Battery: drains with use (faster with degraded cells, which hold less), voltage follows the charge.
        used_percent = current * dt / 3600.0 / self.capacity_ah * 100.0
        self.soc = np.clip(self.soc - used_percent * (1.0 + 1.5 * batt_sev), 0.0, 100.0)
        open_circuit = 11.6 + 1.3 * self.soc / 100.0
        voltage = open_circuit - (0.003 + 0.012 * batt_sev) * current - 1.2 * batt_sev

        # Coolant follows the engine's heat (the current draw) with a lag; a failing cooling circuit sheds less of
        # it, so its equilibrium rises the more the engine works (and hardly at all while it idles).
        heat = 5.0 + 0.1 * np.maximum(current, 0.0)
        coolant_target = 65.0 + heat / (1.0 - COOLING_LOSS * cool_sev)
        self.coolant = coolant_target + np.exp(-dt / 90.0) * (self.coolant - coolant_target)

        # Vibration (its RMS over the interval) scales with speed; a worn drive shaft adds the shake of an
        # imbalance, a force growing with the square of the shaft's speed: none while the car stands still.
        smooth = np.where(self.firmware == 2000, 0.95, 1.0)
        vibration = (60.0 + 9.0 * mean_speed + 120.0 * self.throttle) * smooth
        vibration = vibration + shaft_sev * SHAFT_IMBALANCE * np.square(mean_speed / 100.0)
        vibration = vibration * (1.0 + 0.08 * noise()) + 20.0 * noise()

        values: dict[str, np.ndarray] = {
            "coolant_temp": self.coolant + 0.8 * noise(),
            "intake_air_temp": self.ambient + 10.0 + 0.12 * (self.coolant - 70.0) - 0.03 * self.speed + noise(),
            "intake_air_flow_speed": 3.0 + 160.0 * self.throttle + 0.4 * self.speed + 3.0 * noise(),
            "battery_percentage": self.soc + 0.1 * noise(),
            "battery_voltage": voltage + 0.08 * noise(),
            "current_draw": current + 4.0 * noise(),
            "speed": self.speed + 1.0 * noise() * (self.speed > 0.5),
            "engine_vibration_amplitude": vibration,
            "throttle_pos": self.throttle + 0.01 * noise(),
        }
        values.update(self._tires(tire_sev))
        values.update(self._accelerometers(shock_sev, mean_speed))
        values["control_unit_firmware"] = self.firmware
        step = FleetStep(
            seq=self.seq,
            event_time_ms=(cfg.start_time_ms + self.seq * dt * 1000.0 + self.offset_ms).astype(np.int64),
            values=_finish(values),
            failure=failed.copy(),
            new_failure=failed & ~self.was_failed,
            mode=self.failures.mode.copy(),
            phase=self.failures.phase.copy(),
            severity=severity,
            corner=self.failures.corner.copy(),
        )
        self.was_failed = failed.copy()
        self.seq += 1
        return step

    def _tires(self, tire_sev: np.ndarray) -> dict[str, np.ndarray]:
        """Tires warm (and gain pressure) with speed; a leaking tire loses pressure towards 10 psi."""
        leaking = self.failures.corner[:, None] == np.arange(4)
        loss = np.where(leaking, tire_sev[:, None], 0.0) * (self.tire_base - 10.0)
        pressure = self.tire_base + 0.015 * self.speed[:, None] - loss
        pressure = pressure + 0.7 * self.rng.standard_normal(pressure.shape)
        return {name: pressure[:, i] for i, name in enumerate(TIRES)}

    def _accelerometers(self, shock_sev: np.ndarray, mean_speed: np.ndarray) -> dict[str, np.ndarray]:
        """Each corner's RMS and peak over the interval (simulator/suspension.py) on a road whose roughness wanders;
        a worn shock absorber has lost damping in proportion to its severity."""
        rng, n = self.rng, self.cars
        keep = np.exp(-self.config.interval_s / 300.0)
        self.roughness = np.clip(
            1.0 + keep * (self.roughness - 1.0) + 0.3 * np.sqrt(1 - keep**2) * rng.standard_normal(n), 0.4, 2.5
        )
        worn = self.failures.corner[:, None] == np.arange(4)
        damping = self.damping * (1.0 - DAMPING_LOSS * np.where(worn, shock_sev[:, None], 0.0))
        rms, peak = suspension.accelerometers(rng, mean_speed, self.roughness, damping, self.config.interval_s)
        values = {name: rms[:, i] for i, name in enumerate(ACCELEROMETERS)}
        values.update({name: peak[:, i] for i, name in enumerate(ACCELEROMETER_PEAKS)})
        return values


def _finish(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clip to the schema's physical ranges, round, and give int fields an int dtype."""
    finished = {}
    for name in SENSOR_FIELDS:
        low, high = SENSOR_RANGES[name]
        column = np.clip(values[name], low, high)
        if name in INT_SENSOR_FIELDS:
            finished[name] = np.rint(column).astype(np.int64)
        else:
            finished[name] = np.round(column, DECIMALS[name]) + 0.0  # + 0.0 turns -0.0 into 0.0
    return finished


def generate_readings(cars: int, readings_per_car: int, seed: int = 42, **options: Any) -> Iterator[dict]:
    """Complete reading dicts (every field of schemas/car_sensor_reading.avsc) for `cars` cars, `readings_per_car`
    each, in event-time order with cars interleaved; deterministic for a seed; no MQTT.

    `options` are FleetConfig's fields: interval_s (10), failure_rate (per car per simulated hour, 1.3),
    lead_up_s ((300, 900)), failure_s ((60, 180)), start_time_ms.
    """
    if readings_per_car < 0:
        raise ConfigError(f"readings_per_car must be >= 0, got {readings_per_car}")
    fleet = Fleet(cars, seed, FleetConfig.from_options(**options))
    for _ in range(readings_per_car):
        yield from fleet.step().readings(fleet.car_ids)
