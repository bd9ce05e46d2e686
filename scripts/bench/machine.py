"""The `machine` section: what the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

from scripts.bench.context import BenchContext
from scripts.local_runtime import KAFKA_VERSION


def _mosquitto_version() -> str:
    out = subprocess.run([_which_mosquitto(), "-h"], capture_output=True, text=True).stdout
    return out.splitlines()[0].removeprefix("mosquitto version ").strip() if out else "unknown"


def _which_mosquitto() -> str:
    from scripts.local_runtime import require

    return require("mosquitto")


def run(ctx: BenchContext) -> dict:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    memory_kb = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal:")))
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "cpu": next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
            "",
        ),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": KAFKA_VERSION,
        "mosquitto": _mosquitto_version(),
        "tensorflow": version("tensorflow"),
        "tensorflow_io": version("tensorflow-io"),
        "confluent_kafka": version("confluent-kafka"),
        "paho_mqtt": version("paho-mqtt"),
    }
