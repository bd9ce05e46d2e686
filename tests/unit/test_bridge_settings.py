import logging
import socket

import pytest

from bridge.app import build_parser
from bridge.kafka_logs import Throttle
from bridge.metrics import Metrics
from bridge.settings import BridgeSettings
from common.cli import settings_from_args
from common.defaults import BRIDGE_METRICS_PORT
from common.errors import ConfigError


def parse(argv: list[str]) -> BridgeSettings:
    return settings_from_args(BridgeSettings, build_parser().parse_args(argv))


def test_help_names_the_environment_variables_of_the_contract():
    text = " ".join(build_parser().format_help().split())
    for env in (
        "BRIDGE_TOPIC_FILTER",
        "BRIDGE_SHARED_GROUP",
        "BRIDGE_CLIENT_ID",
        "BRIDGE_BUFFER_SIZE",
        "BRIDGE_METRICS_PORT",
        "KAFKA_BOOTSTRAP_SERVERS",
        "MQTT_HOST",
        "SCHEMA_REGISTRY_URL",
    ):
        assert f"[env: {env}]" in text


def test_defaults_subscribe_the_filter_itself_with_a_stable_client_id(monkeypatch):
    for name in ("BRIDGE_CLIENT_ID", "BRIDGE_SHARED_GROUP", "BRIDGE_TOPIC_FILTER"):
        monkeypatch.delenv(name, raising=False)
    settings = parse([])
    assert settings.subscription == "vehicles/sensor/data/+"  # a shared one is not restored by a broker restart
    assert settings.client_id == f"car-bridge-{socket.gethostname()}"
    assert settings.metrics_port == BRIDGE_METRICS_PORT


def test_environment_and_flags_set_the_subscription(monkeypatch):
    monkeypatch.setenv("BRIDGE_SHARED_GROUP", "car-bridge")
    monkeypatch.setenv("BRIDGE_CLIENT_ID", "bridge-7")
    settings = parse(["--topic-filter", "fleet/+"])
    assert (settings.subscription, settings.client_id) == ("$share/car-bridge/fleet/+", "bridge-7")


def test_buffer_size_beyond_mqtt_receive_maximum_is_a_config_error():
    with pytest.raises(ConfigError, match="--buffer-size"):
        parse(["--buffer-size", "70000"])


def test_progress_line_and_buffer_fill():
    stats = Metrics(buffer_size=200).stats
    stats.received, stats.produced, stats.in_flight, stats.bytes_held = 120, 100, 50, 3 * 2**20
    stats.rejected["malformed_json"] += 2
    assert stats.buffer_fill == 0.25
    line = stats.line()
    assert "received 120, produced 100 (0 out of range), rejected 2 (malformed_json 2)" in line
    assert "in flight 50 (25% of 200, 3.0 MiB)" in line
    stats.reading_paused = True
    assert "3.0 MiB, reading PAUSED)" in stats.line()


def test_metrics_registry_exposes_the_counters():
    metrics = Metrics(buffer_size=10)
    metrics.stats.produced = 7
    metrics.stats.rejected["bad_topic"] = 3
    metrics.produce_latency.observe(0.004)
    registry = metrics.registry
    assert registry.get_sample_value("bridge_produced_total") == 7
    assert registry.get_sample_value("bridge_rejected_total", {"error": "bad_topic"}) == 3
    assert registry.get_sample_value("bridge_produce_latency_seconds_count") == 1


def test_throttle_lets_a_repeated_message_through_once_per_interval():
    throttle = Throttle(interval=60)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, message, None, None)

    assert throttle.filter(record("FAIL broker down"))
    assert not throttle.filter(record("FAIL broker down"))
    assert throttle.filter(record("another problem"))
