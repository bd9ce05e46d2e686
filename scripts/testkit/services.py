"""A service under test: `python -m <module>` as a child process (scripts/runtime/services.py's Service: its own
log file, SIGTERM then SIGKILL) whose failures raise AssertionError with the last lines of its log, so that a
test that fails because a service died or exited non-zero shows why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from scripts.runtime.local import ROOT
from scripts.runtime.services import Service, ServiceError
from scripts.testkit.metrics import Metrics, scrape, scrape_or_empty

TAIL_LINES = 60


class ChildService(Service):
    """One service under test. `metrics_port`: where it serves /metrics, /healthz and /readyz (its settings must
    name the same port). Start it with `start()`; `stop_ok()` is the end of a test that expects a clean exit."""

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        metrics_port: int | None = None,
        program: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name, module, args, env, log_dir, program=program)
        self.metrics_port = metrics_port

    def start(self) -> ChildService:
        # A log of its own: lines an earlier service left there would satisfy wait_for_log.
        if self.log_file.exists():
            raise AssertionError(f"{self.log_file} exists: give each service of a test a name of its own")
        super().start()
        return self

    # -- what it says -------------------------------------------------------------------------------------------

    def log(self) -> str:
        """The whole log so far."""
        return "\n".join(self.log_lines())

    def failure(self, what: str) -> str:
        """`what` happened to this service, with the last lines of its log: an assertion's message."""
        return f"{self.name}: {what}; last {TAIL_LINES} lines of {self.log_file}:\n{self.tail(TAIL_LINES)}"

    def assert_running(self) -> None:
        if not self.running():
            raise AssertionError(self.failure(f"exited with code {self.returncode}"))

    @property
    def metrics_url(self) -> str:
        if self.metrics_port is None:
            raise AssertionError(f"{self.name} was started without a metrics port")
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> Metrics:
        """One scrape of its /metrics (OSError when it does not answer)."""
        return scrape(self.metrics_url)

    def metric(self, name: str, default: float = 0.0, **labels: str) -> float:
        """One sample of one scrape (scripts/testkit/metrics.py, Metrics.value)."""
        return self.metrics().value(name, default, **labels)

    def health(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) of GET `path` on its metrics port (/healthz, /readyz); (0, why) while nothing
        answers there."""
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode().strip()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode().strip()
        except OSError as error:
            return 0, str(error)

    # -- waiting on it --------------------------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], object], what: str, timeout: float = 90.0) -> object:
        """Poll `condition()` until it returns something true and return that; AssertionError with the log's tail
        when the service exits meanwhile or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running()
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(self.failure(f"no {what} within {timeout:.0f} s"))
            time.sleep(0.2)

    def wait_for_log(self, text: str, timeout: float = 90.0, times: int = 1) -> None:
        """Until `text` is in `times` lines of its log."""
        self.wait_until(lambda: sum(text in line for line in self.log_lines()) >= times, repr(text), timeout)

    def wait_for_metrics(self, condition: Callable[[Metrics], bool], what: str, timeout: float = 60.0) -> Metrics:
        """Until a scrape satisfies `condition` (a scrape of a service that does not answer yet has no samples);
        returns that scrape."""

        def satisfied() -> Metrics | None:
            metrics = scrape_or_empty(self.metrics_url)
            return metrics if metrics and condition(metrics) else None

        found = self.wait_until(satisfied, what, timeout)
        assert isinstance(found, Metrics)
        return found

    # -- its end --------------------------------------------------------------------------------------------------

    def finish(self, timeout: float = 120.0) -> str:
        """Wait for it to exit on its own; AssertionError (with the log's tail) unless it exits 0 in `timeout`
        seconds. Returns its whole log."""
        try:
            code = self.wait(timeout)
        except ServiceError:  # still running
            self.kill()
            raise AssertionError(self.failure(f"did not finish within {timeout:.0f} s")) from None
        if code != 0:
            raise AssertionError(self.failure(f"exited with code {code}"))
        return self.log()

    def stop_ok(self, timeout: float = 30.0) -> None:
        """SIGTERM (SIGKILL after `timeout`); AssertionError with the log's tail unless it exits 0, or when it had
        exited already with another code."""
        code = self.stop(timeout)
        if code != 0:
            raise AssertionError(self.failure(f"exited with code {code} on SIGTERM, expected 0"))


def python_env(**settings: str) -> dict[str, str]:
    """This process's environment with the repository on the Python path, unbuffered output and `settings`."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **settings}


def run_module(
    module: str, *args: str, timeout: float = 400.0, check: bool = True, **settings: str
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` to its end with `python_env(**settings)`, output captured; with `check`, an
    AssertionError showing the end of its output unless it exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=python_env(**settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"python -m {module} {' '.join(args)} exited with code {result.returncode}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result
