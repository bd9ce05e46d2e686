"""The `java_serving` section: the Java serving program (ml/streams/, Kafka Streams, exactly once) beside the Python
predictor, each at the `predictor` section's load (100,000 cars, 10,000 readings/s for 60 s; --quick: 10,000 cars
for 10 s) on topics of its own, one after the other in the same run, with the same untrained model of the training
defaults' size; then the model alone, called from this process on batches of windows: the cost per window that
neither program can remove (both run TensorFlow 2.16's runtime: the Python one, and TensorFlow Java 1.0.0's).

Per program: CPU µs per reading (the process's every thread, from /proc), readings/s, latency (reading on Kafka ->
prediction on Kafka) p50/p99, peak RSS, start-up time (process start -> ready with every partition), and, because
the Java program writes each car's window to a changelog topic and the Python one keeps it in memory, the Kafka
broker's CPU µs per reading while it ran: the cost that exactly-once state moves to the broker.
"""

from __future__ import annotations

from pathlib import Path

from scripts.bench.context import BenchContext, ProcessSampler
from scripts.bench.predictor import bare_model, bench_model, load_size, serve_under_load
from scripts.runtime.streams import java_serving_command


def _serve(ctx: BenchContext, name: str, program: list[str] | None, model_dir: Path, cars: int, seconds: float) -> dict:
    broker = ProcessSampler(ctx.kafka.pid())
    figures = serve_under_load(ctx, name, program, model_dir, cars, seconds)
    broker.stop()
    figures["kafka_cpu_us_per_reading"] = round(1e6 * broker.cpu_seconds / max(figures["predictions"], 1), 1)
    return figures


def run(ctx: BenchContext) -> dict:
    cars, seconds = load_size(ctx)
    model_dir, model = bench_model(ctx, "java-serving")
    python = _serve(ctx, "serving-python", None, model_dir, cars, seconds)
    java = _serve(ctx, "serving-java", java_serving_command(), model_dir, cars, seconds)
    windows_per_s, model_cpu_us = bare_model(model, 3.0 if ctx.quick else 10.0)
    return {
        "python": python,
        "java": java,
        "model_windows_per_s": round(windows_per_s, 1),
        "model_cpu_us_per_window": round(model_cpu_us, 1),
        "java_cpu_over_model": round(java["cpu_us_per_reading"] / model_cpu_us, 2),
        "python_cpu_over_model": round(python["cpu_us_per_reading"] / model_cpu_us, 2),
    }
