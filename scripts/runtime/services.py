"""The stack's services as child processes: `python -m simulator|bridge|ml ...` with an environment of their own.

Shared by the demo, the end-to-end tests and the end-to-end benchmark. Each service writes its output to a log
file (tailed into error messages); stopping sends SIGTERM, waits, then SIGKILL, so that a service gets the chance
to flush and commit before it goes. `ServiceGroup` stops everything it started, in reverse order, also when the
code around it fails or is interrupted.

A `Containers` launcher runs the same commands in containers of the services' image instead (the demo's compose
runtime): `docker run` in the foreground on the compose project's network, so that the child process is the
docker CLI, which passes SIGTERM on to the service and exits with its code; the folders whose paths the
arguments name are mounted at the same paths, and the container runs as this user, so files land where the
host expects them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from common.cli import env_name
from common.errors import CarStreamError
from common.settings import KafkaSecurity, MqttSettings
from scripts.runtime.docker_engine import docker_path
from scripts.runtime.local import ROOT
from simulator.settings import PublishSettings

log = logging.getLogger(__name__)


class ServiceError(CarStreamError):
    """A service exited when it should not have, or did not finish in time."""


def _variables(settings: type, *fields: str) -> set[str]:
    return {env_name(settings, field, settings.model_fields[field]) for field in fields}


# What says who a process is, named by the settings that read it: the Kafka identity, MQTT credentials, the fleet
# secret. A child never inherits these from this process: each service is given its own.
IDENTITY_VARIABLES = frozenset(
    KafkaSecurity.variables()
    | _variables(MqttSettings, "mqtt_username", "mqtt_password")
    | _variables(PublishSettings, "fleet_secret")
)


def inherited_env() -> dict[str, str]:
    """This process's environment less every identity (IDENTITY_VARIABLES): the base of a child's."""
    return {key: value for key, value in os.environ.items() if key not in IDENTITY_VARIABLES}


def service_env(
    bootstrap: str, mqtt_host: str, mqtt_port: int, registry_url: str | None = None, **extra: str
) -> dict[str, str]:
    """This process's environment pointed at the given servers, with the repository on the Python path. Identities
    (Kafka and MQTT credentials, the fleet secret) are not inherited: each service is given its own (`extra`)."""
    env = inherited_env()
    env.pop("SCHEMA_REGISTRY_URL", None)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        MQTT_HOST=mqtt_host,
        MQTT_PORT=str(mqtt_port),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    )
    if registry_url:
        env["SCHEMA_REGISTRY_URL"] = registry_url
    env.update(extra)
    return env


class Containers:
    """Runs a service as `docker run --rm --init <image> python -m <module> <args>` on a network of containers, or
    another image's own entrypoint with `<args>` (the Java serving program's image)."""

    def __init__(self, image: str, network: str, mounts: Sequence[Path], prefix: str) -> None:
        self.image = image
        self.network = network
        self.mounts = [Path(m).resolve() for m in mounts]
        self.prefix = prefix

    def command(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        env: Mapping[str, str],
        publish: Mapping[int, int],
        image: str | None = None,
    ) -> list[str]:
        run = [image] if image else [self.image, "python", "-m", module]
        volumes = [f"--volume={folder}:{folder}" for folder in self.mounts]
        variables = [f"--env={key}={value}" for key, value in env.items()]
        ports = [f"--publish=127.0.0.1:{host}:{inside}" for inside, host in publish.items()]
        return [
            docker_path(),
            "run",
            "--rm",
            "--init",
            f"--name={self.prefix}-{name}",
            f"--network={self.network}",
            f"--user={os.getuid()}:{os.getgid()}",
            "--env=HOME=/tmp",
            *volumes,
            *variables,
            *ports,
            *run,
            *args,
        ]

    def remove(self, name: str) -> None:
        """After a SIGKILL of the docker CLI the container would go on: remove it."""
        subprocess.run([docker_path(), "rm", "--force", f"{self.prefix}-{name}"], capture_output=True)


class Service:
    """One `python -m <module> <args>` child process (or container), logging to `log_dir/<name>.log`; `program`
    replaces `python -m <module>` with another local command (the Java serving program's `java -jar ...`), `image`
    the services' image and `python -m <module>` in a container with another image and its entrypoint."""

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        containers: Containers | None = None,
        publish: Mapping[int, int] | None = None,
        program: Sequence[str] | None = None,
        image: str | None = None,
    ) -> None:
        """`publish`: a container's port -> the host's port (on 127.0.0.1); a local process binds its own."""
        self.name = name
        self.containers = containers
        if program is not None and containers is not None:
            raise ValueError(f"{name}: a program of its own runs as a local process only")
        if image is not None and containers is None:
            raise ValueError(f"{name}: an image runs in a container only")
        if containers is None:
            self.command = [*(program or (sys.executable, "-m", module)), *args]
            self.env = dict(env)
        else:  # the docker CLI gets this process's environment (DOCKER_HOST); the service gets `env`
            self.command = containers.command(name, module, args, env, publish or {}, image)
            self.env = dict(os.environ)
        self.log_file = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Service:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            # A session of its own: Ctrl-C in the terminal reaches the orchestrator only, which then stops the
            # services in order (the bridge must drain before the broker goes, for instance).
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        where = (
            " ".join(self.command[1:]) if self.containers is None else f"container {self.containers.prefix}-{self.name}"
        )
        log.info("started %s (pid %d): %s; log %s", self.name, self.process.pid, where, self.log_file)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def check_running(self) -> None:
        """Raise a ServiceError with the log's tail when the service has exited."""
        if self.process is not None and not self.running():
            raise ServiceError(
                f"{self.name} exited with code {self.returncode}; last lines of {self.log_file}:\n{self.tail()}"
            )

    def wait(self, timeout: float) -> int:
        """Wait for the service to finish on its own; its exit code, or a ServiceError after `timeout`."""
        assert self.process is not None, f"{self.name} was never started"
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ServiceError(
                f"{self.name} did not finish within {timeout:.0f} s; last lines of {self.log_file}:\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit code (None when never started)."""
        if self.process is None:
            return None
        if self.running():
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, self.pid, timeout)
                self._signal(signal.SIGKILL)
                self.process.wait()
                if self.containers is not None:
                    self.containers.remove(self.name)
            log.info("stopped %s (pid %d, exit code %s)", self.name, self.pid, self.returncode)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL at once: a crash."""
        if self.running():
            self._signal(signal.SIGKILL)
            self.process.wait()
            if self.containers is not None:
                self.containers.remove(self.name)

    def _signal(self, sig: signal.Signals) -> None:
        # The whole process group: a service's own children (none today) go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        try:
            return self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


class ServiceGroup:
    """Services started together and stopped in reverse order on exit, whatever happened in between."""

    def __init__(
        self, env: Mapping[str, str], log_dir: Path, stop_timeout: float = 30.0, containers: Containers | None = None
    ) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.stop_timeout = stop_timeout
        self.containers = containers
        self.services: list[Service] = []

    def start(
        self,
        name: str,
        module: str,
        *args: str,
        publish: Mapping[int, int] | None = None,
        program: Sequence[str] | None = None,
        image: str | None = None,
        **env: str,
    ) -> Service:
        """Service(...).start() with the group's environment under `env`; `program` and `image` as for Service."""
        service = Service(
            name, module, args, {**self.env, **env}, self.log_dir, self.containers, publish, program, image
        )
        self.services.append(service)
        return service.start()

    def check(self) -> None:
        """Raise when a long-running service of the group has died."""
        for service in self.services:
            if service.returncode not in (None, 0):
                service.check_running()

    def stop_all(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop(self.stop_timeout)
            except Exception as exc:  # stopping the others matters more than this one's error
                log.error("could not stop %s: %s", service.name, exc)

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    interval: float = 0.5,
    what: str = "condition",
    check: Callable[[], None] | None = None,
) -> None:
    """Poll `condition()` until true; `check()` (e.g. ServiceGroup.check) runs each round to fail fast."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if condition():
            return
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f} s waiting for {what}")
