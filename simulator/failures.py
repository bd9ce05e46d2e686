"""Failure modes and their life cycle, for the whole fleet at once (numpy arrays of shape [cars]).

Each car is healthy, in a lead-up (the failure is coming: its sensors drift progressively) or failed (the
failure is happening: readings carry failure_occurred=true). After the failure the car is repaired and runs
healthy again. Which sensors each mode moves, and in which direction, is documented in simulator/README.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class FailureMode(enum.IntEnum):
    NONE = 0
    TIRE_PRESSURE_LOSS = 1
    SHOCK_ABSORBER = 2
    DRIVE_SHAFT = 3
    COOLANT_OVERHEATING = 4
    BATTERY_CELL = 5


MODES = tuple(mode for mode in FailureMode if mode is not FailureMode.NONE)
MODE_NAMES: tuple[str | None, ...] = tuple(
    None if mode is FailureMode.NONE else mode.name.lower() for mode in FailureMode
)
"""A reading's `failure_mode` by FailureMode value: what a car's diagnostics name while it fails (None when healthy)."""


def reported_modes(mode: np.ndarray, failed: np.ndarray) -> list[str | None]:
    """Per car, the `failure_mode` a reading reports: its mode's name while failed, None otherwise (a lead-up is
    never named: the car does not know yet)."""
    return [MODE_NAMES[m] for m in np.where(failed, mode, FailureMode.NONE).tolist()]


class Phase(enum.IntEnum):
    HEALTHY = 0
    LEAD_UP = 1
    FAILED = 2


# Severity at the end of the lead-up; the failure itself jumps to 1.0, so failed readings stand apart.
LEAD_UP_PEAK = 0.7
# Shape of the drift: slow at first (lost in the noise), faster near the failure.
LEAD_UP_EXPONENT = 1.5


@dataclass
class FailureState:
    """Per-car failure state. `corner` picks the tire / suspension corner (0..3) a mode acts on."""

    phase: np.ndarray
    mode: np.ndarray
    elapsed_s: np.ndarray
    lead_up_s: np.ndarray
    failure_s: np.ndarray
    corner: np.ndarray

    @classmethod
    def healthy(cls, cars: int) -> FailureState:
        return cls(
            phase=np.zeros(cars, np.int8),
            mode=np.zeros(cars, np.int8),
            elapsed_s=np.zeros(cars),
            lead_up_s=np.ones(cars),
            failure_s=np.ones(cars),
            corner=np.zeros(cars, np.int8),
        )

    def advance(
        self,
        rng: np.random.Generator,
        dt: float,
        failure_rate_per_hour: float,
        lead_up_range_s: tuple[float, float],
        failure_range_s: tuple[float, float],
    ) -> None:
        """Move every car dt seconds on: start lead-ups at random (a Poisson process), turn finished lead-ups
        into failures and finished failures into repaired, healthy cars."""
        cars = self.phase.shape[0]
        # Draws happen for every car on every step, so a car's data depend on the seed and its index only.
        onset_draw = rng.random(cars)
        mode_draw = rng.integers(1, len(MODES) + 1, cars, dtype=np.int8)
        lead_draw = rng.uniform(*lead_up_range_s, cars)
        failure_draw = rng.uniform(*failure_range_s, cars)
        corner_draw = rng.integers(0, 4, cars, dtype=np.int8)

        self.elapsed_s[self.phase != Phase.HEALTHY] += dt
        repaired = (self.phase == Phase.FAILED) & (self.elapsed_s >= self.failure_s)
        failing = (self.phase == Phase.LEAD_UP) & (self.elapsed_s >= self.lead_up_s)
        self.phase[repaired] = Phase.HEALTHY
        self.mode[repaired] = FailureMode.NONE
        self.phase[failing] = Phase.FAILED
        self.elapsed_s[failing] = 0.0

        onset_probability = 1.0 - np.exp(-failure_rate_per_hour * dt / 3600.0)
        starting = (self.phase == Phase.HEALTHY) & ~repaired & (onset_draw < onset_probability)
        self.phase[starting] = Phase.LEAD_UP
        self.mode[starting] = mode_draw[starting]
        self.elapsed_s[starting] = 0.0
        self.lead_up_s[starting] = lead_draw[starting]
        self.failure_s[starting] = failure_draw[starting]
        self.corner[starting] = corner_draw[starting]

    def severity(self) -> np.ndarray:
        """0 when healthy, rising to LEAD_UP_PEAK through the lead-up, 1 while failed."""
        progress = np.clip(self.elapsed_s / self.lead_up_s, 0.0, 1.0)
        lead = LEAD_UP_PEAK * progress**LEAD_UP_EXPONENT
        return np.select([self.phase == Phase.LEAD_UP, self.phase == Phase.FAILED], [lead, 1.0], 0.0)

    def severity_of(self, mode: FailureMode, severity: np.ndarray) -> np.ndarray:
        """The severity where a car suffers `mode`, 0 elsewhere."""
        return np.where(self.mode == mode, severity, 0.0)

    @property
    def failed(self) -> np.ndarray:
        return self.phase == Phase.FAILED
