"""The `training` section: `python -m ml train` on the demo's history (300 cars x 300 readings) in Kafka; training
samples/s (windows per second of model.fit, all epochs), the wall time of the whole command, and from the report
on held-out cars: the PR-AUC of the LSTM and its baselines, the LSTM's episode figures at its alert threshold and
its Brier score before and after calibration."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from scripts.bench.context import ProcessSampler, python_module
from scripts.demo.plan import HISTORY_CARS, HISTORY_READINGS_PER_CAR
from scripts.runtime.local import ROOT
from scripts.testkit.readings import write_readings
from simulator.fleet import generate_readings

TARGET_SECONDS = 180


def run(ctx) -> dict:
    cars, per_car = (30, 200) if ctx.quick else (HISTORY_CARS, HISTORY_READINGS_PER_CAR)  # the demo's history fleet
    topic = "bench-training"
    readings = write_readings(ctx.bootstrap, ctx.kafka_security, topic, generate_readings(cars, per_car))
    model_dir = Path(ctx.work_dir) / "bench-models"
    started = time.monotonic()
    process = subprocess.Popen(
        python_module("ml", "train", "--topic", topic, "--model-dir", str(model_dir)),
        env=ctx.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = ProcessSampler(process.pid)
    output, _ = process.communicate(timeout=900)
    seconds = time.monotonic() - started
    usage = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"ml train failed ({process.returncode}): {output[-2000:]}")
    version = sorted(p for p in model_dir.iterdir() if not p.name.startswith("."))[-1]
    metadata = json.loads((version / "metadata.json").read_text())
    training = metadata["training"]
    lstm, baselines, comparison = metadata["metrics"], metadata["baselines"], metadata["comparison"]
    episodes = lstm["episodes"]
    return {
        "readings": readings,
        "cars": cars,
        "epochs": training["epochs"],
        "samples_per_s": training["samples_per_s"],
        "fit_seconds": training["seconds"],
        "seconds": round(seconds, 1),
        "target_seconds": TARGET_SECONDS,
        "pr_auc": lstm["pr_auc"],
        "gbm_pr_auc": baselines["gbm"]["pr_auc"],
        "logistic_pr_auc": baselines["logistic"]["pr_auc"],
        "prevalence": lstm["prevalence"],
        "pr_auc_difference_vs_gbm": comparison["difference"] if comparison else None,
        "episodes": episodes["episodes"],
        "episodes_warned_share": episodes["warned_share"],
        "median_lead_s": episodes["median_lead_s"],
        "false_alerts_per_healthy_car_hour": episodes["false_alerts_per_healthy_car_hour"],
        "brier_uncalibrated": metadata["calibration"]["brier_test_uncalibrated"],
        "brier_calibrated": metadata["calibration"]["brier_test_calibrated"],
        **usage,
    }
