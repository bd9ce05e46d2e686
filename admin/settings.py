"""Settings of `python -m admin`: flags, ADMIN_* environment variables, defaults (in that order). The Kafka
connection and identity are the services' (KAFKA_BOOTSTRAP_SERVERS; admin's KAFKA_SASL_* from its env file)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from admin.policy import SECURED_TOPICS
from common.errors import ConfigError
from common.settings import KafkaSettings


def parse_topics(text: str) -> dict[str, int]:
    """`NAME=PARTITIONS[,NAME=PARTITIONS]` as {name: partitions}."""
    topics = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.rpartition("=")
        if not sep or not name or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{item!r} is not NAME=PARTITIONS with PARTITIONS >= 1")
        topics[name] = int(count)
    if not topics:
        raise ValueError("no topic named")
    return topics


NOT_ADMIN_SETTINGS = ("schema_registry_url",)  # a KafkaSettings field that admin never uses


class AdminSettings(KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="ADMIN_", frozen=True, populate_by_name=True, extra="ignore")

    users_file: Path | None = Field(
        None,
        description="JSON file of the service users' Kafka passwords, {user: password} (the secured material's "
        "kafka-users.json; readable by the admin only); required",
    )
    topics: str = Field(
        ",".join(f"{name}={count}" for name, count in SECURED_TOPICS.items()),
        description="Topics to create, with their partitions: NAME=PARTITIONS[,NAME=PARTITIONS]",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for each of Kafka's answers")

    @field_validator("topics")
    @classmethod
    def _topics_parse(cls, value: str) -> str:
        parse_topics(value)
        return value

    def topic_partitions(self) -> dict[str, int]:
        return parse_topics(self.topics)

    def passwords(self) -> dict[str, str]:
        """The service users' passwords from `users_file`."""
        if self.users_file is None:
            raise ConfigError(
                "no users file: set --users-file or ADMIN_USERS_FILE to the material's kafka-users.json "
                "(python -m scripts.runtime.secured init writes it)"
            )
        try:
            passwords = json.loads(self.users_file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the users file {self.users_file}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the users file {self.users_file} is not JSON: {exc}") from None
        if not isinstance(passwords, dict) or not all(isinstance(v, str) for v in passwords.values()):
            raise ConfigError(f"the users file {self.users_file} is not a JSON object of user: password")
        return passwords
