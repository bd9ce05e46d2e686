"""The compose stack, from make and from the demo: one project name, whichever compose CLI exists, and the images
`make images` built when compose/images.env exists.

    python -m scripts.compose up [SERVICE ...]   # start (all services, or these), wait until each is healthy
    python -m scripts.compose down               # remove its containers, network and volumes
    python -m scripts.compose ps

Docker compose v2 (`docker compose`) is used when installed, otherwise Debian's `docker-compose` 1.29; the compose
file stays loadable by both. 1.29 has no `up --wait`, so readiness is waited for here, from each container's
health check (or its exit code, for the one-shot services).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

from common.errors import LocalRuntimeError
from common.logs import setup_logging
from scripts.docker_engine import docker_path
from scripts.local_runtime import ROOT
from scripts.schema_registry import CCOMPAT_PATH
from scripts.services import Containers

log = logging.getLogger("compose")

PROJECT = "car-stream-ml"  # COMPOSE_PROJECT_NAME runs another copy beside it (the stack test does)
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
IMAGES_ENV = ROOT / "compose" / "images.env"
APP_IMAGE = "car-stream-ml:0.1.0"
# What a service in a container of the stack connects to (compose/docker-compose.yml's x-connections).
INSIDE_THE_STACK = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:19092",
    "MQTT_HOST": "mosquitto",
    "MQTT_PORT": "1883",
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


@cache
def compose_cli() -> list[str]:
    docker = docker_path()
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    raise LocalRuntimeError("no compose CLI: install Docker's compose plugin, or Debian's docker-compose")


def command(*args: str) -> list[str]:
    env_file = ["--env-file", str(IMAGES_ENV)] if IMAGES_ENV.exists() else []
    return [*compose_cli(), "-p", project(), "-f", str(COMPOSE_FILE), *env_file, *args]


def compose(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise LocalRuntimeError(f"compose {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def _state(container_id: str) -> dict:
    found = subprocess.run([docker_path(), "inspect", container_id], capture_output=True, text=True)
    return json.loads(found.stdout)[0]["State"] if found.returncode == 0 else {}


def wait_ready(services: list[str], timeout: float = 300) -> None:
    """Until every service's container is healthy (or, without a health check, running or exited with 0)."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending and time.monotonic() < deadline:
        for service in list(pending):
            ids = compose("ps", "-q", service).split()
            state = _state(ids[0]) if ids else {}
            health = state.get("Health", {}).get("Status")
            if health == "healthy" or (health is None and state.get("Status") == "running"):
                pending.remove(service)
            elif state.get("Status") == "exited":
                if state.get("ExitCode") != 0:
                    raise LocalRuntimeError(f"{service} exited with {state.get('ExitCode')}: see `compose logs`")
                pending.remove(service)
        if pending:
            time.sleep(2)
    if pending:
        raise LocalRuntimeError(f"not ready after {timeout:.0f} s: {', '.join(pending)}")


def up(services: list[str], timeout: float = 300) -> None:
    compose("up", "-d", *services)
    wait_ready(services or compose("config", "--services").split(), timeout)


def down() -> None:
    compose("down", "--volumes", "--remove-orphans")


def service_containers(run_id: str, mounts: list[Path]) -> Containers:
    """The services' image on the project's network (its servers must run), `mounts` shared with the host. The
    image is built from the Dockerfile when it is not there (`make images` builds it where nothing can be pulled)."""
    image = images_env("APP_IMAGE") or APP_IMAGE
    if subprocess.run([docker_path(), "image", "inspect", image], capture_output=True).returncode != 0:
        log.info("building the services' image %s (compose build)", image)
        compose("build", "bridge", timeout=1800)
    for folder in mounts:
        folder.mkdir(parents=True, exist_ok=True)
    return Containers(image, f"{project()}_default", mounts, f"{project()}-{run_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.compose", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "ps"])
    parser.add_argument("services", nargs="*", help="services to start (up); default: all")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.action == "up":
            up(args.services)
            log.info("ready: %s", ", ".join(args.services) or "every service")
        elif args.action == "down":
            down()
            log.info("removed the %s containers, network and volumes", PROJECT)
        else:
            print(compose("ps"), end="")
    except LocalRuntimeError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
