"""The `machine` section: what the figures were measured on, and how fast it was at the time.

`reference_cpu_ms` is the CPU time of one fixed piece of this stack's own work (the simulator's JSON payloads
and Avro encoding and decoding of the same readings), the best of three: the same machine measured 25 % fewer
readings/s end to end on one day than on the day before with the same code and no steal in /proc/stat, so a
reader needs a figure that compares the machine itself between runs.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

from common import schemas
from common.avro import AvroCodec
from scripts.bench.context import BenchContext
from scripts.runtime.local import KAFKA_VERSION
from simulator.fleet import Fleet
from simulator.payload import encode_step

REFERENCE_READINGS = 20_000


def _mosquitto_version() -> str:
    out = subprocess.run([_which_mosquitto(), "-h"], capture_output=True, text=True).stdout
    return out.splitlines()[0].removeprefix("mosquitto version ").strip() if out else "unknown"


def _which_mosquitto() -> str:
    from scripts.runtime.local import require

    return require("mosquitto")


def reference_cpu_ms() -> float:
    """CPU milliseconds of a fixed workload, the best of three runs."""
    fleet = Fleet(REFERENCE_READINGS, seed=1)
    step = fleet.step()
    codec = AvroCodec(schemas.READING, "reference")
    readings = [{**reading, "out_of_range": [], "seq_origin": "SENDER"} for reading in step.readings(fleet.car_ids)]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        encode_step(step, fleet.car_ids, 0, REFERENCE_READINGS)
        for value in [codec.encode(reading) for reading in readings]:
            codec.decode(value)
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


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
        "reference_cpu_ms": reference_cpu_ms(),
    }
