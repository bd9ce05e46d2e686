"""The bridge's settings: flags, BRIDGE_* environment variables, defaults (see `python -m bridge --help`)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bridge.validation import RangePolicy
from common.defaults import BRIDGE_METRICS_PORT, LOCALHOST
from common.settings import KafkaSettings, MqttSettings
from common.topics import DLQ_TOPIC, MQTT_TOPIC_FILTER, READINGS_TOPIC, TOPIC_PARTITIONS


def default_client_id() -> str:
    """Stable across restarts of one host (the persistent session is found again), distinct between hosts."""
    return f"car-bridge-{socket.gethostname()}"


class BridgeSettings(KafkaSettings, MqttSettings):
    model_config = SettingsConfigDict(env_prefix="BRIDGE_")

    topic_filter: str = Field(MQTT_TOPIC_FILTER, description="MQTT topic filter to read; the last level is the car id")
    shared_group: str = Field(
        "",
        description="MQTT 5 shared subscription group ($share/<group>/<filter>) for running several bridges that "
        "split the load; empty (the default) subscribes the filter itself, which Mosquitto 2.0 restores after a "
        "restart (a shared subscription it does not: readings published before the bridges subscribe again are "
        "dropped, see bridge/README.md)",
    )
    client_id: str = Field(
        "",
        validate_default=True,
        description="MQTT client id of the persistent session; keep it fixed across restarts, distinct per instance; "
        "empty means car-bridge-<hostname>",
    )
    buffer_size: int = Field(
        10_000,
        ge=1,
        le=65_535,
        description="Messages held between MQTT receipt and Kafka's confirmation (sent as MQTT Receive Maximum: "
        "when full, the broker keeps further messages for the session)",
    )
    max_buffer_bytes: int = Field(
        64 * 2**20,
        ge=2**20,
        description="Bytes of messages held between MQTT receipt and Kafka's confirmation; above it the bridge "
        "stops reading MQTT until Kafka confirmed enough (the broker holds the rest)",
    )
    topic_cache_bytes: int = Field(
        8 * 2**20,
        ge=0,
        description="Bytes of valid topic names remembered, so that checking a known car's topic is a look-up",
    )
    park_file: Path = Field(
        Path("bridge-parked.jsonl"),
        description="Where rejected messages go when the DLQ refuses them for good (JSON lines; bridge/README.md)",
    )
    park_max_bytes: int = Field(
        256 * 2**20, ge=0, description="Size bound of the parking file; beyond it refused DLQ records are held"
    )
    stall_seconds: float = Field(
        60.0, gt=0, description="Liveness (/healthz) fails when the processing loop has not turned for this long"
    )
    session_expiry: int = Field(
        86_400, ge=1, description="Seconds the broker keeps the session (and queues messages) while the bridge is away"
    )
    keepalive: int = Field(30, ge=5, description="MQTT keepalive, seconds")
    max_payload_bytes: int = Field(65_536, ge=64, description="Larger payloads are rejected to the DLQ")
    range_policy: RangePolicy = Field(
        RangePolicy.FLAG,
        description="A well-formed reading with a value outside its plausibility range (the schema's 'range', in "
        "the simulator's units): flag = forward it, naming the fields in out_of_range; reject = send it to the DLQ "
        "(out_of_range); off = forward it, check no range",
    )
    kafka_topic: str = Field(READINGS_TOPIC, description="Kafka topic for valid readings (key = car_id, Avro)")
    dlq_topic: str = Field(DLQ_TOPIC, description="Kafka topic for rejected payloads (original bytes, error headers)")
    partitions: int = Field(
        TOPIC_PARTITIONS[READINGS_TOPIC],
        ge=1,
        description="Partitions for the Kafka topics when the bridge creates them",
    )
    metrics_port: int = Field(
        BRIDGE_METRICS_PORT, ge=0, le=65_535, description="Prometheus metrics port; 0 turns the endpoint off"
    )
    metrics_host: str = Field(
        LOCALHOST, description="Address the metrics and health endpoint binds to (0.0.0.0: every interface)"
    )
    log_interval: float = Field(10.0, gt=0, description="Seconds between progress log lines")
    reconnect_max_delay: float = Field(30.0, gt=0, description="Longest wait between MQTT reconnect attempts, seconds")
    shutdown_timeout: float = Field(30.0, gt=0, description="On SIGTERM, how long to wait for Kafka to confirm")

    @field_validator("client_id")
    @classmethod
    def _default_client_id(cls, value: str) -> str:
        return value or default_client_id()

    @property
    def subscription(self) -> str:
        return f"$share/{self.shared_group}/{self.topic_filter}" if self.shared_group else self.topic_filter
