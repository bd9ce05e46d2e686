"""The secured mode's material and rules: certificates, identities, Mosquitto's password and ACL files, Kafka's
users and ACLs. Generated once per folder (SECURE_DIR, default `.run/secure`, git-ignored), never committed.

    python -m scripts.runtime.secured init [--cars N]   # make (or complete) the folder; print what is where
    python -m scripts.runtime.secured env IDENTITY      # the environment of one identity (bridge, predictor, ...)
    python -m scripts.runtime.secured apply --bootstrap HOST:PORT [--topic NAME=PARTITIONS ...]
                                                # as admin: service users, topics and ACLs (compose's setup)

Identities (SECURITY.md has the threat model):
- Kafka (SCRAM-SHA-512 over TLS): `broker` (between the node's own listeners), `admin` (creates topics, users and
  ACLs; the operator's tools), `bridge`, `predictor`, `trainer`, `dashboard`; each service may do exactly its job
  (KAFKA_ACLS).
- MQTT (password file, TLS on 8883): one user per car, named by its car id, allowed to publish to its own topic
  only; `bridge`, allowed to read every car's topic; `monitor` (the operator's tools), allowed to read them too and to
  round-trip messages under healthcheck/.

The env files under `env/` hold one identity's connection settings each: compose reads them as `env_file`,
Kubernetes as Secrets (`kubectl create secret generic --from-env-file`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, KafkaError
from common.lifecycle import run_main
from common.logs import setup_logging
from common.security import car_password, make_certificates, mosquitto_password_line, new_secret, write_private
from common.topics import (
    DLQ_TOPIC,
    MQTT_TOPIC_FILTER,
    MQTT_TOPIC_PREFIX,
    PREDICTIONS_TOPIC,
    PREDICTOR_GROUP,
    READINGS_TOPIC,
    car_id,
)

log = logging.getLogger(__name__)

KAFKA_IDENTITIES = ("broker", "admin", "bridge", "predictor", "trainer", "dashboard")
MQTT_SERVICE_IDENTITIES = ("bridge", "monitor")
# The identities with an env file (env/<identity>.env): the services and the operator's tools.
ENV_IDENTITIES = ("bridge", "simulator", "predictor", "trainer", "dashboard", "admin")
SCRAM_MECHANISM = "SCRAM-SHA-512"
# The topics admin creates at a secured start (nothing else may create any), with their partitions.
SECURED_TOPICS = {READINGS_TOPIC: 4, PREDICTIONS_TOPIC: 4, DLQ_TOPIC: 1}
SERVER_HOSTS = ["localhost", "127.0.0.1", "kafka", "mosquitto"]  # the names compose and Kubernetes use too
HEALTH_TOPIC_PREFIX = "healthcheck"
READER_GROUP_PREFIX = "ml-"  # the predictor's and trainer's bounded readers (ml/source.py) join ml-range-*/ml-reader-*


@dataclass(frozen=True)
class Grant:
    """One ACL: `operation` on a topic or a consumer group, by exact name or by prefix."""

    resource: str  # "topic" or "group"
    name: str
    operation: str  # "read", "write" or "describe"
    prefixed: bool = False


# What each service may do in Kafka, and nothing else (DESCRIBE comes with READ and WRITE).
KAFKA_ACLS: dict[str, list[Grant]] = {
    "bridge": [Grant("topic", READINGS_TOPIC, "write"), Grant("topic", DLQ_TOPIC, "write")],
    "predictor": [
        Grant("topic", READINGS_TOPIC, "read"),
        Grant("topic", PREDICTIONS_TOPIC, "write"),
        Grant("topic", DLQ_TOPIC, "write"),
        Grant("group", PREDICTOR_GROUP, "read", prefixed=True),
        Grant("group", READER_GROUP_PREFIX, "read", prefixed=True),
    ],
    "trainer": [Grant("topic", READINGS_TOPIC, "read"), Grant("group", READER_GROUP_PREFIX, "read", prefixed=True)],
    # Reads by assign() and never commits: no group READ. DESCRIBE on the predictors' groups is what fetching
    # their committed offsets (OffsetFetch) needs, for the lag chart; it cannot join or commit in them.
    "dashboard": [
        Grant("topic", READINGS_TOPIC, "read"),
        Grant("topic", PREDICTIONS_TOPIC, "read"),
        Grant("topic", DLQ_TOPIC, "read"),
        Grant("group", PREDICTOR_GROUP, "describe", prefixed=True),
    ],
}

MOSQUITTO_ACL = f"""\
# Written by scripts/runtime/secured.py. Nothing is allowed that is not granted here.
user bridge
topic read {MQTT_TOPIC_FILTER}

# The operator's tools: the broker's round-trip check, the demo's count of what the fleet publishes.
user monitor
topic readwrite {HEALTH_TOPIC_PREFIX}/#
topic read {MQTT_TOPIC_FILTER}

# Every other user is a car: it may publish to its own topic only (%u = its user name, its car id).
pattern write {MQTT_TOPIC_PREFIX}/%u
"""


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

    def kafka_env(self, identity: str) -> dict[str, str]:
        """KafkaSecurity's environment (common/kafka.py) for one Kafka identity."""
        return {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "KAFKA_SASL_USERNAME": identity,
            "KAFKA_SASL_PASSWORD": self.kafka_password(identity),
            "KAFKA_SSL_CA_LOCATION": str(self.ca_file),
        }

    def kafka_client_config(self, identity: str) -> dict[str, str]:
        """librdkafka's properties for one Kafka identity (for tools and tests that hold several identities)."""
        from common.kafka import KafkaSecurity

        env = self.kafka_env(identity)
        return KafkaSecurity(
            security_protocol=env["KAFKA_SECURITY_PROTOCOL"],
            sasl_mechanism=env["KAFKA_SASL_MECHANISM"],
            sasl_username=env["KAFKA_SASL_USERNAME"],
            sasl_password=env["KAFKA_SASL_PASSWORD"],
            ssl_ca_location=env["KAFKA_SSL_CA_LOCATION"],
        ).client_config()

    def mqtt_env(self, identity: str | None = None) -> dict[str, str]:
        """MqttSettings' environment: TLS verified against our CA, and `identity`'s credentials when given."""
        env = {"MQTT_TLS": "true", "MQTT_CA_FILE": str(self.ca_file)}
        if identity:
            env.update(MQTT_USERNAME=identity, MQTT_PASSWORD=self.mqtt_password(identity))
        return env

    def mqtt_settings(self, identity: str):
        from common.settings import MqttSettings

        return MqttSettings(**self.mqtt_env(identity))

    def env(self, identity: str) -> dict[str, str]:
        """The whole environment of one service (or `admin`, the operator's tools)."""
        if identity == "bridge":
            return {**self.kafka_env("bridge"), **self.mqtt_env("bridge")}
        if identity == "simulator":
            return {**self.mqtt_env(), "SIMULATOR_FLEET_SECRET": self.fleet_secret}
        if identity in ("predictor", "trainer", "dashboard", "admin"):
            return self.kafka_env(identity)
        raise ConfigError(f"unknown identity {identity!r}: {', '.join(ENV_IDENTITIES)}")

    def write_env_files(self) -> None:
        for identity in ENV_IDENTITIES:
            body = "".join(f"{key}={value}\n" for key, value in self.env(identity).items())
            write_private(self.folder / "env" / f"{identity}.env", body)


def default_material() -> SecureMaterial:
    import os

    from scripts.runtime.local import DEFAULT_RUN_DIR

    return SecureMaterial(Path(os.environ.get("SECURE_DIR", DEFAULT_RUN_DIR / "secure")))


def apply_kafka_rules(bootstrap: str, material: SecureMaterial, topics: dict[str, int], timeout: float = 30.0) -> None:
    """As `admin`: the service users (SCRAM), the topics, and the ACLs of KAFKA_ACLS. Idempotent."""
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from common.kafka import ensure_topics

    admin_config = material.kafka_client_config("admin")
    admin = AdminClient({"bootstrap.servers": bootstrap, **admin_config})
    upserts = [
        UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), material.kafka_password(name).encode()
        )
        for name in KAFKA_ACLS
    ]
    for name, future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).items():
        future.result()
        log.debug("SCRAM credentials of %s set", name)
    ensure_topics(bootstrap, topics, timeout, **admin_config)
    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
    operations = {"read": AclOperation.READ, "write": AclOperation.WRITE, "describe": AclOperation.DESCRIBE}
    bindings = [
        AclBinding(
            kinds[grant.resource],
            grant.name,
            ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
            f"User:{identity}",
            "*",
            operations[grant.operation],
            AclPermissionType.ALLOW,
        )
        for identity, grants in KAFKA_ACLS.items()
        for grant in grants
    ]
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result()
    # The broker applies new ACLs a moment after create_acls returns; a service started at once would be refused
    # its first call: return once the broker lists them all.
    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    deadline = time.monotonic() + timeout
    while not set(bindings) <= set(admin.describe_acls(everything, request_timeout=timeout).result()):
        if time.monotonic() > deadline:
            raise KafkaError(f"the broker does not list the ACLs {timeout:.0f} s after they were created")
        time.sleep(0.1)
    log.info("Kafka: users %s, topics %s and %d ACLs in place", ", ".join(KAFKA_ACLS), ", ".join(topics), len(bindings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.runtime.secured",
        description="Make the secured mode's certificates, identities, Mosquitto password/ACL files and env files "
        "in SECURE_DIR (default .run/secure), or print one identity's environment.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="make (or complete) the folder")
    init.add_argument("--cars", type=int, default=25, help="cars in Mosquitto's password file, at least (default 25)")
    env = sub.add_parser("env", help="print KEY=VALUE lines of one identity's environment")
    env.add_argument("identity", choices=ENV_IDENTITIES)
    apply = sub.add_parser("apply", help="as admin: the services' Kafka users, the topics and the ACLs (idempotent)")
    apply.add_argument("--bootstrap", required=True, help="Kafka's SASL_SSL listener, HOST:PORT")
    apply.add_argument(
        "--topic",
        action="append",
        metavar="NAME=PARTITIONS",
        help="a topic to create (repeatable; default: "
        + ", ".join(f"{name}={count}" for name, count in SECURED_TOPICS.items())
        + ")",
    )
    args = parser.parse_args(argv)
    setup_logging()
    material = default_material()
    if args.action == "init":
        material.ensure(args.cars)
        print(f"secured mode material in {material.folder} (CA: {material.ca_file}; env files: env/*.env)")
    elif args.action == "apply":
        # The same topics as the local runtime's secured start, unless named.
        pairs = [item.rpartition("=") for item in args.topic or []]
        topics = {name: int(count) for name, _, count in pairs} or SECURED_TOPICS
        apply_kafka_rules(args.bootstrap, material, topics)
    else:
        for key, value in material.env(args.identity).items():
            print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    run_main(main)  # a CarStreamError: one line on stderr, exit 2
