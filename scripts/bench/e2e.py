"""The `e2e` section: 100,000 cars x one reading per 10 s (10,000 readings/s) for 60 s (10 s with --quick) through
every stage, each its own process: simulator -> Mosquitto -> bridge -> Kafka -> ml predict -> Kafka.

Counted after the run by reading both topics whole (scripts/stream_watch.py): `published` (the simulator's
summary), `in_kafka` (distinct (car_id, seq) on the readings topic), `predicted` (readings with a prediction that
names their event_time). At speedup 1 a reading's event_time is the moment the simulator was due to publish
it, so predicted_at - event_time is the latency from publish to prediction (`p50_ms`, `p99_ms`); split into
`due_to_kafka_*` (event_time to the bridge's Kafka timestamp, including any lag of the simulator behind its
schedule, `simulator_behind_schedule_s`) and `kafka_to_prediction_*`.
`readings_per_s` is end-to-end throughput: predicted readings over the span from the first reading's event_time
to the last prediction. Targets: 10,000 readings/s sustained, nothing lost, p99 under 1 s.

The model is the one the `training` section trained in this run when there is one; otherwise a small one is
trained here first (simulator data written straight to Kafka, `python -m ml train --epochs 2`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from common.kafka import ensure_topics
from scripts.bench.context import BenchContext, ProcessSampler, run_module
from scripts.bench.ml_read import write_readings
from scripts.demo_summary import latest_model_metadata, percentile
from scripts.services import Service, ServiceGroup, service_env, wait_for
from scripts.stream_watch import StreamState, StreamWatcher, end_offsets
from simulator.fleet import generate_readings

log = logging.getLogger(__name__)

CARS = 100_000
RATE = 0.1  # readings per car per second: one per 10 s
PARTITIONS = 4
TARGETS = {"readings_per_s": 10_000, "p99_ms": 1000}


def small_model_dir(ctx: BenchContext) -> Path:
    """The training section's model of this run, or a small one trained here."""
    trained = ctx.work_dir / "bench-models"
    if "error" not in ctx.results.get("training", {"error": "not run"}) and latest_model_metadata(trained):
        return trained
    model_dir = ctx.work_dir / "e2e-models"
    topic = "bench-e2e-training"
    write_readings(ctx.bootstrap, topic, generate_readings(20, 150, failure_rate=4.0))
    result = run_module(ctx, "ml", "train", "--topic", topic, "--model-dir", str(model_dir), "--epochs", "2")
    if result.returncode != 0:
        raise RuntimeError(f"ml train failed ({result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
    return model_dir


def _logged(service: Service, text: str, times: int = 1) -> Callable[[], bool]:
    return lambda: sum(text in line for line in service.log_lines()) >= times


def run(ctx: BenchContext) -> dict:
    seconds = 10 if ctx.quick else 60
    model_dir = small_model_dir(ctx)
    readings_topic, predictions_topic, dlq = "bench-e2e-readings", "bench-e2e-predictions", "bench-e2e-dlq"
    ensure_topics(ctx.bootstrap, {readings_topic: PARTITIONS, predictions_topic: PARTITIONS, dlq: 1})
    env = service_env(ctx.bootstrap, "127.0.0.1", ctx.mqtt_port)
    summary_file = ctx.work_dir / "e2e-simulator-summary.json"
    usage: dict[str, dict] = {}
    with ServiceGroup(env, ctx.work_dir / "e2e-logs") as services:
        bridge = services.start(
            "bridge", "bridge",
            BRIDGE_CLIENT_ID="bench-e2e-bridge", BRIDGE_METRICS_PORT="0",
            BRIDGE_KAFKA_TOPIC=readings_topic, BRIDGE_DLQ_TOPIC=dlq, BRIDGE_SESSION_EXPIRY="60",
        )  # fmt: skip
        predictor = services.start(
            "predictor", "ml", "predict",
            ML_GROUP_ID="bench-e2e-predictor", ML_MODEL_DIR=str(model_dir), ML_METRICS_PORT="0",
            ML_TOPIC=readings_topic, ML_OUTPUT_TOPIC=predictions_topic, ML_DLQ_TOPIC=dlq,
        )  # fmt: skip
        wait_for(_logged(bridge, "subscribing to"), 90, what="the bridge's subscription", check=services.check)
        wait_for(_logged(predictor, "assigned partition", PARTITIONS), 300, what="the predictor", check=services.check)
        time.sleep(2.0)
        simulator = services.start(
            "simulator", "simulator",
            "--cars", str(CARS), "--rate", str(RATE), "--duration", str(seconds), "--qos", "1",
            "--client-id", "bench-e2e-simulator", "--summary-file", str(summary_file), "--no-progress",
        )  # fmt: skip
        samplers = {s.name: ProcessSampler(s.pid) for s in (simulator, bridge, predictor)}
        wait_for(lambda: not simulator.running(), seconds + 300, what="the simulator", check=services.check)
        simulator_summary = json.loads(summary_file.read_text())
        published = simulator_summary["published"]

        _drain(lambda: _totals(ctx.bootstrap, readings_topic, predictions_topic), published, timeout=300)
        usage = {name: sampler.stop() for name, sampler in samplers.items()}
    result = _count(ctx, readings_topic, predictions_topic, published, seconds, usage)
    result["publish_msgs_per_s"] = simulator_summary["msgs_per_s"]
    result["publish_seconds"] = simulator_summary["seconds"]
    # A simulator that cannot keep its schedule publishes late: that lag is part of due_to_kafka and p50/p99.
    result["simulator_behind_schedule_s"] = round(simulator_summary["seconds"] - seconds, 1)
    log.info("e2e: %s", result)
    return result


def _totals(bootstrap: str, readings_topic: str, predictions_topic: str) -> tuple[int, int]:
    offsets = end_offsets(bootstrap, [readings_topic, predictions_topic])
    return (
        sum(v for (t, _), v in offsets.items() if t == readings_topic),
        sum(v for (t, _), v in offsets.items() if t == predictions_topic),
    )


def _drain(totals: Callable[[], tuple[int, int]], published: int, timeout: float, idle: float = 30.0) -> None:
    """Until the readings topic holds what was published and the predictions caught up, or nothing moves."""
    deadline, last, last_change = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        current = totals()
        if current[0] >= published and current[1] >= current[0]:
            return
        if current != last:
            last, last_change = current, time.monotonic()
        elif time.monotonic() - last_change > idle:
            log.warning("e2e: nothing moved for %.0f s (readings, predictions) = %s of %d", idle, current, published)
            return
        time.sleep(1.0)


def _count(
    ctx: BenchContext, readings_topic: str, predictions_topic: str, published: int, seconds: float, usage: dict
) -> dict:
    offsets = end_offsets(ctx.bootstrap, [readings_topic, predictions_topic])
    watcher = StreamWatcher(ctx.bootstrap, readings_topic, predictions_topic, {k: 0 for k in offsets}).start()
    try:
        records = sum(offsets.values())
        watcher.wait_until(lambda st: st.reading_records + st.prediction_records >= records, 600, interval=1.0)

        def figures(state: StreamState) -> dict:
            latencies = state.latencies_ms("event_time")
            to_kafka = [r.kafka_time - r.event_time for r in state.readings.values()]
            from_kafka = state.latencies_ms("kafka_time")
            first_event = min(r.event_time for r in state.readings.values())
            last_prediction = max(p.predicted_at for p in state.predictions.values())
            predicted = len(latencies)
            return {
                "in_kafka": len(state.readings),
                "predicted": predicted,
                "duplicate_predictions": state.duplicates,
                "readings_per_s": round(predicted / max(0.001, (last_prediction - first_event) / 1000), 1),
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies, default=None),
                "due_to_kafka_p50_ms": percentile(to_kafka, 50),
                "due_to_kafka_p99_ms": percentile(to_kafka, 99),
                "kafka_to_prediction_p50_ms": percentile(from_kafka, 50),
                "kafka_to_prediction_p99_ms": percentile(from_kafka, 99),
            }

        counted = watcher.read(figures)
    finally:
        watcher.stop()
    result = {
        "cars": CARS,
        "seconds": seconds,
        "offered_readings_per_s": CARS * RATE,
        "published": published,
        **counted,
        "lost": published - counted["in_kafka"],
        "unpredicted": counted["in_kafka"] - counted["predicted"],
        "target_readings_per_s": TARGETS["readings_per_s"],
        "target_p99_ms": TARGETS["p99_ms"],
    }
    for name, figures in usage.items():
        result[f"{name}_cpu_percent"] = figures["cpu_percent"]
        result[f"{name}_peak_rss_mb"] = figures["peak_rss_mb"]
    return result
