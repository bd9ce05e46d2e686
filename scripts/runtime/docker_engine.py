"""The docker CLI and whether an engine answers it: one place for the scripts and the tests that use Docker."""

from __future__ import annotations

import shutil
import subprocess


def docker_path() -> str:
    """The docker CLI on PATH (plain `docker` when there is none, so that the error names the missing program)."""
    return shutil.which("docker") or "docker"


def docker_answers(timeout: float = 5.0) -> bool:
    """Whether a Docker engine answers `docker info` (DOCKER_HOST honoured)."""
    try:
        return subprocess.run([docker_path(), "info"], capture_output=True, timeout=timeout).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False
