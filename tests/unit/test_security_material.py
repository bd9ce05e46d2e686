"""The secured mode's material: Mosquitto's password format checked against `mosquitto_passwd` itself, car
passwords, the Kafka identity a process reads from its environment, and the files' modes."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import ResourcePatternType, ResourceType

from admin.kafka_rules import acl_bindings
from admin.policy import KAFKA_ACLS, KAFKA_SERVICE_USERS, Grant
from admin.settings import AdminSettings
from common.cli import add_settings_arguments, settings_from_args
from common.errors import ConfigError
from common.security import car_password, mosquitto_password_line
from common.settings import PLAINTEXT, KafkaSecurity, KafkaSettings
from common.topics import (
    DLQ_TOPIC,
    ML_READER_GROUP_PREFIX,
    MODEL_DECISIONS_TOPIC,
    PREDICTIONS_TOPIC,
    PREDICTOR_GROUP,
    READINGS_TOPIC,
    SHADOW_PREDICTIONS_TOPIC,
    STREAMS_APPLICATION_ID,
)
from scripts.runtime.secured import ENV_IDENTITIES, SecureMaterial
from scripts.runtime.services import IDENTITY_VARIABLES, service_env


def test_our_password_lines_equal_what_mosquitto_passwd_writes_for_the_same_salt(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd comes with the mosquitto package (make setup's requirements)"
    subprocess.run([tool, "-c", "-b", str(passwords), "car-00042", "s3cret:with$odd chars"], check=True)
    theirs = passwords.read_text().strip()
    user, _, hashed = theirs.partition(":")
    _, kind, iterations, salt, _key = hashed.split("$")
    assert (kind, iterations) == ("7", "101")
    assert mosquitto_password_line(user, "s3cret:with$odd chars", base64.b64decode(salt)) == theirs
    assert mosquitto_password_line(user, "another", base64.b64decode(salt)) != theirs


def test_car_passwords_are_stable_per_car_and_secret_and_differ_otherwise() -> None:
    assert car_password("fleet", "car-00001") == car_password("fleet", "car-00001")
    assert car_password("fleet", "car-00001") != car_password("fleet", "car-00002")
    assert car_password("fleet", "car-00001") != car_password("other", "car-00001")
    assert len(car_password("fleet", "car-00001")) == 43  # 256 bits, base64url without padding


def test_a_user_name_that_would_break_the_password_file_is_refused() -> None:
    with pytest.raises(ValueError):
        mosquitto_password_line("car:1", "x")


IDENTITY = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_USERNAME": "bridge",
    "KAFKA_SASL_PASSWORD": "pw",
    "KAFKA_SSL_CA_LOCATION": "/ca.crt",
}


def test_the_kafka_identity_is_read_once_into_the_settings_and_plaintext_adds_nothing(monkeypatch) -> None:
    assert PLAINTEXT.client_config() == {} and KafkaSettings().kafka_security == PLAINTEXT
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key, value)
    settings = KafkaSettings()
    assert settings.kafka_security.client_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "bridge",
        "sasl.password": "pw",
        "ssl.ca.location": "/ca.crt",
    }
    # A value, not a reader of the environment: built without it, it is PLAINTEXT whatever the environment says.
    assert KafkaSecurity() == PLAINTEXT
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "changed")
    assert settings.kafka_security.sasl_username == "bridge", "read when the settings were built, not per client"
    assert "pw" not in repr(settings) and "pw" not in str(settings.kafka_security), "the password is never shown"


def test_the_kafka_identity_is_never_a_flag_and_a_bad_one_is_a_config_error(monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, KafkaSettings)
    help_text = parser.format_help()
    assert "--kafka-bootstrap-servers" in help_text and "--kafka-security" not in help_text
    assert "KAFKA_SASL_PASSWORD" in help_text, "--help says where the identity comes from"
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL"):
        KafkaSettings()


def test_a_child_gets_exactly_the_identity_it_is_given(monkeypatch) -> None:
    """The variables come from one place (KafkaSecurity) both ways; this process's own are never inherited."""
    identity = KafkaSecurity.from_environment(IDENTITY)
    assert KafkaSecurity.from_environment(identity.environment()) == identity
    assert set(identity.environment()) <= KafkaSecurity.variables() <= IDENTITY_VARIABLES
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key, value)
    assert not IDENTITY_VARIABLES & set(service_env("k:1", "m", 1)), "the parent's identity leaked into a child's"
    child = service_env("k:1", "m", 1, **PLAINTEXT.environment())
    assert KafkaSecurity.from_environment(child) == PLAINTEXT


def test_material_is_private_complete_and_grows_with_the_fleet(tmp_path: Path) -> None:
    material = SecureMaterial(tmp_path / "secure").ensure(cars=3)
    assert stat.S_IMODE(material.folder.stat().st_mode) == 0o700
    secrets = ("ca.key", "server.key", "server.pem", "identities.json", "mosquitto.passwd", "kafka-users.json")
    for secret in (*secrets, *(f"env/{identity}.env" for identity in ENV_IDENTITIES)):
        assert stat.S_IMODE((material.folder / secret).stat().st_mode) == 0o600, secret
    users = [line.split(":")[0] for line in material.mosquitto_passwd.read_text().splitlines()[1:]]
    assert users == ["bridge", "monitor", "car-00001", "car-00002", "car-00003"]
    first_secret = material.fleet_secret
    material.ensure(cars=5)
    assert material.password_file_cars() == 5 and material.fleet_secret == first_secret
    env = dict(line.split("=", 1) for line in (material.folder / "env" / "simulator.env").read_text().splitlines())
    assert env["SIMULATOR_FLEET_SECRET"] == first_secret and "KAFKA_SASL_PASSWORD" not in env


def test_the_dashboard_reads_its_topics_and_the_predictors_offsets_and_writes_nothing(tmp_path: Path) -> None:
    env = SecureMaterial(tmp_path / "secure").ensure(cars=1).env("dashboard")
    assert env["KAFKA_SASL_USERNAME"] == "dashboard" and not any(key.startswith("MQTT_") for key in env)
    # Reads by assign() and never commits (no group READ); DESCRIBE on the predictors' groups for their lag.
    assert sorted(KAFKA_ACLS["dashboard"], key=repr) == sorted(
        [
            Grant("topic", READINGS_TOPIC, "read"),
            Grant("topic", PREDICTIONS_TOPIC, "read"),
            Grant("topic", DLQ_TOPIC, "read"),
            Grant("group", PREDICTOR_GROUP, "describe", prefixed=True),
        ],
        key=repr,
    )


def test_continual_reads_the_readings_and_both_models_predictions_and_writes_the_decisions_only(tmp_path: Path) -> None:
    """`python -m ml continual` and `python -m ml judge` (and the operator's `python -m ml registry` with Kafka): no
    write to the readings or to any predictions; the predictor writes the shadow beside the product."""
    env = SecureMaterial(tmp_path / "secure").ensure(cars=1).env("continual")
    assert env["KAFKA_SASL_USERNAME"] == "continual" and not any(key.startswith("MQTT_") for key in env)
    assert len(KAFKA_ACLS["continual"]) == 5 and set(KAFKA_ACLS["continual"]) == {
        Grant("topic", READINGS_TOPIC, "read"),
        Grant("topic", PREDICTIONS_TOPIC, "read"),
        Grant("topic", SHADOW_PREDICTIONS_TOPIC, "read"),
        Grant("topic", MODEL_DECISIONS_TOPIC, "write"),
        Grant("group", ML_READER_GROUP_PREFIX, "read", prefixed=True),
    }

    def writers(topic: str) -> set[str]:
        return {
            user for user, grants in KAFKA_ACLS.items() for g in grants if (g.name, g.operation) == (topic, "write")
        }

    assert writers(SHADOW_PREDICTIONS_TOPIC) == {"predictor"} and writers(MODEL_DECISIONS_TOPIC) == {"continual"}


def test_the_java_serving_program_has_an_identity_of_its_own_that_names_nothing_but_its_own(tmp_path: Path) -> None:
    """The stack's topics by name, as the Python predictor has them; everything else under its application id:
    its group by name, its changelogs and transactional ids by the prefix `<application id>-`."""
    env = SecureMaterial(tmp_path / "secure").ensure(cars=1).env("streams-predictor")
    assert env["KAFKA_SASL_USERNAME"] == "streams-predictor" and not any(key.startswith("MQTT_") for key in env)
    grants = KAFKA_ACLS["streams-predictor"]
    stack = {READINGS_TOPIC, PREDICTIONS_TOPIC, DLQ_TOPIC}
    assert sorted((g.name, g.operation) for g in grants if g.name in stack) == sorted(
        [(READINGS_TOPIC, "read"), (PREDICTIONS_TOPIC, "write"), (DLQ_TOPIC, "write")]
    )
    assert not any(g.prefixed for g in grants if g.name in stack)
    own = [g for g in grants if g.name not in stack]
    assert [g for g in own if g.resource == "group"] == [Grant("group", STREAMS_APPLICATION_ID, "read")]
    assert all(g.name == f"{STREAMS_APPLICATION_ID}-" and g.prefixed for g in own if g.resource != "group")
    transactional = [
        (b.name, b.resource_pattern_type)
        for b in acl_bindings()
        if b.principal == "User:streams-predictor" and b.restype == ResourceType.TRANSACTIONAL_ID
    ]
    assert transactional == [(f"{STREAMS_APPLICATION_ID}-", ResourcePatternType.PREFIXED)]


def test_a_folder_made_before_an_identity_existed_gets_it_and_keeps_the_other_passwords(tmp_path: Path) -> None:
    material = SecureMaterial(tmp_path / "secure").ensure(cars=1)
    identities = json.loads(material.identities_file.read_text())
    del identities["kafka"]["dashboard"]  # as written before the dashboard had an identity
    material.identities_file.write_text(json.dumps(identities))
    (material.folder / "env" / "dashboard.env").unlink()
    material.ensure(cars=1)
    completed = json.loads(material.identities_file.read_text())
    assert completed["kafka"]["dashboard"] and completed["kafka"]["predictor"] == identities["kafka"]["predictor"]
    assert completed["fleet_secret"] == identities["fleet_secret"]
    assert stat.S_IMODE(material.identities_file.stat().st_mode) == 0o600
    assert "KAFKA_SASL_USERNAME=dashboard\n" in (material.folder / "env" / "dashboard.env").read_text()


def test_admin_reads_the_service_users_passwords_that_the_material_hands_it(tmp_path: Path, monkeypatch) -> None:
    """`python -m admin apply` in the image gets the services' Kafka passwords from the material's file, and no
    other secret (not the fleet secret, not the super users' passwords)."""
    material = SecureMaterial(tmp_path / "secure").ensure(cars=1)
    monkeypatch.setenv("ADMIN_USERS_FILE", str(material.kafka_users_file))
    passwords = AdminSettings().passwords()
    assert set(passwords) == set(KAFKA_SERVICE_USERS) == set(KAFKA_ACLS)
    assert passwords == {user: material.kafka_password(user) for user in KAFKA_SERVICE_USERS}
    monkeypatch.setenv("ADMIN_USERS_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="missing.json"):
        AdminSettings().passwords()
    with pytest.raises(ConfigError, match="--topics"):
        settings_from_args(AdminSettings, argparse.Namespace(topics="car-sensor=0"))
