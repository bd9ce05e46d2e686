"""Kafka helpers: client configuration and topic creation, with confluent-kafka."""

from __future__ import annotations

import logging
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from common.errors import KafkaError
from common.settings import StackSettings

log = logging.getLogger(__name__)


class KafkaSecurity(StackSettings):
    """How every Kafka client of a process authenticates: from the environment only (KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION), never from flags,
    which any user of the machine can read in `ps`."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore", env_ignore_empty=True)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None

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


def client_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """The base of every client: the servers and this process's identity (KafkaSecurity)."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, **KafkaSecurity().client_config()}
    config.update(overrides)
    return config


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """A producer that neither loses nor duplicates on retry: idempotent, acks from all in-sync replicas."""
    config = {
        **client_config(bootstrap_servers),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    config.update(overrides)
    return config


def consumer_config(bootstrap_servers: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    config = {
        **client_config(bootstrap_servers),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    config.update(overrides)
    return config


def ensure_topics(bootstrap_servers: str, partitions: dict[str, int], timeout: float = 30.0, **overrides: Any) -> None:
    """Create the topics that do not exist yet (replication 1 on the local single node)."""
    admin = AdminClient(client_config(bootstrap_servers, **overrides))
    existing = admin.list_topics(timeout=timeout).topics
    wanted = [NewTopic(name, count, 1) for name, count in partitions.items() if name not in existing]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s (%d partitions)", name, partitions[name])
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaError(f"cannot create topic {name}: {error.str()}", error.code()) from exc
