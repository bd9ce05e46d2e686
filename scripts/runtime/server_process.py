"""A server run as a local process of its own session, tracked by a pid file: the base of the local runtime's
Kafka nodes, Mosquitto and the schema registry, and the port and process helpers they share."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

from common.errors import DependencyMissingError, LocalRuntimeError
from common.ports import port_in_use
from scripts.runtime.port_holder import port_taken_message
from scripts.runtime.prerequisites import TOOLS, find, install_hint

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the repository: its .run/ and .deps/ folders, its configs


def require(program: str) -> str:
    """The path of `program` (java, mvn, mosquitto, debootstrap), or a DependencyMissingError that names what to
    install; Java from JAVA_HOME or Homebrew's keg before the one on PATH, as `make setup` finds it."""
    tool = TOOLS[program]
    found = find(tool)
    if not found:
        raise DependencyMissingError(f"`{program}` not found. Install {install_hint(tool)}.")
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); read its state where /proc exists.
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "\nState:\tZ" not in status.read_text()
    return True


class ServerProcess(ABC):
    """A server run as a process of its own session, tracked by a pid file in its run folder."""

    moved_by = ""  # the settings that move it to other ports (`VAR=value ...`), for the "port taken" error

    def __init__(self, name: str, run_dir: Path, port: int) -> None:
        self.name = name
        self.run_dir = run_dir
        self.port = port
        self._process: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.out"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configuration, format storage: whatever must exist before the start."""

    @abstractmethod
    def answers(self) -> bool:
        """Whether the server serves its protocol now."""

    def start(self) -> bool:
        """Start the server unless it runs already; returns False when it was already running."""
        if self.is_running():
            return False
        for port in self.ports():
            if port_in_use(port):
                raise LocalRuntimeError(port_taken_message(port, self.name, self.moved_by))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_file, "ab") as out:
            process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self._process = process  # lets _reap() collect the child when this Python process started it
        log.info("started %s (pid %d) on port %d, log %s", self.name, process.pid, self.port, self.log_file)
        return True

    def ports(self) -> list[int]:
        return [self.port]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise LocalRuntimeError(f"{self.name} exited during start-up; see {self.log_file}:\n{self.tail_log()}")
            if self.answers():
                return
            time.sleep(0.5)
        raise LocalRuntimeError(f"{self.name} did not answer within {timeout:.0f} s; see {self.log_file}")

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`; returns False when nothing was running."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """SIGKILL at once: a crash, for fault tests."""
        return self._signal_and_wait(signal.SIGKILL, 10.0)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, sig) if _is_group_leader(pid) else os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        if pid_alive(pid):
            log.warning("%s (pid %d) ignored %s for %.0f s; killing it", self.name, pid, sig.name, timeout)
            os.killpg(pid, signal.SIGKILL) if _is_group_leader(pid) else os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                self._reap()
                time.sleep(0.1)
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", self.name, pid)
        return True

    def _reap(self) -> None:
        if self._process is not None:
            self._process.poll()


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
