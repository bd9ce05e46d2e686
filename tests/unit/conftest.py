"""Fixtures of the unit tests that need a program beside Python: kustomize renders the Kubernetes manifests
(tests/unit/test_kubernetes.py, tests/unit/test_kubernetes_kafka.py) offline, with no cluster; the compose CLI
merges the compose files (tests/unit/test_compose_cluster.py, tests/unit/test_compose_hivemq.py) with no engine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts.runtime.local import ROOT
from scripts.testkit.compose_files import compose_cli, merged_services

RENDERERS = (("kubectl", "kustomize"), ("kustomize", "build"))


def kustomize_command() -> list[str] | None:
    """`kubectl kustomize`, else a standalone `kustomize build` (on PATH or in .deps/bin, where .ci/run installs it
    when neither exists), else None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), str(ROOT / ".deps" / "bin")])
    for program, verb in RENDERERS:
        found = shutil.which(program, path=path)
        if found:
            return [found, verb]
    return None


@pytest.fixture
def render():
    """kustomize (offline, no cluster), kubectl's or its own, as a function: a folder -> its rendered documents."""
    command = kustomize_command()
    if command is None:
        missing = "neither kubectl nor kustomize is installed (.ci/run installs kustomize into .deps/bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: CI must render the manifests")
        pytest.skip(f"{missing}: the structure checks still ran")

    def rendered(folder: Path) -> list[dict]:
        built = subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        return [doc for doc in yaml.safe_load_all(built.stdout) if doc]

    return rendered


@pytest.fixture(scope="session")
def compose_render():
    """`render(root, *layers, **environment)`: the services of compose/'s `layers` as the compose CLI merges them
    offline (scripts/testkit/compose_files.py)."""
    cli = compose_cli()
    if cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no compose CLI: CI must render the compose files")
        pytest.skip("no compose CLI (docker-compose or the docker compose plugin) to merge the compose files")
    return lambda root, *layers, **environment: merged_services(cli, root, *layers, **environment)
