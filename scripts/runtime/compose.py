"""The compose stack, from make and from the demo: one project name, whichever compose CLI exists, and the images
`make images` built when compose/images.env exists.

    python -m scripts.runtime.compose up [SERVICE ...]   # start (all services, or these), wait until each is healthy
    python -m scripts.runtime.compose down               # remove its containers, network and volumes
    python -m scripts.runtime.compose ps
    python -m scripts.runtime.compose up --secure ...    # the secured mode (compose/docker-compose.secure.yml);
                                                        # down/ps take --secure too
    python -m scripts.runtime.compose prepare            # only the secured material (for a bare `docker compose`)
    BROKERS=3 python -m scripts.runtime.compose up ...   # Kafka as three brokers (compose/docker-compose.cluster.yml),
                                                        # or --brokers 3; down/ps need the same choice
    MQTT_BROKER=hivemq python -m scripts.runtime.compose up ...  # HiveMQ CE in Mosquitto's place
                                                        # (compose/docker-compose.hivemq.yml); down/ps alike

Docker compose v2 (`docker compose`) is used when installed, otherwise Debian's `docker-compose` 1.29; the compose
file stays loadable by both. 1.29 has no `up --wait`, so readiness is waited for here, from each container's
health check (or its exit code, for the one-shot services).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import yaml

from admin.policy import KAFKA_SUPER_USERS, SCRAM_MECHANISM
from common.defaults import FLEET_CARS, MQTT_PORT, MQTT_TLS_PORT
from common.errors import ConfigError, LocalRuntimeError
from common.logs import setup_logging
from common.security import write_private
from scripts.runtime.docker_engine import docker_path
from scripts.runtime.images import HIVEMQ as HIVEMQ_IMAGE
from scripts.runtime.local import (
    BROKER_CHOICES,
    ROOT,
    brokers_asked,
    secured_kafka_properties,
    secured_mosquitto_access,
    secured_mosquitto_listener,
)
from scripts.runtime.mqtt_broker import mqtt_broker_name
from scripts.runtime.schema_registry import CCOMPAT_PATH
from scripts.runtime.secured import SecureMaterial, default_material
from scripts.runtime.services import Containers
from scripts.runtime.streams import STREAMS_IMAGE

log = logging.getLogger("compose")

PROJECT = "car-stream-ml"  # COMPOSE_PROJECT_NAME runs another copy beside it (the stack test does)
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
IMAGES_ENV = ROOT / "compose" / "images.env"
SECURE_FILE = ROOT / "compose" / "docker-compose.secure.yml"
CLUSTER_FILE = ROOT / "compose" / "docker-compose.cluster.yml"
CLUSTER_SECURE_FILE = ROOT / "compose" / "docker-compose.cluster.secure.yml"  # last, on the three above
HIVEMQ_FILE = ROOT / "compose" / "docker-compose.hivemq.yml"  # MQTT_BROKER=hivemq, not secured
# The brokers CLUSTER_FILE adds beside kafka, and the containers' bootstrap there (its x-bootstrap).
CLUSTER_BROKERS = ("kafka-2", "kafka-3")
CLUSTER_BOOTSTRAP = "kafka:19092,kafka-2:19092,kafka-3:19092"
# Where the secure-files service of SECURE_FILE puts each server's copy of the material (a volume, mounted at
# /secure): the paths written into the files below are those.
KAFKA_SECURE_DIR = "/secure/kafka"
MOSQUITTO_SECURE_DIR = "/secure/mosquitto"
APP_IMAGE = "car-stream-ml:0.1.0"
# What a service in a container of the stack connects to (compose/docker-compose.yml's x-connections).
INSIDE_THE_STACK = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:19092",
    "MQTT_HOST": "mosquitto",
    "MQTT_PORT": str(MQTT_PORT),
    "SCHEMA_REGISTRY_URL": f"http://schema-registry:8080{CCOMPAT_PATH}",
    "PYTHONUNBUFFERED": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def images_env(name: str) -> str | None:
    """<name> from the environment, else from compose/images.env (written by `make images`), else None."""
    if os.environ.get(name):
        return os.environ[name]
    if IMAGES_ENV.exists():
        for line in IMAGES_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == name and value.strip():
                return value.strip()
    return None


def project() -> str:
    return os.environ.get("COMPOSE_PROJECT_NAME") or PROJECT


def brokers() -> int:
    """How many Kafka brokers the stack runs: BROKERS (local.py's rule, read as the local runtime reads it), 1 (the
    default) or 3 (CLUSTER_FILE layered on). From the environment, as make exports it, so that every compose command
    of a run (the demo's too) names the same files."""
    return brokers_asked() or 1


def inside_the_stack() -> dict[str, str]:
    """INSIDE_THE_STACK, with the three brokers' bootstrap when the stack runs three."""
    return {**INSIDE_THE_STACK, "KAFKA_BOOTSTRAP_SERVERS": CLUSTER_BOOTSTRAP} if brokers() == 3 else INSIDE_THE_STACK


@cache
def compose_cli() -> list[str]:
    docker = docker_path()
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    raise LocalRuntimeError("no compose CLI: install Docker's compose plugin, or Debian's docker-compose")


def command(*args: str, secure: bool = False) -> list[str]:
    """The compose command line; `secure` layers SECURE_FILE on the stack and names the material (SECURE_DIR, which
    it interpolates) for the compose CLI; three brokers (brokers()) layer CLUSTER_FILE, and CLUSTER_SECURE_FILE last
    when secured too; MQTT_BROKER=hivemq layers HIVEMQ_FILE (the plain mode only)."""
    env_file = ["--env-file", str(IMAGES_ENV)] if IMAGES_ENV.exists() else []
    cluster = brokers() == 3
    hivemq = mqtt_broker_name() == "hivemq"
    if hivemq and secure:
        raise LocalRuntimeError(
            "MQTT_BROKER=hivemq runs in the compose stack's plain mode only: leave SECURE out, or use the local "
            "runtime (RUNTIME=local), whose HiveMQ has the secured mode"
        )
    layers = [COMPOSE_FILE, *([CLUSTER_FILE] if cluster else []), *([HIVEMQ_FILE] if hivemq else [])]
    layers += [SECURE_FILE] if secure else []
    layers += [CLUSTER_SECURE_FILE] if cluster and secure else []
    files = [argument for layer in layers for argument in ("-f", str(layer))]
    if secure:
        os.environ["SECURE_DIR"] = str(default_material().folder)
    return [*compose_cli(), "-p", project(), *files, *env_file, *args]


def compose(*args: str, timeout: float = 600, secure: bool = False) -> str:
    result = subprocess.run(command(*args, secure=secure), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise LocalRuntimeError(f"compose {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def _state(container_id: str) -> dict:
    found = subprocess.run([docker_path(), "inspect", container_id], capture_output=True, text=True)
    return json.loads(found.stdout)[0]["State"] if found.returncode == 0 else {}


def _ready(service: str, state: dict) -> bool:
    """A container's: healthy (or, without a health check, running), or exited with 0; a LocalRuntimeError when it
    exited otherwise."""
    if state.get("Status") == "exited":
        if state.get("ExitCode") != 0:
            raise LocalRuntimeError(f"{service} exited with {state.get('ExitCode')}: see `compose logs`")
        return True
    health = state.get("Health", {}).get("Status")
    return health == "healthy" or (health is None and state.get("Status") == "running")


def wait_ready(services: list[str], timeout: float = 300, secure: bool = False) -> None:
    """Until every container of every service is healthy (or, without a health check, running or exited with 0): a
    service of several replicas (the trainer's workers) is ready when all are."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending and time.monotonic() < deadline:
        for service in list(pending):
            ids = compose("ps", "-q", service, secure=secure).split()
            # Every container checked (a list, not a generator): one that failed fails the wait at once.
            if ids and all([_ready(service, _state(container)) for container in ids]):
                pending.remove(service)
        if pending:
            time.sleep(2)
    if pending:
        raise LocalRuntimeError(f"not ready after {timeout:.0f} s: {', '.join(pending)}")


def started_services(secure: bool = False) -> list[str]:
    """The services `up` starts when it names none: those of no profile or of an active one (COMPOSE_PROFILES).
    Compose 1.29's `config --services` lists every service, whatever its profiles."""
    config = yaml.safe_load(compose("config", secure=secure))
    active = set(filter(None, os.environ.get("COMPOSE_PROFILES", "").split(",")))
    return [
        name
        for name, service in config["services"].items()
        if not service.get("profiles") or active & set(service["profiles"])
    ]


def up(services: list[str], timeout: float = 300, secure: bool = False, cars: int = FLEET_CARS) -> None:
    """Start `services` (all when empty) and wait until they are ready; `secure` first makes the material for at
    least `cars` cars (prepare_secure)."""
    if secure:
        prepare_secure(cars)
    if "kafka" in services and brokers() == 3:
        services = [*services, *CLUSTER_BROKERS]
    if mqtt_broker_name() == "hivemq":
        require_hivemq_image()
    compose("up", "-d", *services, secure=secure)
    wait_ready(services or started_services(secure), timeout, secure)


def require_hivemq_image() -> None:
    """HiveMQ's image has no official equivalent to pull: without it, say to build it rather than let compose fail
    on a pull."""
    image = images_env("HIVEMQ_IMAGE") or HIVEMQ_IMAGE
    if subprocess.run([docker_path(), "image", "inspect", image], capture_output=True).returncode != 0:
        raise LocalRuntimeError(f"no image {image} for MQTT_BROKER=hivemq: build it with `make images`")


def down(secure: bool = False) -> None:
    compose("down", "--volumes", "--remove-orphans", secure=secure)


def prepare_secure(cars: int) -> SecureMaterial:
    """The secured mode's material (scripts/runtime/secured.py) and, in its compose/ folder, what only the stack needs,
    made from the local runtime's rules for the paths of the secure-files volume: Kafka's secured properties (less
    the listener layout, which SECURE_FILE sets, with a second listener for the host) and its SCRAM users,
    Mosquitto's configuration (compose/mosquitto/mosquitto.conf on TLS 8883 with password and ACL files), and
    monitor's password for Mosquitto's health check. Every file is readable by its owner only."""
    material = default_material().ensure(cars)
    out = material.folder / "compose"
    host_folder = str(material.folder)
    layout = ("listener.security.protocol.map=", "inter.broker.listener.name=")
    kafka = [
        line.replace(host_folder, KAFKA_SECURE_DIR)
        for line in secured_kafka_properties(material)
        if not line.startswith(layout)
    ]
    # Each SASL listener needs its JAAS entry: the host's (HOST, on 9092) is the containers' one (SASL_SSL).
    kafka += [line.replace("listener.name.sasl_ssl.", "listener.name.host.") for line in kafka if "sasl_ssl." in line]
    write_private(out / "kafka.properties", "\n".join(kafka) + "\n")
    # The node's own user and the one that sets up the rest, as KafkaNode.prepare() formats them.
    scram = [f"{SCRAM_MECHANISM}=[name={u},password={material.kafka_password(u)}]" for u in KAFKA_SUPER_USERS]
    write_private(out / "kafka-scram", "\n".join(scram) + "\n")
    admin = material.kafka_security("admin")
    write_private(
        out / "admin-client.properties",
        f"security.protocol={admin.security_protocol}\nsasl.mechanism={admin.sasl_mechanism}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin.sasl_username}" password="{admin.sasl_password.get_secret_value()}";\n'
        f"ssl.truststore.type=PEM\nssl.truststore.location={KAFKA_SECURE_DIR}/ca.crt\n",
    )
    in_container = SecureMaterial(Path(MOSQUITTO_SECURE_DIR))  # only its paths are used
    listener = f"listener {MQTT_TLS_PORT} 0.0.0.0\n" + secured_mosquitto_listener(in_container)
    config = (ROOT / "compose" / "mosquitto" / "mosquitto.conf").read_text()
    config = re.sub(r"(?m)^listener .*$", lambda _: listener, config)
    config = config.replace("allow_anonymous true", secured_mosquitto_access(in_container))
    write_private(out / "mosquitto.conf", config)
    write_private(out / "monitor.password", material.mqtt_password("monitor"))
    os.environ["SECURE_DIR"] = host_folder
    return material


def built_image(variable: str, default: str, *build: str) -> str:
    """The image that `variable` names (compose/images.env, the environment), else `default`; when it is not there,
    built first with `compose build` and `build` (`make images` builds it where nothing can be pulled)."""
    image = images_env(variable) or default
    if subprocess.run([docker_path(), "image", "inspect", image], capture_output=True).returncode != 0:
        log.info("building %s (compose %s)", image, " ".join(build))
        compose(*build, timeout=1800)
    return image


def streams_image() -> str:
    """The Java serving program's image (the predictor-java service, in the profile `java`)."""
    return built_image("STREAMS_IMAGE", STREAMS_IMAGE, "--profile", "java", "build", "predictor-java")


def service_containers(run_id: str, mounts: list[Path]) -> Containers:
    """The services' image on the project's network (its servers must run), `mounts` shared with the host. The
    image is built from the Dockerfile when it is not there."""
    image = built_image("APP_IMAGE", APP_IMAGE, "build", "bridge")
    for folder in mounts:
        folder.mkdir(parents=True, exist_ok=True)
    return Containers(image, f"{project()}_default", mounts, f"{project()}-{run_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.runtime.compose", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "ps", "prepare"])
    parser.add_argument("services", nargs="*", help="services to start (up); default: all")
    parser.add_argument(
        "--secure",
        action="store_true",
        help="the secured mode: compose/docker-compose.secure.yml on top, material in SECURE_DIR (default .run/secure)",
    )
    parser.add_argument(
        "--brokers",
        choices=BROKER_CHOICES,
        type=int,
        help="Kafka brokers: 3 layers compose/docker-compose.cluster.yml on the stack [env: BROKERS, default 1]",
    )
    parser.add_argument(
        "--cars",
        type=int,
        default=int(os.environ.get("CARS") or FLEET_CARS),
        help=f"secured mode: cars with an MQTT password, at least (default: $CARS, else {FLEET_CARS})",
    )
    args = parser.parse_intermixed_args(argv)  # `up --secure kafka`: options before the services too
    setup_logging()
    if args.brokers:
        os.environ["BROKERS"] = str(args.brokers)  # every compose command of this run, as make exports it
    try:
        if args.action == "up":
            up(args.services, secure=args.secure, cars=args.cars)
            log.info("ready: %s%s", ", ".join(args.services) or "every service", " (secured)" if args.secure else "")
        elif args.action == "down":
            down(secure=args.secure)
            log.info("removed the %s containers, network and volumes", project())
        elif args.action == "prepare":
            material = prepare_secure(args.cars)
            print(f"SECURE_DIR={material.folder} {' '.join(command('up', '-d', secure=True))}")
        else:
            print(compose("ps", secure=args.secure), end="")
    except (LocalRuntimeError, ConfigError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
