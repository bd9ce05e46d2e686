"""What every benchmark section gets: private servers on free ports, and a way to measure processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.settings import KafkaSecurity
from scripts.runtime.local import ROOT, KafkaNode, MosquittoNode
from scripts.runtime.services import inherited_env


@dataclass
class BenchContext:
    kafka: KafkaNode
    mosquitto: MosquittoNode
    work_dir: Path
    quick: bool = False
    results: dict = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def kafka_security(self) -> KafkaSecurity:
        """How this process's own Kafka clients log in to this run's Kafka: as `admin` on a secured node."""
        return self.kafka.admin_security

    @property
    def mqtt_port(self) -> int:
        return self.mosquitto.port

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a service process pointed at this run's servers; no identity is inherited (a service
        on a secured node is given its own in `extra`)."""
        env = inherited_env()
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            MQTT_HOST="127.0.0.1",
            MQTT_PORT=str(self.mqtt_port),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
        )
        env.update(extra)
        return env


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads, from /proc."""
    return task_cpu_seconds(Path(f"/proc/{pid}"))


def task_cpu_seconds(task: Path) -> float:
    """User plus system CPU time of a /proc/<pid> or /proc/<pid>/task/<tid> entry."""
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, field: str) -> int | None:
    """A kB figure of /proc/<pid>/status (`VmRSS:`, `VmHWM:`), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


class ProcessSampler:
    """Samples a process's RSS and CPU time from /proc while it runs; peak RSS in MB, CPU in percent of one core."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_mb = 0.0
        self._cpu_start = self._cpu_seconds()
        self._t_start = time.monotonic()
        self.cpu_percent = 0.0
        self.cpu_seconds = 0.0  # CPU time used since the start, as of the last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _cpu_seconds(self) -> float:
        try:
            return process_cpu_seconds(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            return 0.0

    def _rss_mb(self) -> float:
        return (status_kb(self.pid, "VmRSS:") or 0) / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, self._rss_mb())
            cpu = self._cpu_seconds()
            elapsed = time.monotonic() - self._t_start
            if cpu and elapsed > 0:
                self.cpu_seconds = cpu - self._cpu_start
                self.cpu_percent = 100 * self.cpu_seconds / elapsed
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mb": round(self.peak_rss_mb, 1), "cpu_percent": round(self.cpu_percent, 1)}


class MachineSampler:
    """The whole machine's busy CPU time (every core, every process: /proc/stat) since it was made."""

    cores = os.cpu_count() or 1

    def __init__(self) -> None:
        self._start = self._busy_seconds()

    @staticmethod
    def _busy_seconds() -> float:
        # cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        return self._busy_seconds() - self._start


def self_peak_rss_mb() -> float:
    """Peak RSS of this Python process (ru_maxrss is in KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_module(
    ctx: BenchContext, module: str, *args: str, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        python_module(module, *args),
        env=ctx.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
