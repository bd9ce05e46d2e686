"""Settings shared by the services: one mechanism (pydantic-settings) for flags, environment and defaults.

Connection settings keep the environment names the README lists (KAFKA_BOOTSTRAP_SERVERS, MQTT_HOST, ...); each
service's own settings use the service's prefix (SIMULATOR_, BRIDGE_, ML_).

The Kafka identity (`KafkaSecurity`) is a value of a process's settings, read from the environment once, when its
entry point builds them, and handed to every Kafka client it makes (common/kafka.py): nothing else reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar, Literal

import pydantic
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.defaults import KAFKA_BOOTSTRAP_SERVERS, LOCALHOST, MQTT_PORT
from common.errors import ConfigError


def env_alias(field_name: str, env: str) -> AliasChoices:
    """Accept a setting by its field name (flags, code) and by its documented environment name."""
    return AliasChoices(field_name, env)


class StackSettings(BaseSettings):
    """Base for every service's settings: frozen, unknown environment ignored."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class KafkaSecurity(BaseModel):
    """How a process's Kafka clients authenticate. A value: `KafkaSecurity()` is PLAINTEXT, whatever the environment
    holds; `from_environment()` reads the KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
    KAFKA_SASL_PASSWORD and KAFKA_SSL_CA_LOCATION variables (never flags, which any user of the machine can read in
    `ps`), and `environment()` writes them for a child process. The password prints as ***."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ENV_PREFIX: ClassVar[str] = "KAFKA_"

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of `field`: the one place that knows the names."""
        return f"{cls.ENV_PREFIX}{field.upper()}"

    @classmethod
    def variables(cls) -> frozenset[str]:
        return frozenset(cls.variable(field) for field in cls.model_fields)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The identity the environment gives (os.environ unless `environ`); empty variables count as unset."""
        environ = os.environ if environ is None else environ
        given = {field: environ[cls.variable(field)] for field in cls.model_fields if environ.get(cls.variable(field))}
        try:
            return cls(**given)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{cls.variable(str(err['loc'][0]))}: {err['msg']}" for err in exc.errors())
            raise ConfigError(f"invalid Kafka identity in the environment: {problems}") from None

    def environment(self) -> dict[str, str]:
        """The variables that give a child process this identity (what `from_environment` reads back)."""
        values = self.model_dump(exclude_none=True)
        if self.sasl_password is not None:
            values["sasl_password"] = self.sasl_password.get_secret_value()
        return {self.variable(field): str(value) for field, value in values.items()}

    def __str__(self) -> str:
        """One line for the logs: the protocol, and who logs in with which CA (never the password)."""
        text = self.security_protocol
        if self.security_protocol.startswith("SASL"):
            text += f" ({self.sasl_mechanism}) as {self.sasl_username or '?'}"
        return text + (f" trusting {self.ssl_ca_location}" if self.ssl_ca_location else "")

    def client_config(self) -> dict[str, str]:
        """librdkafka's properties for this identity (nothing for PLAINTEXT)."""
        config: dict[str, str] = {}
        if self.security_protocol == "PLAINTEXT":
            return config
        config["security.protocol"] = self.security_protocol
        if self.security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config


PLAINTEXT = KafkaSecurity()  # no identity: what the open servers of the local runtime and the tests expect


class KafkaSettings(StackSettings):
    kafka_bootstrap_servers: str = Field(
        KAFKA_BOOTSTRAP_SERVERS,
        validation_alias=env_alias("kafka_bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, host:port[,host:port]",
    )
    schema_registry_url: str | None = Field(
        None,
        validation_alias=env_alias("schema_registry_url", "SCHEMA_REGISTRY_URL"),
        description="Confluent schema registry URL; unset means Avro single-object encoding",
    )
    # Not a flag (common/cli.py leaves a field whose value is a model out of the command line).
    kafka_security: KafkaSecurity = Field(
        default_factory=KafkaSecurity.from_environment,
        description="The Kafka identity comes from the environment only, never from a flag: "
        + ", ".join(KafkaSecurity.variable(field) for field in KafkaSecurity.model_fields)
        + " (PLAINTEXT when unset; the password is never logged).",
    )


class MqttSettings(StackSettings):
    mqtt_host: str = Field(
        LOCALHOST, validation_alias=env_alias("mqtt_host", "MQTT_HOST"), description="MQTT broker host"
    )
    mqtt_port: int = Field(
        MQTT_PORT, validation_alias=env_alias("mqtt_port", "MQTT_PORT"), description="MQTT broker port"
    )
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
