import argparse

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.cli import add_settings_arguments, describe, settings_from_args
from common.errors import ConfigError
from common.settings import KafkaSettings, MqttSettings


class DemoSettings(KafkaSettings, MqttSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")
    cars: int = Field(25, ge=1, description="number of cars")
    verbose: bool = Field(False, description="say more")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, DemoSettings)
    return settings_from_args(DemoSettings, parser.parse_args(argv)), parser


def test_help_names_each_environment_variable():
    _, parser = parse([])
    text = " ".join(parser.format_help().split())
    for env in ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_HOST", "MQTT_PORT", "SCHEMA_REGISTRY_URL", "DEMO_CARS"):
        assert f"[env: {env}]" in text


def test_flag_beats_environment_beats_default(monkeypatch):
    assert parse([])[0].cars == 25
    monkeypatch.setenv("DEMO_CARS", "40")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    settings = parse([])[0]
    assert (settings.cars, settings.kafka_bootstrap_servers) == (40, "kafka:9092")
    assert parse(["--cars", "3", "--verbose"])[0].cars == 3


def test_invalid_value_is_a_config_error_naming_the_flag():
    with pytest.raises(ConfigError, match="--cars"):
        parse(["--cars", "0"])


def test_describe_masks_secrets(monkeypatch):
    monkeypatch.setenv("MQTT_PASSWORD", "hunter2")
    text = describe(parse([])[0])
    assert "hunter2" not in text and "mqtt_password=**********" in text
