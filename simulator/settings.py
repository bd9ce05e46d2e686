"""Settings of `python -m simulator` (live, replay, offline): flags, SIMULATOR_* environment variables, defaults."""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.defaults import FLEET_CARS
from common.errors import ConfigError
from common.settings import MqttSettings, StackSettings
from simulator.fleet import FleetConfig

_CONFIG = SettingsConfigDict(env_prefix="SIMULATOR_", env_ignore_empty=True)


class FleetSettings(StackSettings):
    """What the simulated fleet looks like: shared by the live and the offline mode."""

    model_config = _CONFIG
    cars: int = Field(FLEET_CARS, ge=1, le=10_000_000, description="number of simulated cars (car-00001, ...)")
    rate: float = Field(0.1, gt=0, description="readings per second per car, in simulated time (0.1 = one per 10 s)")
    seed: int = Field(42, description="random seed: the same seed gives the same readings")
    failure_rate: float = Field(
        FleetConfig.failure_rate, ge=0, description="failure lead-ups started per car per simulated hour"
    )
    count: int | None = Field(None, ge=1, description="stop after this many readings in total (all cars together)")

    def fleet_config(self, start_time_ms: int | None = None) -> FleetConfig:
        extra = {} if start_time_ms is None else {"start_time_ms": start_time_ms}
        return FleetConfig(interval_s=1.0 / self.rate, failure_rate=self.failure_rate, **extra)


class PublishSettings(MqttSettings):
    """How readings travel to the MQTT broker: shared by the live and the replay mode."""

    model_config = _CONFIG
    qos: int = Field(1, ge=0, le=1, description="MQTT QoS of the readings: 0 (at most once) or 1 (at least once)")
    # One connection carries 10,000 msg/s with room to spare, and more cost CPU per message: a bare paho loop
    # publishing QoS 1 over 4 connections took 37-41 us per message against 31-33 us over one (same runs).
    connections: int = Field(
        1, ge=1, le=100_000, description="MQTT connections carrying the fleet (cars are spread over them)"
    )
    speedup: float = Field(1.0, gt=0, description="simulated time runs this many times faster than wall time")
    client_id: str = Field("simulator", description="prefix of the MQTT client ids (suffixed with pid and number)")
    fleet_secret: SecretStr | None = Field(
        None,
        description="secured mode: each car logs in as itself (user = car id) with the password derived from this "
        "secret, one connection per car; set it in the environment (SIMULATOR_FLEET_SECRET), not as a flag",
    )
    window: int = Field(
        10_000, ge=1, le=60_000, description="messages per connection sent but not yet acknowledged, at most"
    )
    drain_timeout: float = Field(30.0, ge=0, description="seconds to wait for in-flight QoS 1 messages when stopping")
    progress: bool = Field(True, description="show a live progress line (on a terminal; logs every 10 s otherwise)")
    summary_file: Path | None = Field(None, description="write the run's summary as JSON to this file")


class LiveSettings(FleetSettings, PublishSettings):
    model_config = _CONFIG
    duration: float | None = Field(None, gt=0, description="stop after this many wall-clock seconds")
    start_time: int | None = Field(
        None, ge=0, description="event_time of the first reading, epoch ms (default: now, the wall clock)"
    )


class ReplayPace(enum.StrEnum):
    RECORDED = "recorded"
    MAX = "max"


class ReplaySettings(PublishSettings):
    model_config = _CONFIG
    pace: ReplayPace = Field(
        ReplayPace.RECORDED, description="recorded: keep the file's time gaps (divided by --speedup); max: no pauses"
    )


class OfflineFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class OfflineSettings(FleetSettings):
    model_config = _CONFIG
    out: Path = Field(..., description="file to write (.csv, or .jsonl for JSON lines)")
    format: OfflineFormat | None = Field(None, description="csv or jsonl (default: from the file name's suffix)")
    duration: float | None = Field(None, gt=0, description="simulated seconds to cover (or give --count)")
    start_time: int | None = Field(
        None, ge=0, description="event_time of the first reading, epoch ms (default: 2024-01-01T00:00:00Z)"
    )

    @property
    def resolved_format(self) -> OfflineFormat:
        if self.format is not None:
            return self.format
        suffix = self.out.suffix.lower().lstrip(".")
        if suffix in ("jsonl", "ndjson", "json"):
            return OfflineFormat.JSONL
        if suffix == "csv":
            return OfflineFormat.CSV
        raise ConfigError(f"cannot tell the format of {self.out}: name it .csv or .jsonl, or give --format")
