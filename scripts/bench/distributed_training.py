"""The `distributed_training` section: `python -m ml train --workers N` for N = 1, 2 and 4 on the same readings
(one topic of 4 partitions holding the demo's history fleet, written once), each run a subprocess with the same
seed. Per run: wall time (process start to exit), the training loop's time, how long the processes outlive the
artifact, epochs, training samples/s in all and per worker, CPU seconds of the launcher and its workers, peak RSS
of each worker and the held-out figures.

Then two pieces of arithmetic from those figures, labelled as such: the largest history one run trains within
10 minutes on this machine, and what a day of the reference fleet (100,000 cars, a reading per 10 s) would need
in worker-seconds and in the chief's memory. The chief's bytes per reading are measured as the growth of its
peak RSS between a 1-worker run on half the cars and the 1-worker run on all of them.

Every worker of a run shares this machine's cores with the others (and with Kafka): with more workers than cores
they are oversubscribed, and their samples/s say what one machine gives, not what separate machines would.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from ml.training.settings import FitSettings
from scripts.bench.context import BenchContext, MachineSampler, python_module, run_module, status_kb
from scripts.demo.plan import HISTORY_CARS, HISTORY_READINGS_PER_CAR, MAX_CARS
from scripts.demo.summary import latest_model_metadata
from scripts.runtime.local import ROOT
from scripts.testkit.processes import child_pids, worker_index
from scripts.testkit.readings import write_readings
from simulator.fleet import FleetConfig, generate_readings

PARTITIONS = 4
WORKERS = (1, 2, 4)
BUDGET_S = 600.0  # "the largest history one run trains within 10 minutes"
POLL_S = 0.5
RUN_TIMEOUT_S = 1800.0
QUICK_EPOCHS = 3
ARITHMETIC = "arithmetic from the measured figures, not a measurement"
MB = 1024 * 1024
GB = 1024**3  # as the `machine` section's memory_gb


def largest_history(
    budget_s: float, startup_s: float, readings: int, wall_s: float, loop_s: float, epochs: int, windows: int,
    samples_per_s: float,
) -> dict[str, Any]:  # fmt: skip
    """How many readings one 1-worker run trains within `budget_s`, with its cost linear in the readings: the
    start-up fixed, the read and the evaluation (wall time less loop and start-up) per reading, the loop
    `epochs` passes over the windows at the measured windows/s."""
    outside_per_reading = (wall_s - loop_s - startup_s) / readings
    windows_per_reading = windows / readings
    loop_per_reading = epochs * windows_per_reading / samples_per_s
    largest = (budget_s - startup_s) / (outside_per_reading + loop_per_reading)
    fleet_per_s = MAX_CARS / FleetConfig().interval_s
    return {
        "kind": ARITHMETIC,
        "formula": "readings = (budget_s - startup_s) / (outside_loop_s_per_reading + epochs * windows_per_reading "
        "/ samples_per_s), outside_loop_s_per_reading = (wall_s - loop_s - startup_s) / readings measured",
        "budget_s": budget_s,
        "startup_s": round(startup_s, 1),
        "outside_loop_s_per_reading": outside_per_reading,
        "windows_per_reading": round(windows_per_reading, 3),
        "epochs": epochs,
        "samples_per_s": samples_per_s,
        "loop_s_per_reading": loop_per_reading,
        "readings": int(largest),
        "reference_fleet_minutes": round(largest / fleet_per_s / 60, 2),
    }


def fleet_day(
    samples_per_s_per_worker: float, epochs: int, outside_loop_s_per_reading: float, chief_bytes_per_reading: float,
    memory_gb: float,
) -> dict[str, Any]:  # fmt: skip
    """A day of the reference fleet at the measured rates: worker-seconds of the loop, workers for one hour, the
    chief's read and evaluation alone, and the memory of a chief that holds every reading decoded."""
    interval_s = FleetConfig().interval_s
    readings = MAX_CARS * 86_400 / interval_s
    defaults = FitSettings.model_fields
    train_share = 1 - defaults["validation_fraction"].default - defaults["test_fraction"].default
    windows = readings * train_share
    per_epoch = windows / samples_per_s_per_worker
    per_run = per_epoch * epochs
    chief_gb = readings * chief_bytes_per_reading / GB
    chief_hours = readings * outside_loop_s_per_reading / 3600
    fits_hours = memory_gb * GB / chief_bytes_per_reading / (MAX_CARS * 3600 / interval_s)
    return {
        "kind": ARITHMETIC,
        "formula": "readings = cars * 86400 / interval_s; windows = readings * train_share (a car's day of 8,640 "
        "readings loses about 1 % to the window's and horizon's edges); worker_s_per_epoch = windows / "
        "samples_per_s_per_worker; workers_for_one_hour = ceil(worker_s_per_run / 3600), the loop alone and "
        "workers adding up linearly; chief_read_and_evaluate_hours = readings * outside_loop_s_per_reading / 3600 (the "
        "chief alone); chief_memory_gb = readings * chief_bytes_per_reading",
        "cars": MAX_CARS,
        "interval_s": interval_s,
        "readings": int(readings),
        "train_share": round(train_share, 2),
        "windows": int(windows),
        "samples_per_s_per_worker": samples_per_s_per_worker,
        "epochs": epochs,
        "worker_s_per_epoch": round(per_epoch),
        "worker_s_per_run": round(per_run),
        "workers_for_one_hour": math.ceil(per_run / 3600),
        "chief_read_and_evaluate_hours": round(chief_hours, 1),
        "chief_bytes_per_reading": round(chief_bytes_per_reading),
        "chief_memory_gb": round(chief_gb, 1),
        "machine_memory_gb": memory_gb,
        "fleet_hours_in_machine_memory": round(fits_hours, 2),
        "conclusion": f"the chief holds every reading decoded: a day needs about {chief_gb:,.0f} GB in it, "
        f"{chief_gb / memory_gb:,.0f} times this machine's memory, and its read and evaluation alone about "
        f"{chief_hours:,.0f} hours, whatever the workers; the data must be cut to a history window (--start-time, "
        "--max-records) or the evaluation split off the chief so that it too reads only a share",
    }


class PeakRss:
    """Peak RSS (VmHWM, the kernel's own high-water mark) of a training run's processes, polled while it runs:
    with one worker the process itself, with several the launcher and each worker it started."""

    def __init__(self, pid: int, workers: int) -> None:
        self.pid, self.workers = pid, workers
        self.kb: dict[int | str, int] = {}

    def poll(self) -> None:
        launcher = status_kb(self.pid, "VmHWM:")
        if launcher is not None:
            self.kb[0 if self.workers == 1 else "launcher"] = launcher
        if self.workers == 1:
            return
        for child in child_pids(self.pid):
            index, peak = worker_index(child), status_kb(child, "VmHWM:")
            if index is not None and peak is not None:
                self.kb[index] = max(self.kb.get(index, 0), peak)

    def per_worker_mb(self) -> list[float | None]:
        return [round(self.kb[i] / 1024, 1) if i in self.kb else None for i in range(self.workers)]

    def launcher_mb(self) -> float | None:
        return round(self.kb["launcher"] / 1024, 1) if "launcher" in self.kb else None


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_run(ctx: BenchContext, topic: str, workers: int, name: str, *extra: str) -> dict[str, Any]:
    """One `python -m ml train --workers N`: its figures and the artifact's metadata.json."""
    model_dir = Path(ctx.work_dir) / name
    log_path = Path(ctx.work_dir) / f"{name}.log"
    command = python_module(
        "ml", "train", "--workers", str(workers), "--topic", topic, "--model-dir", str(model_dir), *extra
    )
    cpu_before = _cpu_of_children()  # the launcher's rusage counts the workers it waited for
    machine = MachineSampler()
    started = time.monotonic()
    with log_path.open("w") as output:
        process = subprocess.Popen(command, env=ctx.env(), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        peaks = PeakRss(process.pid, workers)
        while True:
            peaks.poll()
            try:
                process.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started > RUN_TIMEOUT_S:
                    process.kill()
    wall = time.monotonic() - started
    ended = time.time()
    cpu = _cpu_of_children() - cpu_before
    machine_cpu = machine.cpu_seconds()
    metadata = latest_model_metadata(model_dir)
    if process.returncode != 0 or metadata is None:
        raise RuntimeError(f"{' '.join(command[1:])} exited {process.returncode}: {log_path.read_text()[-2000:]}")
    training, lstm = metadata["training"], metadata["metrics"]
    written = max(path.stat().st_mtime for path in model_dir.rglob("*") if path.is_file())
    sizes = {
        int(p): end - training["start_offsets"][p] for p, end in training["end_offsets"].items()
    }  # records per partition
    return {
        "workers": workers,
        "wall_s": round(wall, 1),
        "loop_s": training["seconds"],
        "outside_loop_s": round(wall - training["seconds"], 1),
        "after_artifact_s": round(ended - written, 1),  # the artifact's last file written to the last exit
        "epochs": training["epochs"],
        "windows": sum(training["windows_per_worker"]),
        "samples_per_s": training["samples_per_s"],
        "samples_per_s_per_worker": round(training["samples_per_s"] / workers, 1),
        "cpu_s": round(cpu, 1),
        "cores_busy": round(cpu / wall, 2),
        "machine_cpu_s": round(machine_cpu, 1),  # every process's: Kafka's, and any other work on the machine
        "readings_read_per_worker": [training["readings"]]
        + [sum(sizes[p] for p in share) for share in training["partitions_per_worker"][1:]],
        "peak_rss_mb_per_worker": peaks.per_worker_mb(),
        "launcher_peak_rss_mb": peaks.launcher_mb(),
        "pr_auc": lstm["pr_auc"],
        "gbm_pr_auc": metadata["baselines"]["gbm"]["pr_auc"],
        "warned_share": lstm["episodes"]["warned_share"],
        "false_alerts_per_healthy_car_hour": lstm["episodes"]["false_alerts_per_healthy_car_hour"],
        "readings": training["readings"],
    }


def startup_seconds(ctx: BenchContext) -> float:
    """Process start to exit of `python -m ml train --help`: the interpreter and the imports (TensorFlow, Keras)
    every run pays before it reads a record."""
    started = time.monotonic()
    done = run_module(ctx, "ml", "train", "--help")
    if done.returncode != 0:
        raise RuntimeError(f"python -m ml train --help exited {done.returncode}: {done.stderr[-2000:]}")
    return time.monotonic() - started


def run(ctx: BenchContext) -> dict:
    cars, per_car = (40, 300) if ctx.quick else (HISTORY_CARS, HISTORY_READINGS_PER_CAR)  # the demo's history
    extra = ("--epochs", str(QUICK_EPOCHS)) if ctx.quick else ()
    topic, half_topic = "bench-distributed", "bench-distributed-half"
    readings = write_readings(ctx.bootstrap, ctx.kafka_security, topic, generate_readings(cars, per_car), PARTITIONS)
    write_readings(ctx.bootstrap, ctx.kafka_security, half_topic, generate_readings(cars // 2, per_car), PARTITIONS)
    startup = startup_seconds(ctx)
    runs = [train_run(ctx, topic, n, f"distributed-{n}", *extra) for n in WORKERS]
    half = train_run(ctx, half_topic, 1, "distributed-half", *extra)
    one = runs[0]
    chief_bytes = (one["peak_rss_mb_per_worker"][0] - half["peak_rss_mb_per_worker"][0]) * MB
    chief_bytes /= one["readings"] - half["readings"]
    history = largest_history(
        BUDGET_S, startup, readings, one["wall_s"], one["loop_s"], one["epochs"], one["windows"], one["samples_per_s"]
    )
    memory_gb = (
        ctx.results.get("machine", {}).get("memory_gb") or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB
    )
    cores = os.cpu_count() or 1
    return {
        "readings": readings,
        "cars": cars,
        "partitions": PARTITIONS,
        "cores": cores,
        "oversubscribed": f"{', '.join(str(n) for n in WORKERS if n > cores) or 'no'} workers on {cores} cores "
        "(with Kafka beside them): each worker's threads share the cores",
        "startup_s": round(startup, 1),
        "runs": [{k: v for k, v in r.items() if k != "readings"} for r in runs],
        "chief_memory_probe": {
            "readings": [half["readings"], one["readings"]],
            "peak_rss_mb": [half["peak_rss_mb_per_worker"][0], one["peak_rss_mb_per_worker"][0]],
            "bytes_per_reading": round(chief_bytes),
        },
        "largest_history_10min": history,
        "fleet_day": fleet_day(
            one["samples_per_s_per_worker"],
            one["epochs"],
            history["outside_loop_s_per_reading"],
            chief_bytes,
            memory_gb,
        ),  # fmt: skip
    }
