"""Settings shared by the services: one mechanism (pydantic-settings) for flags, environment and defaults.

Connection settings keep the environment names the README lists (KAFKA_BOOTSTRAP_SERVERS, MQTT_HOST, ...); each
service's own settings use the service's prefix (SIMULATOR_, BRIDGE_, ML_).
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def env_alias(field_name: str, env: str) -> AliasChoices:
    """Accept a setting by its field name (flags, code) and by its documented environment name."""
    return AliasChoices(field_name, env)


class StackSettings(BaseSettings):
    """Base for every service's settings: frozen, unknown environment ignored."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class KafkaSettings(StackSettings):
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=env_alias("kafka_bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, host:port[,host:port]",
    )
    schema_registry_url: str | None = Field(
        None,
        validation_alias=env_alias("schema_registry_url", "SCHEMA_REGISTRY_URL"),
        description="Confluent schema registry URL; unset means Avro single-object encoding",
    )


class MqttSettings(StackSettings):
    mqtt_host: str = Field(
        "127.0.0.1", validation_alias=env_alias("mqtt_host", "MQTT_HOST"), description="MQTT broker host"
    )
    mqtt_port: int = Field(1883, validation_alias=env_alias("mqtt_port", "MQTT_PORT"), description="MQTT broker port")
    mqtt_username: str | None = Field(
        None, validation_alias=env_alias("mqtt_username", "MQTT_USERNAME"), description="MQTT user name"
    )
    mqtt_password: SecretStr | None = Field(
        None, validation_alias=env_alias("mqtt_password", "MQTT_PASSWORD"), description="MQTT password"
    )
    mqtt_tls: bool = Field(
        False, validation_alias=env_alias("mqtt_tls", "MQTT_TLS"), description="Use TLS to the MQTT broker"
    )
    mqtt_ca_file: str | None = Field(
        None, validation_alias=env_alias("mqtt_ca_file", "MQTT_CA_FILE"), description="CA bundle for MQTT TLS"
    )

    def configure_client(self, client) -> None:
        """Log a paho client in with these credentials, over TLS that verifies the broker when asked."""
        if self.mqtt_username:
            password = self.mqtt_password.get_secret_value() if self.mqtt_password else None
            client.username_pw_set(self.mqtt_username, password)
        if self.mqtt_tls:
            from common.security import client_tls_context

            client.tls_set_context(client_tls_context(self.mqtt_ca_file))
