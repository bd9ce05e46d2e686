"""The `predictor` section: `python -m ml predict` at the seed's largest load, beside the bare batched model.

A producer writes 10,000 readings/s of 100,000 cars (one reading per car every 10 s) into `car-sensor` for 60 s
(--quick: 10 s, 10,000 cars) while the predictor runs as its own process with an untrained model of the training
defaults' size (window 24, 32 LSTM units; ml/training/untrained_model.py), its alert threshold set so that alerts
stay rare.
Both topics stamp records with the broker's append time, so latency is "reading on Kafka -> prediction on Kafka":
the prediction's append time minus the reading's event_time, which the producer sets when it hands the reading to
Kafka (so the figure also holds the producer's own batching, a few ms). A reader at read_committed also tails the
predictions while the load runs: `visible_*` is when each prediction became readable to such a consumer, which for
a transactional writer (the Java serving program) comes after its append, when the transaction commits. Lag (high
watermark - committed offset of the predictor's group) is sampled every second: it must not grow while the load
runs. The same model is then timed alone in this process on batches of windows (model_windows_per_s): the ceiling
the predictor is compared with.

CPU is what the target is about (the machine is shared, so wall-clock rates say as much about the neighbours):
`cpu_us_per_reading` is the predictor process's CPU time (every thread: Python, TensorFlow, librdkafka; from
/proc) from the start of the load until its predictions are all committed, over the predictions it wrote;
`model_cpu_us_per_window` is this process's CPU time per window while the model runs alone, the part of it no
change to the predictor's own code can remove.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import schemas
from common.avro import AvroCodec
from common.kafka import client_config, producer_config
from common.settings import KafkaSecurity
from ml import artifact
from ml.training.untrained_model import save_untrained_model
from scripts.bench.context import BenchContext, ProcessSampler
from scripts.runtime.local import free_port
from scripts.runtime.services import Service, wait_for
from scripts.testkit.kafka import read_to_end
from scripts.testkit.metrics import scrape_or_empty
from scripts.testkit.readings import decoded
from simulator.fleet import generate_readings

log = logging.getLogger("bench.predictor")

PARTITIONS = 4
RATE = 10_000
WINDOW = 24
TICK_S = 0.02
ALERT_THRESHOLD = 0.99  # the untrained model hovers near 0.5: alerts as rare as a trained model's on a healthy fleet
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def _create_topics(bootstrap: str, security: KafkaSecurity, names: list[str]) -> None:
    admin = AdminClient(client_config(bootstrap, security))
    topics = [NewTopic(name, PARTITIONS, replication_factor=-1, config=LOG_APPEND_TIME) for name in names]
    for future in admin.create_topics(topics).values():
        future.result(30)


class LoadWriter(threading.Thread):
    """Writes `rate` readings/s round-robin over `cars` cars; event_time is the moment of produce()."""

    def __init__(
        self, bootstrap: str, security: KafkaSecurity, topic: str, cars: int, rate: int, seconds: float
    ) -> None:
        super().__init__(name="load-writer", daemon=True)
        self.topic, self.cars, self.rate, self.seconds = topic, cars, rate, seconds
        self.codec = AvroCodec(schemas.READING, topic)
        self.producer = Producer(producer_config(bootstrap, security, **{"queue.buffering.max.messages": 1_000_000}))
        self.templates = list(generate_readings(cars=50, readings_per_car=4, seed=1))
        self.car_ids = [f"car-{i + 1:05d}" for i in range(cars)]
        self.sent = 0

    def run(self) -> None:
        started = time.monotonic()
        total = int(self.rate * self.seconds)
        while self.sent < total:
            due = min(total, int((time.monotonic() - started) * self.rate))
            now_ms = int(time.time() * 1000)
            for i in range(self.sent, due):
                car = self.car_ids[i % self.cars]
                reading = {**self.templates[i % len(self.templates)], "car_id": car, "seq": i // self.cars}
                reading["event_time"] = now_ms
                self.producer.produce(self.topic, self.codec.encode(reading), car.encode())
            self.sent = due
            self.producer.poll(0)
            time.sleep(TICK_S)
        self.producer.flush(60)


class VisibilityWatch(threading.Thread):
    """Tails the predictions topic at read_committed, as their consumers read it, and keeps for each prediction the
    moment it became readable minus its reading's event_time. A transactional writer's predictions are appended
    before their transaction commits: their append time says when they were written, this says when they could be
    read."""

    def __init__(self, bootstrap: str, security: KafkaSecurity, topic: str) -> None:
        super().__init__(name="visibility-watch", daemon=True)
        self.codec = AvroCodec(schemas.PREDICTION, topic)
        config = client_config(bootstrap, security)
        config.update({"group.id": f"{topic}-watch", "isolation.level": "read_committed", "enable.auto.commit": False})
        self.consumer = Consumer(config)
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.latencies: list[int] = []
        self.event_times: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                # a short wait: consume() returns when it times out or holds num_messages, so it adds up to this
                messages = self.consumer.consume(num_messages=10_000, timeout=0.02)
                now_ms = int(time.time() * 1000)
                for message in messages:
                    if message.error() is None:
                        event_time = self.codec.decode(message.value())["event_time"]
                        self.latencies.append(now_ms - event_time)
                        self.event_times.append(event_time)
        finally:
            self.consumer.close()

    def figures(self, steady_from_ms: int) -> dict:
        latencies = np.asarray(self.latencies, dtype=np.float64)
        steady = latencies[np.asarray(self.event_times, dtype=np.int64) >= steady_from_ms]
        if not latencies.size:
            return {"visible_predictions": 0}
        return {
            "visible_predictions": int(latencies.size),
            "visible_p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "visible_p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "visible_steady_p99_ms": round(float(np.percentile(steady, 99)), 1) if steady.size else None,
        }


def _lag(consumer: Consumer, topic: str) -> int:
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    lag = 0
    for tp in consumer.committed(partitions, timeout=10):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        lag += high - (tp.offset if tp.offset >= 0 else low)
    return lag


STEADY_AFTER_MS = 10_000  # readings produced after the first 10 s of load count as steady state


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def _wait_ready(port: int, predictor: Service, timeout: float = 180) -> None:
    """Until the serving program (still running) is ready: the Python predictor owns every partition, the Java one
    (which reports no assignment) runs its Kafka Streams with a model loaded."""
    url = f"http://127.0.0.1:{port}/metrics"

    def ready() -> bool:
        if not _ready(port):
            return False
        metrics = scrape_or_empty(url)
        return metrics.value("predictor_serving_info", program="java") == 1 or (
            metrics.value("predictor_assigned_partitions") == PARTITIONS
        )

    wait_for(ready, timeout, what=f"{predictor.name} to be ready", check=predictor.check_running)


def _latencies(
    bootstrap: str, security: KafkaSecurity, topic: str
) -> tuple[np.ndarray, np.ndarray, set[tuple[str, int]]]:
    """Per prediction of the whole topic: Kafka append time of the prediction minus the reading's event_time, and
    that event_time; and the (car_id, seq) predicted."""
    messages = read_to_end(bootstrap, topic, timeout=120, security=security)
    predictions = decoded(messages, schemas.PREDICTION)
    latencies = [m.timestamp()[1] - p["event_time"] for m, p in zip(messages, predictions, strict=True)]
    event_times = [p["event_time"] for p in predictions]
    keys = {(p["car_id"], p["seq"]) for p in predictions}
    return np.asarray(latencies, dtype=np.float64), np.asarray(event_times, dtype=np.int64), keys


def bare_model(model: artifact.LoadedModel, seconds: float, batch: int = 1024) -> tuple[float, float]:
    """(windows per second, CPU µs per window) of the model called alone on batches of `batch` windows."""
    rng = np.random.default_rng(0)
    low = np.array([schemas.SENSOR_RANGES[f][0] for f in model.features], dtype=np.float32)
    high = np.array([schemas.SENSOR_RANGES[f][1] for f in model.features], dtype=np.float32)
    windows = (low + (high - low) * rng.random((batch, model.window, len(low)))).astype(np.float32)
    model.predict(windows)  # the first call traces the signature
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        model.predict(windows)
        done += batch
    return done / (time.perf_counter() - started), 1e6 * (time.process_time() - cpu_started) / done


def serve_under_load(
    ctx: BenchContext, name: str, program: Sequence[str] | None, model_dir: Path, cars: int, seconds: float
) -> dict:
    """One serving program (the Python predictor, or `program` with the same settings) on topics of its own at
    the load: the figures of the module's doc, and `startup_s`, from its start to its first readiness (/readyz)
    with every partition its own."""
    readings_topic, predictions_topic = f"bench-{name}-readings", f"bench-{name}-predictions"
    _create_topics(ctx.bootstrap, ctx.kafka_security, [readings_topic, predictions_topic])
    port, group = free_port(), f"bench-{name}"
    env = ctx.env(
        ML_MODEL_DIR=str(model_dir),
        ML_TOPIC=readings_topic,
        ML_OUTPUT_TOPIC=predictions_topic,
        ML_DLQ_TOPIC=f"bench-{name}-dlq",
        ML_GROUP_ID=group,
        ML_STREAMS_APPLICATION_ID=group,
        ML_STREAMS_STATE_DIR=str(ctx.work_dir / f"{name}-state"),
        ML_METRICS_PORT=str(port),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    launched = time.monotonic()
    args = ("predict",) if program is None else ()
    predictor = Service(name, "ml", args, env, ctx.work_dir, program=program).start()
    lag_reader = Consumer({"bootstrap.servers": ctx.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        _wait_ready(port, predictor)
        startup_s = time.monotonic() - launched
        sampler = ProcessSampler(predictor.pid)
        watch = VisibilityWatch(ctx.bootstrap, ctx.kafka_security, predictions_topic)
        watch.start()
        writer = LoadWriter(ctx.bootstrap, ctx.kafka_security, readings_topic, cars, RATE, seconds)
        started, started_ms = time.monotonic(), int(time.time() * 1000)
        writer.start()
        lags: list[int] = []
        while writer.is_alive():
            time.sleep(1.0)
            lags.append(_lag(lag_reader, readings_topic))
        produced_s = time.monotonic() - started
        while _lag(lag_reader, readings_topic) > 0 and time.monotonic() - started < seconds + 120:
            time.sleep(0.5)
        drained_s = time.monotonic() - started
        usage = sampler.stop()
        cpu_seconds = sampler.cpu_seconds
        deadline = time.monotonic() + 60
        while len(watch.latencies) < writer.sent and time.monotonic() < deadline:  # the last ones become readable
            time.sleep(0.2)
    finally:
        lag_reader.close()
        predictor.stop(60)
        watch.stopped.set()
    for line in predictor.log_lines():
        if " predictions in " in line:  # the predictor's own account of where each batch's time went
            log.info("%s: %s", name, line.split(": ", 1)[-1])
    latencies, event_times, predicted = _latencies(ctx.bootstrap, ctx.kafka_security, predictions_topic)
    # The first seconds include the predictor meeting every car for the first time (ring buffers grow, the
    # batch shapes are new); steady state is what the 1 s target is about, so report it beside the whole run.
    steady = latencies[event_times >= started_ms + STEADY_AFTER_MS]
    return {
        "cars": cars,
        "offered_readings_per_s": round(writer.sent / produced_s, 1),
        "readings": writer.sent,
        "predictions": len(latencies),
        "unpredicted_readings": writer.sent - len(predicted),
        "predictions_per_s": round(len(latencies) / drained_s, 1),
        "cpu_us_per_reading": round(1e6 * cpu_seconds / max(len(latencies), 1), 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "max_ms": round(float(latencies.max()), 1),
        "steady_p50_ms": round(float(np.percentile(steady, 50)), 1) if steady.size else None,
        "steady_p99_ms": round(float(np.percentile(steady, 99)), 1) if steady.size else None,
        "lag_start": lags[min(2, len(lags) - 1)],
        "lag_end": lags[-1],
        "lag_max": max(lags),
        "drain_s_after_load": round(drained_s - produced_s, 1),
        "startup_s": round(startup_s, 1),
        **watch.figures(started_ms + STEADY_AFTER_MS),
        **usage,
        "window": WINDOW,
    }


def load_size(ctx: BenchContext) -> tuple[int, float]:
    """(cars, seconds) of the load: the seed's 100,000 cars for 60 s, or 10,000 for 10 s with --quick."""
    return (10_000, 10.0) if ctx.quick else (100_000, 60.0)


def bench_model(ctx: BenchContext, name: str) -> tuple[Path, artifact.LoadedModel]:
    """The untrained model of the training defaults' size, saved for a section: its folder and itself."""
    model_dir = ctx.work_dir / f"{name}-models"
    return model_dir, artifact.load(save_untrained_model(model_dir, window=WINDOW, threshold=ALERT_THRESHOLD))


def run(ctx: BenchContext) -> dict:
    cars, seconds = load_size(ctx)
    model_dir, model = bench_model(ctx, "predictor")
    figures = serve_under_load(ctx, "predictor", None, model_dir, cars, seconds)
    windows_per_s, model_cpu_us = bare_model(model, 3.0 if ctx.quick else 10.0)
    return {
        **figures,
        "model_windows_per_s": round(windows_per_s, 1),
        "ratio_to_bare_model": round(figures["predictions_per_s"] / windows_per_s, 3),
        "model_cpu_us_per_window": round(model_cpu_us, 1),
    }
