"""The `security` section: what the secured mode costs, measured on two pairs of private servers started here, one
open (plaintext Kafka, anonymous MQTT) and one secured (Kafka SASL_SSL + SCRAM-SHA-512 + ACLs, MQTT over TLS with a
password per car; scripts/runtime/secured.py), each mode measured the same way in turn:

- Bridge: a backlog of `bridge_messages` QoS 1 readings of `bridge_cars` cars is queued in Mosquitto for the
  bridge's session (published in advance, one connection per car, each car logged in as itself when secured), then
  `python -m bridge` drains it into Kafka (scripts/bench/bridge.py's drain_backlog): readings/s from the records'
  append times and the bridge's CPU µs per reading. Over TLS the bridge decrypts every MQTT message and encrypts
  every Kafka batch. `publisher_*_connect_s` is how long the 1,000 cars took to log in.
- End to end: simulator -> Mosquitto -> bridge -> Kafka -> predictor, `e2e_cars` cars at a rate the open path
  sustains (scripts/bench/e2e.py's measure): readings/s, publish->prediction latency, every reading counted
  (`all_counted`: published = in Kafka = predicted), CPU of each service. The secured simulator logs every car in
  over its own TLS connection; the open one uses its default pool of connections (`simulator_connections`).
  `readings_per_s`, `p50_ms` and `p99_ms` count from event_time, which the simulator starts once its cars are
  connected; the `net_` figures also take out the measured `event_time_lead_ms` (what is left between event time
  and the first publish, near 0). CPU per reading (`*_cpu_us_per_reading`) covers each service from the
  simulator's start to the last prediction; the simulator's includes its start-up and its logins.

Ratios are secured / open: `*_msgs_per_s_ratio` below 1 is throughput lost, `*_cpu_us_per_msg_ratio` above 1 is
CPU added. The secured mode's Kafka ACLs name the default topics only, so both modes use car-sensor,
car-sensor-predictions and car-sensor-dlq on their own servers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.topics import (
    DLQ_TOPIC,
    MQTT_TOPIC_FILTER,
    PREDICTIONS_TOPIC,
    PREDICTOR_GROUP,
    READINGS_TOPIC,
    car_from_mqtt_topic,
    car_id,
)
from scripts.bench.bridge import create_session, create_topics, drain_backlog, drop_session, payloads, stop_drained
from scripts.bench.context import BenchContext
from scripts.bench.e2e import ROLES, measure, small_model_dir
from scripts.runtime.local import KafkaNode, MosquittoNode, free_port
from scripts.runtime.secured import SecureMaterial
from simulator.publisher import FleetPublisher
from simulator.settings import PublishSettings

log = logging.getLogger(__name__)

BRIDGE_CARS = 1_000
E2E_CARS = 500  # secured: one TLS connection per car, in the simulator and in Mosquitto
E2E_RATE = 2.0  # readings per car per second: 1,000 readings/s, well inside what the open path carries here


@dataclass
class Mode:
    name: str  # "plaintext" or "secured"
    ctx: BenchContext  # this mode's own servers
    material: SecureMaterial | None

    def identity(self, name: str) -> dict[str, str]:
        """The environment of identity `name` (bridge, simulator, predictor, admin); nothing when open."""
        return self.material.env(name) if self.material else {}


@contextlib.contextmanager
def servers(folder: Path, quick: bool) -> Iterator[list[Mode]]:
    """An open and a secured pair of Kafka and Mosquitto on free ports, started together (the start-up is mostly
    waiting), with the default topics; stopped on exit."""
    material = SecureMaterial(folder / "secure").ensure(max(BRIDGE_CARS, E2E_CARS))
    modes = []
    for name, secure in (("plaintext", None), ("secured", material)):
        run_dir = folder / name
        kafka = KafkaNode(run_dir, port=free_port(), controller_port=free_port(), heap="1g", secure=secure)
        mosquitto = MosquittoNode(run_dir, port=free_port(), secure=secure)
        modes.append(Mode(name, BenchContext(kafka, mosquitto, run_dir, quick=quick), secure))
    started = []
    try:
        for mode in modes:
            for node in (mode.ctx.kafka, mode.ctx.mosquitto):
                node.start()
                started.append(node)
        for node in started:
            node.wait_ready(timeout=120)
        for mode in modes:  # this process's own clients log in as admin on the secured node (ctx.kafka_security)
            # The readings topic takes the broker's clock (LogAppendTime): the drain's rate comes from it.
            create_topics(mode.ctx.bootstrap, mode.ctx.kafka_security, READINGS_TOPIC, DLQ_TOPIC)
            if mode.material:  # users, the predictions topic and the ACLs, as `make up SECURE=1` sets them
                mode.material.set_up_kafka(mode.ctx.bootstrap)
        yield modes
    finally:
        for node in reversed(started):
            node.stop()


def publish_backlog(mode: Mode, messages: list[tuple[str, bytes]], cars: list[str]) -> dict:
    """Publish `messages` at QoS 1 over one connection per car (the simulator's publisher; secured, each car logs
    in as itself over TLS) until Mosquitto acknowledged all: the connect time and the publish rate."""
    secured = {"fleet_secret": mode.material.fleet_secret, **mode.material.mqtt_env()} if mode.material else {}
    settings = PublishSettings(
        mqtt_host="127.0.0.1",
        mqtt_port=mode.ctx.mqtt_port,
        qos=1,
        client_id="bench-security",
        progress=False,
        **secured,
    )
    slot = {car: number for number, car in enumerate(cars)}
    started = time.monotonic()
    with FleetPublisher(settings, len(cars), cars=cars) as publisher:
        connected = time.monotonic()
        for topic, payload in messages:
            publisher.publish(slot[car_from_mqtt_topic(topic)], topic, payload)
        if not publisher.drain(120):
            raise RuntimeError(f"{publisher.outstanding} readings unacknowledged after 120 s")
        finished = time.monotonic()
    return {"connect_s": connected - started, "publish_msgs_per_s": len(messages) / (finished - connected)}


def bridge_drain(mode: Mode, messages: list[tuple[str, bytes]], cars: list[str]) -> dict:
    """The bridge section's drain on this mode's servers, the bridge logged in as `bridge` when secured."""
    ctx = mode.ctx
    login = mode.material.mqtt_settings("bridge") if mode.material else None
    client_id, group = f"bench-security-{uuid.uuid4().hex[:6]}", f"bench-{uuid.uuid4().hex[:6]}"
    create_session(ctx.mqtt_port, client_id, f"$share/{group}/{MQTT_TOPIC_FILTER}", login)
    published = publish_backlog(mode, messages, cars)
    identity = mode.identity("bridge")
    drain, running = drain_backlog(ctx, len(messages), client_id, group, READINGS_TOPIC, DLQ_TOPIC, **identity)
    stop_drained(running)
    # Else Mosquitto would go on queueing the end-to-end run's readings for this session.
    drop_session(ctx.mqtt_port, client_id, login)
    log.info("security: %s bridge drain %.0f msg/s, %.1f us CPU per message", mode.name, drain["msgs_per_s"],
             drain["cpu_us_per_msg"])  # fmt: skip
    return {**drain, **published}


def end_to_end(mode: Mode, model_dir: Path, seconds: float) -> dict:
    identities = {name: mode.identity(name) for name in ("bridge", "predictor", "simulator")}
    result = measure(
        mode.ctx,
        model_dir,
        E2E_CARS,
        E2E_RATE,
        seconds,
        (READINGS_TOPIC, PREDICTIONS_TOPIC, DLQ_TOPIC),
        name=f"e2e-{mode.name}",
        predictor_group=f"{PREDICTOR_GROUP}-bench",  # the secured predictor may join groups under this prefix only
        identities=identities,
    )
    pool = PublishSettings.model_fields["connections"].default
    result["simulator_connections"] = E2E_CARS if mode.material else min(pool, E2E_CARS)
    return result


def run(ctx: BenchContext) -> dict:
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    backlog = 10_000 if ctx.quick else 50_000
    seconds = 10 if ctx.quick else 40
    model_dir = small_model_dir(ctx)  # on the bench's own servers, before this section's start
    messages = payloads(backlog, cars=BRIDGE_CARS)
    cars = [car_id(number) for number in range(1, BRIDGE_CARS + 1)]
    bridge: dict[str, dict] = {}
    e2e: dict[str, dict] = {}
    with servers(ctx.work_dir / "security", ctx.quick) as modes:
        # The two modes' runs of each part back to back: the machine is shared, and its load drifts over minutes.
        for mode in modes:
            bridge[mode.name] = bridge_drain(mode, messages, cars)
        for mode in modes:
            e2e[mode.name] = end_to_end(mode, model_dir, seconds)
    return {
        **bridge_figures(bridge, backlog),
        **e2e_figures(e2e, seconds),
        "section_seconds": round(time.monotonic() - started, 1),
        # The machine is shared: a load far above its cores (machine section) makes this run's figures suspect.
        "load_average_at_start": round(load_at_start, 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
    }


def bridge_figures(bridge: dict[str, dict], backlog: int) -> dict:
    out: dict = {"bridge_messages": backlog, "bridge_cars": BRIDGE_CARS}
    for mode, figures in bridge.items():
        out[f"bridge_{mode}_msgs_per_s"] = round(figures["msgs_per_s"], 1)
        out[f"bridge_{mode}_cpu_us_per_msg"] = round(figures["cpu_us_per_msg"], 1)
    for mode, figures in bridge.items():
        out[f"publisher_{mode}_connect_s"] = round(figures["connect_s"], 2)
        out[f"publisher_{mode}_msgs_per_s"] = round(figures["publish_msgs_per_s"], 1)
    open_, secured = bridge["plaintext"], bridge["secured"]
    out["bridge_msgs_per_s_ratio"] = round(secured["msgs_per_s"] / open_["msgs_per_s"], 3)
    out["bridge_cpu_us_per_msg_ratio"] = round(secured["cpu_us_per_msg"] / open_["cpu_us_per_msg"], 3)
    return out


def e2e_figures(e2e: dict[str, dict], seconds: float) -> dict:
    out: dict = {"e2e_cars": E2E_CARS, "e2e_offered_readings_per_s": E2E_CARS * E2E_RATE, "e2e_seconds": seconds}
    for mode, r in e2e.items():
        lead_ms = r.get("event_time_lead_ms", 0)
        # readings_per_s spans from the first event_time, which lies `lead_ms` before the first publish.
        span_s = r["predicted"] / r["readings_per_s"] - lead_ms / 1000 if r["readings_per_s"] else 0
        figures = {
            "readings_per_s": r["readings_per_s"],
            "net_readings_per_s": round(r["predicted"] / span_s, 1) if span_s > 0 else 0.0,
            "published": r["published"],
            "in_kafka": r["in_kafka"],
            "predicted": r["predicted"],
            "lost": r["lost"],
            "all_counted": r["published"] == r["in_kafka"] == r["predicted"],
            "p50_ms": r["p50_ms"],
            "p99_ms": r["p99_ms"],
            "net_p50_ms": r["p50_ms"] - lead_ms if r["p50_ms"] is not None else None,
            "net_p99_ms": r["p99_ms"] - lead_ms if r["p99_ms"] is not None else None,
            "kafka_to_prediction_p50_ms": r["kafka_to_prediction_p50_ms"],
            "kafka_to_prediction_p99_ms": r["kafka_to_prediction_p99_ms"],
            "event_time_lead_ms": r.get("event_time_lead_ms"),
            "simulator_connect_s": r.get("simulator_connect_s"),
            "simulator_connections": r["simulator_connections"],
            "simulator_behind_schedule_s": r["simulator_behind_schedule_s"],
            **{f"{s}_cpu_us_per_reading": r.get(f"{s}_cpu_us_per_reading") for s in (*ROLES, "total")},
        }
        out.update({f"e2e_{mode}_{key}": value for key, value in figures.items()})
    for figure in ("net_readings_per_s", "simulator_cpu_us_per_reading", "bridge_cpu_us_per_reading",
                   "total_cpu_us_per_reading"):  # fmt: skip
        open_, secured = out[f"e2e_plaintext_{figure}"], out[f"e2e_secured_{figure}"]
        out[f"e2e_{figure}_ratio"] = round(secured / open_, 3) if open_ else None
    return out
