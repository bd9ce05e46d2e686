"""The `e2e` section: 100,000 cars x one reading per 10 s (10,000 readings/s) for 60 s (10 s with --quick) through
every stage, each its own process: simulator -> Mosquitto -> bridge -> Kafka -> ml predict -> Kafka.

Counted after the run by reading what the run added to both topics (scripts/demo/stream_watch.py): `published` (the
simulator's summary), `in_kafka` (distinct (car_id, seq) on the readings topic), `predicted` (readings with a
prediction that names their event_time). At speedup 1 a reading's event_time is the moment the simulator was due to
publish it, so predicted_at - event_time is the latency from publish to prediction (`p50_ms`, `p99_ms`); split into
`due_to_kafka_*` (event_time to the bridge's Kafka timestamp, including any lag of the simulator behind its
schedule, `simulator_behind_schedule_s`) and `kafka_to_prediction_*`. The simulator fixes its event times before
it connects, so its connect time (`simulator_connect_s`) is in these latencies too: `event_time_lead_ms` is how
far the first event_time lies before the first publish.
`readings_per_s` is end-to-end throughput: predicted readings over the span from the first reading's event_time
to the last prediction. Targets: 10,000 readings/s sustained, nothing lost, p99 under 1 s. `steady_p50_ms` and
`steady_p99_ms` leave out the readings of the run's first 10 s (a sixth of a shorter run): its start transient,
while every process is cold and every car new (`warm_up_s`), which `p50_ms`/`p99_ms` include.

Where the cores go: the CPU time of every process of the run from /proc, the servers included (Kafka, Mosquitto),
per published reading (`<process>_cpu_us_per_reading`), their sum (`total_cpu_us_per_reading`) beside the
machine's whole busy time over the same span (`machine_cpu_us_per_reading`, /proc/stat: also counts this process
and anything else the machine ran) and the budget the cores allow at the offered rate
(`cpu_budget_us_per_reading`: cores x 1e6 / offered readings/s; 200 us for 10,000 readings/s on 2 cores).

Capacity and latency together: the first run offers the full load; its end-to-end rate (at most the offered one)
is the measured capacity (`capacity_readings_per_s`). Then one run each at 25, 50, 75 and 100% of that capacity
(same cars, a lower rate per car) gives the latency curve: `load_<percent>_p50_ms`, `load_<percent>_p99_ms`,
`load_<percent>_readings_per_s`, `load_<percent>_lost`, `load_<percent>_unpredicted`,
`load_<percent>_total_cpu_us_per_reading`, `load_<percent>_steady_p50_ms`, `load_<percent>_steady_p99_ms`.
Target: p99 under 1 s at 75% (`p99_ms_at_75_percent`, `steady_p99_ms_at_75_percent`).

Scale-out: one more full-load run with two bridges on a shared subscription and two predictors in one group
(`scale_out_*`: throughput, lost, unpredicted, CPU per reading of each role), and `scale_out_readings_per_s_ratio`
against the first run's one of each.

The model is the one the `training` section trained in this run when there is one; otherwise a small one is
trained here first (simulator data written straight to Kafka, `python -m ml train --epochs 2`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from confluent_kafka import KafkaException

from common.kafka import ensure_topics
from common.settings import KafkaSecurity, MqttSettings
from scripts.bench.bridge import drop_session
from scripts.bench.context import BenchContext, MachineSampler, ProcessSampler, run_module
from scripts.demo.stream_watch import StreamState, StreamWatcher, end_offsets
from scripts.demo.summary import latest_model_metadata, percentile
from scripts.runtime.services import Service, ServiceGroup, service_env, wait_for
from scripts.testkit.readings import write_readings
from simulator.fleet import generate_readings

log = logging.getLogger(__name__)

CARS = 100_000
RATE = 0.1  # readings per car per second: one per 10 s
PARTITIONS = 4
TARGETS = {"readings_per_s": 10_000, "p99_ms": 1000}
WARM_UP_S = 10
LOAD_PERCENTS = (25, 50, 75, 100)  # of the measured capacity: the latency curve
CURVE_KEYS = ("offered_readings_per_s", "readings_per_s", "p50_ms", "p99_ms", "steady_p50_ms", "steady_p99_ms",
              "lost", "unpredicted", "total_cpu_us_per_reading")  # fmt: skip
SCALE_OUT_KEYS = ("readings_per_s", "p50_ms", "p99_ms", "steady_p99_ms", "lost", "unpredicted",
                  "bridge_cpu_us_per_reading", "predictor_cpu_us_per_reading", "total_cpu_us_per_reading")  # fmt: skip
ROLES = ("simulator", "bridge", "predictor", "kafka", "mosquitto")


def warm_up_s(seconds: float) -> float:
    """The start of a run that `steady_*` latencies leave out: every process just started (Kafka's JIT compiles
    its hot paths, the simulator builds its cars) and every car is new to the bridge and the predictor."""
    return min(WARM_UP_S, seconds / 6)


def small_model_dir(ctx: BenchContext) -> Path:
    """The training section's model of this run, or a small one trained here."""
    trained = ctx.work_dir / "bench-models"
    if "error" not in ctx.results.get("training", {"error": "not run"}) and latest_model_metadata(trained):
        return trained
    model_dir = ctx.work_dir / "e2e-models"
    topic = "bench-e2e-training"
    write_readings(ctx.bootstrap, ctx.kafka_security, topic, generate_readings(20, 150, failure_rate=4.0))
    result = run_module(ctx, "ml", "train", "--topic", topic, "--model-dir", str(model_dir), "--epochs", "2")
    if result.returncode != 0:
        raise RuntimeError(f"ml train failed ({result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
    return model_dir


def logged(service: Service, text: str, times: int = 1) -> Callable[[], bool]:
    """A wait_for condition: `text` is in `times` lines of the service's log."""
    return lambda: sum(text in line for line in service.log_lines()) >= times


def run(ctx: BenchContext) -> dict:
    seconds = 10 if ctx.quick else 60
    topics = ("bench-e2e-readings", "bench-e2e-predictions", "bench-e2e-dlq")
    model_dir = small_model_dir(ctx)
    result = measure(ctx, model_dir, CARS, RATE, seconds, topics)
    capacity = min(result["readings_per_s"], result["offered_readings_per_s"])
    result["capacity_readings_per_s"] = capacity
    for percent in LOAD_PERCENTS:
        point = measure(ctx, model_dir, CARS, capacity * percent / 100 / CARS, seconds, topics, name=f"e2e-{percent}")
        result.update({f"load_{percent}_{key}": point[key] for key in CURVE_KEYS})
    result["p99_ms_at_75_percent"] = result["load_75_p99_ms"]
    result["steady_p99_ms_at_75_percent"] = result["load_75_steady_p99_ms"]
    scaled = measure(ctx, model_dir, CARS, RATE, seconds, topics, name="e2e-scale-out", bridges=2, predictors=2)
    result.update({f"scale_out_{key}": scaled[key] for key in SCALE_OUT_KEYS})
    result["scale_out_readings_per_s_ratio"] = round(scaled["readings_per_s"] / max(result["readings_per_s"], 1), 3)
    return result


def measure(
    ctx: BenchContext,
    model_dir: Path,
    cars: int,
    rate: float,
    seconds: float,
    topics: tuple[str, str, str],
    name: str = "e2e",
    predictor_group: str = "bench-e2e-predictor",
    identities: Mapping[str, Mapping[str, str]] | None = None,
    bridges: int = 1,
    predictors: int = 1,
) -> dict:
    """One end-to-end run on `ctx`'s servers: `cars` x `rate` readings/s for `seconds`, through (readings,
    predictions, DLQ) `topics`, counting only what this run added to them. `identities`: the environment of each
    service (`bridge`, `predictor`, `simulator`) on a secured installation; this process reads Kafka with its own.
    `bridges` > 1 share one subscription (BRIDGE_SHARED_GROUP); `predictors` > 1 share one consumer group."""
    identities = identities or {}
    readings_topic, predictions_topic, dlq = topics
    kafka = (ctx.bootstrap, ctx.kafka_security)
    ensure_topics(*kafka, {readings_topic: PARTITIONS, predictions_topic: PARTITIONS, dlq: 1})
    start = start_offsets(*kafka, [readings_topic, predictions_topic])
    env = service_env(ctx.bootstrap, "127.0.0.1", ctx.mqtt_port)
    summary_file = ctx.work_dir / f"{name}-simulator-summary.json"
    shared = {"BRIDGE_SHARED_GROUP": f"bench-{name}"} if bridges > 1 else {}
    bridge_ids = [f"bench-{name}-bridge-{n}" for n in range(1, bridges + 1)]
    with ServiceGroup(env, ctx.work_dir / f"{name}-logs") as services:
        bridge_services = [
            services.start(
                _numbered("bridge", n, bridges), "bridge",
                BRIDGE_CLIENT_ID=bridge_ids[n - 1], BRIDGE_METRICS_PORT="0",
                BRIDGE_KAFKA_TOPIC=readings_topic, BRIDGE_DLQ_TOPIC=dlq, BRIDGE_SESSION_EXPIRY="60",
                **shared, **identities.get("bridge", {}),
            )
            for n in range(1, bridges + 1)
        ]  # fmt: skip
        predictor_services = [
            services.start(
                _numbered("predictor", n, predictors), "ml", "predict",
                ML_GROUP_ID=predictor_group, ML_MODEL_DIR=str(model_dir), ML_METRICS_PORT="0",
                ML_TOPIC=readings_topic, ML_OUTPUT_TOPIC=predictions_topic, ML_DLQ_TOPIC=dlq,
                **identities.get("predictor", {}),
            )
            for n in range(1, predictors + 1)
        ]  # fmt: skip
        for bridge in bridge_services:
            wait_for(logged(bridge, "subscribing to"), 90, what="the bridge's subscription", check=services.check)
        # Every predictor holds partitions before the load starts: a rebalance would be measured as latency.
        wait_for(
            lambda: all(map(_assigned, predictor_services)) and sum(map(_assigned, predictor_services)) == PARTITIONS,
            300, what="the predictors' partitions", check=services.check,
        )  # fmt: skip
        time.sleep(2.0)
        simulator = services.start(
            "simulator", "simulator",
            "--cars", str(cars), "--rate", str(rate), "--duration", str(seconds), "--qos", "1",
            "--client-id", f"bench-{name}-simulator", "--summary-file", str(summary_file), "--no-progress",
            **identities.get("simulator", {}),
        )  # fmt: skip
        processes = {s.name: s.pid for s in (simulator, *bridge_services, *predictor_services)}
        processes.update(kafka=ctx.kafka.pid(), mosquitto=ctx.mosquitto.pid())
        samplers = {process: ProcessSampler(pid) for process, pid in processes.items() if pid is not None}
        machine = MachineSampler()
        wait_for(lambda: not simulator.running(), seconds + 300, what="the simulator", check=services.check)
        simulator_summary = json.loads(summary_file.read_text())
        published = simulator_summary["published"]

        wait_drained(lambda: records_added(*kafka, readings_topic, predictions_topic, start), published, timeout=300)
        machine_cpu_seconds = machine.cpu_seconds()
        usage = {process: {**s.stop(), "cpu_seconds": s.cpu_seconds} for process, s in samplers.items()}
    # A stopped bridge's session outlives it (BRIDGE_SESSION_EXPIRY): Mosquitto would queue the next run's readings
    # for it and rewrite them all in every snapshot (autosave_interval 1) while that run is measured.
    for client_id in bridge_ids:
        drop_session(ctx.mqtt_port, client_id, _mqtt_login(identities.get("bridge", {})))
    result = _count(ctx, readings_topic, predictions_topic, start, published, (cars, rate, seconds), usage)
    result["machine_cpu_us_per_reading"] = _per_reading(machine_cpu_seconds, published)
    result["cpu_budget_us_per_reading"] = round(MachineSampler.cores * 1e6 / max(cars * rate, 1e-9), 1)
    first_event_ms = result.pop("first_event_time_ms")
    result["publish_msgs_per_s"] = simulator_summary["msgs_per_s"]
    result["publish_seconds"] = simulator_summary["seconds"]
    # A simulator that cannot keep its schedule publishes late: that lag is part of due_to_kafka and p50/p99.
    result["simulator_behind_schedule_s"] = round(simulator_summary["seconds"] - seconds, 1)
    result.update(_connect_figures(simulator.log_lines(), first_event_ms))
    log.info("%s: %s", name, result)
    return result


def _mqtt_login(identity: Mapping[str, str]) -> MqttSettings | None:
    """The MQTT credentials and TLS of a service's environment (the secured mode's), None when it has none."""
    mqtt = {key: value for key, value in identity.items() if key.startswith("MQTT_")}
    return MqttSettings(**mqtt) if mqtt else None


def _numbered(role: str, n: int, of: int) -> str:
    """`bridge` when it is the only one, `bridge-1`, `bridge-2` when there are several."""
    return role if of == 1 else f"{role}-{n}"


def _assigned(predictor: Service) -> int:
    """Partitions a predictor holds now, from its log (ml/serving/partitions.py logs each assignment and revocation)."""
    lines = predictor.log_lines()
    revoked = sum(" revoked at committed offset" in line for line in lines)
    return sum("assigned partition" in line for line in lines) - revoked


def start_offsets(
    bootstrap: str, security: KafkaSecurity, topics: list[str], timeout: float = 30.0
) -> dict[tuple[str, int], int]:
    """The topics' end offsets before the run; just-created partitions answer NOT_LEADER until they have one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return end_offsets(bootstrap, security, topics)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _log_time(lines: list[str], text: str) -> float | None:
    """Epoch seconds of the first log line that holds `text` (common/logs.py's format starts with asctime, ms)."""
    for line in lines:
        if text in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def _connect_figures(simulator_log: list[str], first_event_ms: int) -> dict:
    """How long the simulator took to log its connections in (simulator/publisher.py logs before and after), and
    how far the first reading's event_time lies before its first publish: the simulator fixes event times before
    it connects, so this lead is part of every publish->prediction latency (p50/p99, due_to_kafka)."""
    connecting, connected = _log_time(simulator_log, "connecting "), _log_time(simulator_log, "connected to ")
    if connecting is None or connected is None:
        return {}
    return {
        "simulator_connect_s": round(connected - connecting, 3),
        "event_time_lead_ms": round(connected * 1000 - first_event_ms),
    }


def records_added(
    bootstrap: str,
    security: KafkaSecurity,
    readings_topic: str,
    predictions_topic: str,
    start: dict[tuple[str, int], int],
) -> tuple[int, int]:
    """Records added to each topic since `start`."""
    offsets = end_offsets(bootstrap, security, [readings_topic, predictions_topic])
    return (
        sum(v - start.get(k, 0) for k, v in offsets.items() if k[0] == readings_topic),
        sum(v - start.get(k, 0) for k, v in offsets.items() if k[0] == predictions_topic),
    )


def wait_drained(totals: Callable[[], tuple[int, int]], published: int, timeout: float, idle: float = 30.0) -> None:
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
    ctx: BenchContext,
    readings_topic: str,
    predictions_topic: str,
    start: dict[tuple[str, int], int],
    published: int,
    load: tuple[int, float, float],
    usage: dict,
) -> dict:
    """Read what the run added to both topics (from `start`) and count it; `load` is (cars, rate, seconds)."""
    cars, rate, seconds = load
    offsets = end_offsets(ctx.bootstrap, ctx.kafka_security, [readings_topic, predictions_topic])
    starts = {k: start.get(k, 0) for k in offsets}
    watcher = StreamWatcher(ctx.bootstrap, ctx.kafka_security, readings_topic, predictions_topic, starts)
    watcher.start()
    try:
        records = sum(end - start.get(k, 0) for k, end in offsets.items())
        watcher.wait_until(lambda st: st.reading_records + st.prediction_records >= records, 600, interval=1.0)

        def figures(state: StreamState) -> dict:
            latencies = state.latencies_ms("event_time")
            to_kafka = [r.kafka_time - r.event_time for r in state.readings.values()]
            from_kafka = state.latencies_ms("kafka_time")
            first_event = min(r.event_time for r in state.readings.values())
            last_prediction = max(p.predicted_at for p in state.predictions.values())
            predicted = len(latencies)
            steady = state.latencies_ms("event_time", since_ms=first_event + 1000 * warm_up_s(seconds))
            return {
                "in_kafka": len(state.readings),
                "predicted": predicted,
                "duplicate_predictions": state.duplicates,
                "readings_per_s": round(predicted / max(0.001, (last_prediction - first_event) / 1000), 1),
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies, default=None),
                "steady_p50_ms": percentile(steady, 50),
                "steady_p99_ms": percentile(steady, 99),
                "due_to_kafka_p50_ms": percentile(to_kafka, 50),
                "due_to_kafka_p99_ms": percentile(to_kafka, 99),
                "kafka_to_prediction_p50_ms": percentile(from_kafka, 50),
                "kafka_to_prediction_p99_ms": percentile(from_kafka, 99),
                "first_event_time_ms": first_event,
            }

        counted = watcher.read(figures)
    finally:
        watcher.stop()
    result = {
        "cars": cars,
        "seconds": seconds,
        "offered_readings_per_s": cars * rate,
        "published": published,
        **counted,
        "lost": published - counted["in_kafka"],
        "unpredicted": counted["in_kafka"] - counted["predicted"],
        "target_readings_per_s": TARGETS["readings_per_s"],
        "target_p99_ms": TARGETS["p99_ms"],
    }
    # CPU per reading: comparable between runs whose spans differ (a slow connect, a long drain). Several
    # processes of one role (bridge-1, bridge-2) add up; peak RSS is the largest one's.
    for role in ROLES:
        shares = [f for process, f in usage.items() if process == role or process.startswith(f"{role}-")]
        if not shares:
            continue
        result[f"{role}_cpu_percent"] = round(sum(f["cpu_percent"] for f in shares), 1)
        result[f"{role}_peak_rss_mb"] = max(f["peak_rss_mb"] for f in shares)
        result[f"{role}_cpu_us_per_reading"] = _per_reading(sum(f["cpu_seconds"] for f in shares), published)
    result["total_cpu_us_per_reading"] = _per_reading(sum(f["cpu_seconds"] for f in usage.values()), published)
    return result


def _per_reading(cpu_seconds: float, readings: int) -> float:
    return round(cpu_seconds / max(readings, 1) * 1e6, 1)
