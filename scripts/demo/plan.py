"""The demo's numbers: how much history to collect for training, and how fast the live fleet runs.

Training needs failure episodes, and a car fails about 1.3 times per simulated hour (simulator/fleet.py), so a
few minutes of wall time only hold enough of them when simulated time runs fast. The demo therefore has two
fleets on the same pipeline:

- a history fleet (300 cars x 300 readings, 50 simulated minutes each: about 220 failure episodes) published
  as fast as the pipeline takes it, through MQTT, the bridge and Kafka; the model trains from that stretch of
  `car-sensor`. Sized by measurement (ml/README.md, "Training size"): with 150 cars gradient boosting beat the
  LSTM on one of four fleets and the 30 test cars held too few episodes to judge alerts; with 300 the LSTM was
  ahead on each of four, and the fit takes 30-60 s; 150 cars x 600 readings did worse than 300 x 300;
- the live fleet (CARS cars), whose readings get live predictions. Its speedup lets failures happen within the
  demo: up to 60x (a reading every 1/6 s per car), lowered for large fleets so that the whole fleet stays
  within `max_rate` readings/s (CARS=100,000 at the default 2,000/s: one reading per car every 50 s).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError

READINGS_PER_SIMULATED_SECOND = 0.1  # one reading per car every 10 simulated seconds, as the seed's cars sent
MAX_LIVE_SPEEDUP = 60.0
MIN_LIVE_SECONDS = 30.0
MAX_CARS = 100_000


@dataclass(frozen=True)
class DemoPlan:
    cars: int
    duration: float
    history_cars: int
    history_readings_per_car: int
    live_speedup: float

    @property
    def history_count(self) -> int:
        return self.history_cars * self.history_readings_per_car

    @property
    def live_rate(self) -> float:
        """Readings per wall-clock second of the live fleet."""
        return self.cars * READINGS_PER_SIMULATED_SECOND * self.live_speedup

    def live_seconds(self, elapsed: float) -> float:
        """What is left of the duration after `elapsed` seconds of history and training; at least 30 s (or half
        the duration, when that is shorter)."""
        return max(min(MIN_LIVE_SECONDS, self.duration / 2), self.duration - elapsed)

    def describe(self) -> str:
        per_car = 1 / (READINGS_PER_SIMULATED_SECOND * self.live_speedup)
        cars = f"{self.cars:,} car{'s' if self.cars != 1 else ''}"
        return (
            f"history: {self.history_cars} cars x {self.history_readings_per_car} readings for training; "
            f"live: {cars} at {self.live_speedup:g}x simulated time (a reading per car every "
            f"{per_car:.2g} s, {self.live_rate:,.0f} readings/s)"
        )


HISTORY_CARS = 300
HISTORY_READINGS_PER_CAR = 300


def make_plan(
    cars: int,
    duration: float,
    max_rate: float = 2000.0,
    speedup: float | None = None,
    history_cars: int = HISTORY_CARS,
    history_readings_per_car: int = HISTORY_READINGS_PER_CAR,
) -> DemoPlan:
    if not 1 <= cars <= MAX_CARS:
        raise ConfigError(f"CARS must be between 1 and {MAX_CARS:,}, got {cars}")
    if duration <= 0:
        raise ConfigError(f"DURATION must be > 0 seconds, got {duration}")
    if max_rate <= 0:
        raise ConfigError(f"--max-rate must be > 0, got {max_rate}")
    if speedup is None:
        speedup = min(MAX_LIVE_SPEEDUP, max_rate / (cars * READINGS_PER_SIMULATED_SECOND))
    if speedup <= 0:
        raise ConfigError(f"--speedup must be > 0, got {speedup}")
    return DemoPlan(cars, duration, history_cars, history_readings_per_car, speedup)
