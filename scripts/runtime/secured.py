"""The secured mode's material, made on the operator's machine: certificates, passwords, Mosquitto's password and
ACL files, one env file per identity, the services' Kafka passwords for `python -m admin apply`. Generated once per
folder (SECURE_DIR, default `.run/secure`, git-ignored), never committed. Who may do what (the users, topics and
ACLs) is the product's policy, admin/policy.py, which this module and the services' image share.

    python -m scripts.runtime.secured init [--cars N]   # make (or complete) the folder; print what is where
    python -m scripts.runtime.secured env IDENTITY      # the environment of one identity (bridge, predictor, ...)

The env files under `env/` hold one identity's connection settings each: compose reads them as `env_file`,
Kubernetes as Secrets (`kubectl create secret generic --from-env-file`). `kafka-users.json` holds the services'
Kafka passwords: what `python -m admin apply` (ADMIN_USERS_FILE) gives them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from admin.kafka_rules import apply_kafka_rules
from admin.policy import (
    KAFKA_IDENTITIES,
    KAFKA_SERVICE_USERS,
    MOSQUITTO_ACL,
    MQTT_SERVICE_IDENTITIES,
    SCRAM_MECHANISM,
    SECURED_TOPICS,
)
from common.defaults import FLEET_CARS
from common.errors import ConfigError
from common.lifecycle import run_main
from common.logs import setup_logging
from common.security import car_password, make_certificates, mosquitto_password_line, new_secret, write_private
from common.settings import KafkaSecurity, MqttSettings
from common.topics import car_id

log = logging.getLogger(__name__)

# The identities with an env file (env/<identity>.env): the services and the operator's tools.
ENV_IDENTITIES = ("bridge", "simulator", "predictor", "streams-predictor", "trainer", "continual", "dashboard", "admin")
# The names clients reach the servers by, in every runtime: the certificate names each (hostname verification).
SERVER_HOSTS = [
    *("localhost", "127.0.0.1", "kafka", "mosquitto"),
    # The compose stack's other brokers (docker-compose.cluster.yml).
    *("kafka-2", "kafka-3"),
    # Kubernetes (compose/kubernetes/kafka/): the StatefulSet's nodes, Strimzi's bootstrap and its nodes.
    *(f"kafka-{node}.kafka-brokers" for node in range(3)),
    "car-stream-ml-kafka-bootstrap",
    *(f"car-stream-ml-brokers-{node}.car-stream-ml-kafka-brokers" for node in range(3)),
]


class SecureMaterial:
    """The files of one secured installation, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    ca_file = property(lambda self: self.folder / "ca.crt")
    server_cert = property(lambda self: self.folder / "server.crt")
    server_key = property(lambda self: self.folder / "server.key")
    server_pem = property(lambda self: self.folder / "server.pem")
    identities_file = property(lambda self: self.folder / "identities.json")
    mosquitto_passwd = property(lambda self: self.folder / "mosquitto.passwd")
    mosquitto_acl = property(lambda self: self.folder / "mosquitto.acl")
    kafka_users_file = property(lambda self: self.folder / "kafka-users.json")

    def exists(self) -> bool:
        return self.identities_file.exists() and self.server_pem.exists()

    def ensure(self, cars: int) -> SecureMaterial:
        """Make what is missing: certificates and secrets once, the password file for at least `cars` cars."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        if not self.server_pem.exists():
            make_certificates(self.folder, SERVER_HOSTS)
            log.info("made a CA and a server certificate in %s", self.folder)
        if not self.identities_file.exists():
            identities = {
                "fleet_secret": new_secret(),
                "kafka": {name: new_secret() for name in KAFKA_IDENTITIES},
                "mqtt": {name: new_secret() for name in MQTT_SERVICE_IDENTITIES},
            }
            write_private(self.identities_file, json.dumps(identities, indent=2))
        else:
            self._add_missing_identities()
        if self.password_file_cars() < cars:
            self.write_mosquitto_files(cars)
        self.write_env_files()
        return self

    def _add_missing_identities(self) -> None:
        """A folder made before an identity existed (the dashboard's) gets a password for it; the others keep
        theirs, so that running servers and env files already handed out stay valid."""
        identities = self._identities()
        added = [
            (kind, name)
            for kind, names in (("kafka", KAFKA_IDENTITIES), ("mqtt", MQTT_SERVICE_IDENTITIES))
            for name in names
            if name not in identities[kind]
        ]
        if not added:
            return
        for kind, name in added:
            identities[kind][name] = new_secret()
        write_private(self.identities_file, json.dumps(identities, indent=2))
        log.info("added the identities %s to %s", ", ".join(name for _, name in added), self.identities_file)

    def _identities(self) -> dict:
        try:
            return json.loads(self.identities_file.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"no secured set-up in {self.folder}: run `python -m scripts.runtime.secured init`"
            ) from None

    @property
    def fleet_secret(self) -> str:
        return self._identities()["fleet_secret"]

    def kafka_password(self, identity: str) -> str:
        return self._identities()["kafka"][identity]

    def mqtt_password(self, identity: str) -> str:
        return self._identities()["mqtt"][identity]

    def password_file_cars(self) -> int:
        """How many cars the password file holds (its first line says so)."""
        try:
            first = self.mosquitto_passwd.open().readline()
        except FileNotFoundError:
            return 0
        return int(first.split()[-1]) if first.startswith("# cars ") else 0

    def write_mosquitto_files(self, cars: int) -> None:
        """The password file for the service users and cars 1..`cars`, and the ACL file. Mosquitto reads both at
        start and again on SIGHUP."""
        started = time.monotonic()
        lines = [f"# cars {cars}"]
        lines += [mosquitto_password_line(name, self.mqtt_password(name)) for name in MQTT_SERVICE_IDENTITIES]
        secret = self.fleet_secret
        lines += [mosquitto_password_line(car, car_password(secret, car)) for car in map(car_id, range(1, cars + 1))]
        write_private(self.mosquitto_passwd, "\n".join(lines) + "\n")
        self.mosquitto_acl.write_text(MOSQUITTO_ACL)
        log.info("wrote Mosquitto's password file for %d cars in %.1f s", cars, time.monotonic() - started)

    def kafka_security(self, identity: str) -> KafkaSecurity:
        """One Kafka identity: SCRAM over TLS, verified against this folder's CA."""
        return KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=identity,
            sasl_password=self.kafka_password(identity),
            ssl_ca_location=str(self.ca_file),
        )

    def kafka_env(self, identity: str) -> dict[str, str]:
        """The environment that gives a child process one Kafka identity."""
        return self.kafka_security(identity).environment()

    def kafka_client_config(self, identity: str) -> dict[str, str]:
        """librdkafka's properties for one Kafka identity (for tools and tests that hold several identities)."""
        return self.kafka_security(identity).client_config()

    def service_passwords(self) -> dict[str, str]:
        """The services' Kafka passwords, which `admin` gives them (kafka-users.json)."""
        return {user: self.kafka_password(user) for user in KAFKA_SERVICE_USERS}

    def set_up_kafka(self, bootstrap: str, topics: dict[str, int] = SECURED_TOPICS) -> None:
        """As admin, on a node started with this material: the services' users, `topics` and the ACLs."""
        apply_kafka_rules(bootstrap, self.kafka_security("admin"), self.service_passwords(), topics)

    def mqtt_env(self, identity: str | None = None) -> dict[str, str]:
        """MqttSettings' environment: TLS verified against our CA, and `identity`'s credentials when given."""
        env = {"MQTT_TLS": "true", "MQTT_CA_FILE": str(self.ca_file)}
        if identity:
            env.update(MQTT_USERNAME=identity, MQTT_PASSWORD=self.mqtt_password(identity))
        return env

    def mqtt_settings(self, identity: str) -> MqttSettings:
        return MqttSettings(**self.mqtt_env(identity))

    def env(self, identity: str) -> dict[str, str]:
        """The whole environment of one service (or `admin`, the operator's tools)."""
        if identity == "bridge":
            return {**self.kafka_env("bridge"), **self.mqtt_env("bridge")}
        if identity == "simulator":
            return {**self.mqtt_env(), "SIMULATOR_FLEET_SECRET": self.fleet_secret}
        if identity in ("predictor", "streams-predictor", "trainer", "continual", "dashboard", "admin"):
            return self.kafka_env(identity)
        raise ConfigError(f"unknown identity {identity!r}: {', '.join(ENV_IDENTITIES)}")

    def write_env_files(self) -> None:
        for identity in ENV_IDENTITIES:
            body = "".join(f"{key}={value}\n" for key, value in self.env(identity).items())
            write_private(self.folder / "env" / f"{identity}.env", body)
        write_private(self.kafka_users_file, json.dumps(self.service_passwords(), indent=2))


def default_material() -> SecureMaterial:
    from scripts.runtime.local import DEFAULT_RUN_DIR

    return SecureMaterial(Path(os.environ.get("SECURE_DIR", DEFAULT_RUN_DIR / "secure")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.runtime.secured",
        description="Make the secured mode's certificates, identities, Mosquitto password/ACL files and env files "
        "in SECURE_DIR (default .run/secure), or print one identity's environment. Kafka's users, topics and ACLs "
        "are set by `python -m admin apply` (SECURITY.md).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="make (or complete) the folder")
    init.add_argument(
        "--cars", type=int, default=FLEET_CARS, help="cars in Mosquitto's password file, at least (default %(default)s)"
    )
    env = sub.add_parser("env", help="print KEY=VALUE lines of one identity's environment")
    env.add_argument("identity", choices=ENV_IDENTITIES)
    args = parser.parse_args(argv)
    setup_logging()
    material = default_material()
    if args.action == "init":
        material.ensure(args.cars)
        print(
            f"secured mode material in {material.folder} (CA: {material.ca_file}; env files: env/*.env; "
            f"the services' Kafka passwords: {material.kafka_users_file.name})"
        )
    else:
        for key, value in material.env(args.identity).items():
            print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    run_main(main)  # a CarStreamError: one line on stderr, exit 2
