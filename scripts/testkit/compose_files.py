"""The compose files as the compose CLI merges them, offline (no Docker engine): what the unit tests of the compose
stack's layers (tests/unit/test_compose_*.py) check."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from scripts.runtime.local import ROOT


def compose_cli() -> list[str] | None:
    """A compose CLI that renders a file offline: docker-compose 1.29, else the docker compose plugin; None."""
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def merged_services(cli: list[str], root: Path, *layers: Path, **environment: str) -> dict[str, dict]:
    """The services of compose/'s `layers` as `cli` merges them, with every variable at its default (but
    `environment`). The compose/ folder is copied into `root` beside an empty ml/streams/target (the Java image's
    build context, which the CLI wants to exist and `make setup` builds)."""
    shutil.copytree(ROOT / "compose", root / "compose", ignore=shutil.ignore_patterns("images.env"))
    (root / "ml" / "streams" / "target").mkdir(parents=True)
    files = [argument for layer in layers for argument in ("-f", str(root / "compose" / layer.name))]
    env = {key: value for key, value in os.environ.items() if not key.endswith(("_PORT", "_IMAGE", "SECURE_DIR"))}
    rendered = subprocess.run(
        [*cli, *files, "config"], capture_output=True, text=True, timeout=120, cwd=root, env={**env, **environment}
    )
    if rendered.returncode != 0:
        raise RuntimeError(f"{' '.join(cli)} config failed:\n{rendered.stderr}")
    return yaml.safe_load(rendered.stdout)["services"]


def settings(service: dict) -> dict[str, str]:
    """A service's environment, every value a string."""
    env = service.get("environment") or {}
    return {key: str(value) for key, value in env.items()}


def published_ports(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port, in either syntax (as `mounts`)."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append((entry["host_ip"], int(entry["published"]), int(entry["target"])))
        else:
            address, published, target = str(entry).split("/")[0].split(":")
            ports.append((address, int(published), int(target)))
    return ports


def mounts(service: dict) -> list[dict]:
    """The volumes, in the long syntax (docker compose v2) or the short one (docker-compose 1.29)."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            found.append(entry)
        else:
            source, target, *_ = entry.split(":")
            found.append({"source": source, "target": target})
    return found
