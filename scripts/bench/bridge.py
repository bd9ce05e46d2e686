"""The `bridge` section: MQTT → Kafka throughput and latency of `python -m bridge`, beside a bare paho receiver.

Throughput (`msgs_per_s`): a backlog of N readings is queued in Mosquitto for the bridge's persistent session,
then the bridge (a child process) drains it at QoS 1, acknowledging each message after Kafka's delivery report;
the rate is N over the span between the first and the last record's Kafka append time (LogAppendTime).
`baseline_msgs_per_s`: a bare paho QoS 1 receive loop (paho's own threaded loop, auto-ack, no work) drains the same
backlog the same way, so the publisher never competes for the 2 cores in either figure. It runs twice, once per
protocol: MQTT 5 (`baseline_*`, the bridge's protocol) and MQTT 3.1.1 (`baseline_mqtt311_*`; paho 2.2 decodes an
MQTT 5 PUBLISH with a Properties object, which 3.1.1 has none of).
CPU per message (`cpu_us_per_msg`, from the first message received to Kafka's last confirmation) is the steadier
figure on a shared machine: `cpu_ratio_to_baseline` is the bridge's over the bare loop's of the same protocol
(MQTT 5), `cpu_ratio_to_mqtt311_baseline` over the 3.1.1 loop's; both from the same run.
`librdkafka_cpu_us_per_msg`: the part of the bridge's spent in librdkafka's threads. The older `cpu_ratio` is the
inverse of `cpu_ratio_to_baseline` (bare over bridge), kept for comparisons with earlier results.
Latency (`p50_ms`, `p99_ms`): with the bridge running, readings are published live at a fixed rate, stamped with
their publish time in `event_time`; latency = Kafka append time - publish time.

Run alone: `python -m scripts.bench --only bridge [--quick]`. `python -m scripts.bench.bridge receive ...` is the
bare receiver's child process.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from confluent_kafka.admin import AdminClient, NewTopic
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.kafka import client_config
from common.settings import KafkaSecurity, MqttSettings
from common.topics import MQTT_TOPIC_FILTER, mqtt_topic
from scripts.bench.bridge_profile import profile_drain
from scripts.bench.context import BenchContext, ProcessSampler, process_cpu_seconds, python_module, task_cpu_seconds
from scripts.runtime.local import ROOT, free_port
from scripts.runtime.services import Service
from scripts.testkit.kafka import read_until
from scripts.testkit.metrics import scrape_or_empty
from scripts.testkit.readings import decoded
from simulator.fleet import generate_readings

log = logging.getLogger(__name__)

CARS = 100
PUBLISH_CONNECTIONS = 4
SESSION_EXPIRY = 3600
PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


def payloads(count: int, cars: int = CARS) -> list[tuple[str, bytes]]:
    per_car = -(-count // cars)
    return [(mqtt_topic(r["car_id"]), json.dumps(r).encode()) for r in generate_readings(cars, per_car)][:count]


def session_client(
    port: int,
    client_id: str,
    receive_maximum: int = 10_000,
    login: MqttSettings | None = None,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
) -> mqtt.Client:
    """`login`: credentials and TLS (the secured mode's `bridge` identity); none for the open broker. MQTT 3.1.1 has
    neither session expiry (the session stays until a clean connect) nor Receive Maximum (the broker's
    max_inflight_messages bounds what it sends unacknowledged)."""
    if protocol == mqtt.MQTTv311:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=False
        )
        if login is not None:
            login.configure_client(client)
        client.connect("127.0.0.1", port)
        return client
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if login is not None:
        login.configure_client(client)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_EXPIRY
    properties.ReceiveMaximum = receive_maximum
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    return client


def create_session(
    port: int,
    client_id: str,
    subscription: str,
    login: MqttSettings | None = None,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
) -> None:
    """Connect once and subscribe, so that the broker queues what is published while the client is away."""
    client = session_client(port, client_id, login=login, protocol=protocol)
    client.loop_start()
    client.subscribe(subscription, qos=1)[1]
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()


def drop_session(port: int, client_id: str, login: MqttSettings | None = None) -> None:
    """Connect with a clean start and no expiry: the broker forgets the session, and stops queueing for it."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if login is not None:
        login.configure_client(client)
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()


def publish(port: int, messages: list[tuple[str, bytes]], rate: float | None = None) -> float:
    """Publish at QoS 1 over several connections, until the broker acknowledged all; returns messages/s."""
    connections = 1 if rate else PUBLISH_CONNECTIONS
    started = time.monotonic()
    threads = [
        threading.Thread(target=_publish_share, args=(port, messages[i::connections], rate and rate / connections))
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(messages) / (time.monotonic() - started)


def _publish_share(port: int, messages: list[tuple[str, bytes]], rate: float | None) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    acknowledged = threading.Semaphore(0)
    client.on_publish = lambda *_args: acknowledged.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    for sent, (topic, payload) in enumerate(messages, 1):
        if rate:
            payload = _stamped(payload)
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        client.publish(topic, payload, qos=1)
    for _ in messages:
        acknowledged.acquire(timeout=60)
    client.disconnect()
    client.loop_stop()


def _stamped(payload: bytes) -> bytes:
    """The reading with event_time = now, so that Kafka's append time minus event_time is the latency."""
    reading = json.loads(payload)
    reading["event_time"] = int(time.time() * 1000)
    return json.dumps(reading).encode()


def create_topics(bootstrap: str, security: KafkaSecurity, *names: str) -> None:
    """Topics that take the broker's clock as record time (LogAppendTime): the moment Kafka appended it."""
    admin = AdminClient(client_config(bootstrap, security))  # `admin` on a secured node
    config = {"message.timestamp.type": "LogAppendTime"}
    for future in admin.create_topics([NewTopic(n, 4, replication_factor=-1, config=config) for n in names]).values():
        future.result(timeout=30)


def append_times(
    bootstrap: str, security: KafkaSecurity, topic: str, count: int, timeout: float = 120.0
) -> list[tuple[int, int]]:
    """(append time ms, event_time ms) of the first `count` records of `topic` (all of them: what came by then)."""
    messages = read_until(bootstrap, topic, lambda messages: len(messages) >= count, timeout=timeout, security=security)
    if len(messages) < count:
        raise RuntimeError(f"only {len(messages)} of {count} records reached {topic}")
    return [(m.timestamp()[1], r["event_time"]) for m, r in zip(messages, decoded(messages), strict=True)]


def rate_from_append_times(times: list[tuple[int, int]]) -> float:
    appended = [t for t, _ in times]
    return (len(appended) - 1) / max((max(appended) - min(appended)) / 1000, 1e-3)


def bare_receiver(ctx: BenchContext, messages: list[tuple[str, bytes]], protocol: str = "5") -> dict:
    client_id = f"bench-bare-{protocol}-{uuid.uuid4().hex[:6]}"
    create_session(ctx.mqtt_port, client_id, MQTT_TOPIC_FILTER, protocol=PROTOCOLS[protocol])
    publish(ctx.mqtt_port, messages)
    command = python_module("scripts.bench.bridge", "receive", "--port", str(ctx.mqtt_port), "--client-id", client_id)
    process = subprocess.Popen(
        [*command, "--count", str(len(messages)), "--protocol", protocol],
        env=ctx.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    sampler = ProcessSampler(process.pid)
    out, _ = process.communicate(timeout=600)
    return {**json.loads(out), **sampler.stop()}


def bridge_drain(ctx: BenchContext, messages: list[tuple[str, bytes]], topic: str, dlq: str) -> tuple[dict, dict]:
    """Queue the backlog for the bridge's session, then start the bridge and time the drain into Kafka."""
    client_id = f"bench-bridge-{uuid.uuid4().hex[:6]}"
    group = f"bench-{uuid.uuid4().hex[:6]}"
    create_session(ctx.mqtt_port, client_id, f"$share/{group}/{MQTT_TOPIC_FILTER}")
    publish_rate = publish(ctx.mqtt_port, messages)
    drain, running = drain_backlog(ctx, len(messages), client_id, group, topic, dlq)
    return {**drain, "publish_msgs_per_s": publish_rate}, running


def drain_backlog(
    ctx: BenchContext, count: int, client_id: str, group: str, topic: str, dlq: str, **identity: str
) -> tuple[dict, dict]:
    """Start the bridge (`python -m bridge`, with `identity`'s environment) on the `count` readings queued for
    session `client_id` and time their drain into Kafka: the rate from the records' append times, the bridge's
    CPU time per reading. The bridge goes on running (the second value: process, sampler, log)."""
    metrics_port = free_port()
    env = ctx.env(
        BRIDGE_CLIENT_ID=client_id,
        BRIDGE_SHARED_GROUP=group,
        BRIDGE_KAFKA_TOPIC=topic,
        BRIDGE_DLQ_TOPIC=dlq,
        BRIDGE_METRICS_PORT=str(metrics_port),
        BRIDGE_LOG_INTERVAL="5",
        **identity,
    )
    bridge = Service(client_id, "bridge", (), env, ctx.work_dir).start()
    sampler = ProcessSampler(bridge.pid)
    cpu = drain_cpu_seconds(bridge, metrics_port, count)
    times = append_times(ctx.bootstrap, ctx.kafka_security, topic, count, timeout=600)
    drain = {
        "msgs_per_s": rate_from_append_times(times),
        "cpu_us_per_msg": cpu["process"] / count * 1e6,
        "librdkafka_cpu_us_per_msg": cpu["librdkafka"] / count * 1e6,
    }
    return drain, {"service": bridge, "sampler": sampler}


def stop_drained(running: dict) -> dict[str, float]:
    """Stop the bridge `drain_backlog` left running (RuntimeError with its log's tail unless it exits 0); its
    sampler's figures."""
    bridge: Service = running["service"]
    code = bridge.stop(60)
    resources = running["sampler"].stop()
    if code != 0:
        raise RuntimeError(f"{bridge.name} exited with {code}; last lines of {bridge.log_file}:\n{bridge.tail()}")
    return resources


def drain_cpu_seconds(bridge: Service, metrics_port: int, count: int, timeout: float = 600) -> dict[str, float]:
    """CPU time the bridge spent from its first received message until Kafka confirmed `count` (start-up excluded):
    the whole process's, and its librdkafka threads' (named rdk:...)."""
    start = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bridge.check_running()
        metrics = scrape_or_empty(f"http://127.0.0.1:{metrics_port}/metrics")
        if start is None and metrics.get("bridge_received_total", 0) > 0:
            start = process_cpu_seconds(bridge.pid), librdkafka_cpu_seconds(bridge.pid)
        if metrics.get("bridge_produced_total", 0) >= count:
            start = start or (0.0, 0.0)
            return {
                "process": process_cpu_seconds(bridge.pid) - start[0],
                "librdkafka": librdkafka_cpu_seconds(bridge.pid) - start[1],
            }
        # Each scrape costs the bridge CPU (0.3 ms or more): often until the start is seen, which must be precise,
        # then seldom (the bridge idles after the last confirmation, so a late look adds next to nothing).
        time.sleep(0.05 if start is None else 0.5)
    raise RuntimeError(f"the bridge did not confirm {count} readings within {timeout:.0f} s")


def librdkafka_cpu_seconds(pid: int) -> float:
    """CPU time of the process's librdkafka threads (it names them rdk:main, rdk:broker..., rdk:background)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("rdk:"):
                total += task_cpu_seconds(task)
        except OSError:  # the thread ended meanwhile
            continue
    return total


def latency(ctx: BenchContext, topic: str, count: int, rate: float, skip: int) -> dict:
    """Publish live at `rate` while the bridge runs; Kafka append time - publish time, per reading."""
    publish(ctx.mqtt_port, payloads(count), rate=rate)
    times = append_times(ctx.bootstrap, ctx.kafka_security, topic, skip + count)
    live = sorted(times, key=lambda t: t[0])[skip:]
    delays = np.array([appended - published for appended, published in live], dtype=float)
    return {"p50_ms": float(np.percentile(delays, 50)), "p99_ms": float(np.percentile(delays, 99)), "rate": rate}


def run(ctx: BenchContext) -> dict:
    count = 20_000 if ctx.quick else 100_000
    # Latency at a steady rate well inside what this shared 2-core machine carries (the publisher runs beside it).
    live_count, live_rate = (3_000, 1_000.0) if ctx.quick else (15_000, 1_000.0)
    messages = payloads(count)
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"bench-readings-{suffix}", f"bench-dlq-{suffix}"
    create_topics(ctx.bootstrap, ctx.kafka_security, topic, dlq)

    baseline = bare_receiver(ctx, messages)
    log.info(
        "bare paho receiver, MQTT 5: %.0f msg/s, %.1f µs CPU/msg", baseline["msgs_per_s"], baseline["cpu_us_per_msg"]
    )
    baseline311 = bare_receiver(ctx, messages, "3.1.1")
    log.info(
        "bare paho receiver, MQTT 3.1.1: %.0f msg/s, %.1f µs CPU/msg",
        baseline311["msgs_per_s"],
        baseline311["cpu_us_per_msg"],
    )
    drain, running = bridge_drain(ctx, messages, topic, dlq)
    log.info("bridge drain: %.0f msg/s, %.1f µs CPU/msg", drain["msgs_per_s"], drain["cpu_us_per_msg"])
    try:
        lat = latency(ctx, topic, live_count, live_rate, skip=count)
    finally:
        resources = stop_drained(running)
    profile = profile_drain(ctx, messages[: 10_000 if ctx.quick else 30_000])
    return {
        "msgs_per_s": round(drain["msgs_per_s"], 1),
        "baseline_msgs_per_s": round(baseline["msgs_per_s"], 1),
        "ratio": round(drain["msgs_per_s"] / baseline["msgs_per_s"], 3),
        # The same ratio in CPU per message: steadier than wall-clock rates on a machine shared with other work.
        "cpu_ratio": round(baseline["cpu_us_per_msg"] / drain["cpu_us_per_msg"], 3),
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "latency_at_msgs_per_s": lat["rate"],
        "peak_rss_mb": resources["peak_rss_mb"],
        "cpu_percent": resources["cpu_percent"],
        "baseline_peak_rss_mb": baseline["peak_rss_mb"],
        "baseline_cpu_percent": baseline["cpu_percent"],
        "cpu_us_per_msg": round(drain["cpu_us_per_msg"], 1),
        # Of which librdkafka's own threads (compression, requests, responses): more per message when Kafka takes
        # the records in smaller batches, as on a loaded machine.
        "librdkafka_cpu_us_per_msg": round(drain["librdkafka_cpu_us_per_msg"], 1),
        "baseline_cpu_us_per_msg": round(baseline["cpu_us_per_msg"], 1),
        # What one dedicated core would carry: the machine is shared, so wall-clock rates understate it.
        "msgs_per_cpu_s": round(1e6 / drain["cpu_us_per_msg"], 1),
        "baseline_msgs_per_cpu_s": round(1e6 / baseline["cpu_us_per_msg"], 1),
        "bridge_mqtt_protocol": "5",
        # Bridge CPU per message over the bare loop's of the same protocol (MQTT 5), and of MQTT 3.1.1.
        "cpu_ratio_to_baseline": round(drain["cpu_us_per_msg"] / baseline["cpu_us_per_msg"], 3),
        "cpu_ratio_to_mqtt311_baseline": round(drain["cpu_us_per_msg"] / baseline311["cpu_us_per_msg"], 3),
        "baseline_mqtt311_msgs_per_s": round(baseline311["msgs_per_s"], 1),
        "baseline_mqtt311_cpu_us_per_msg": round(baseline311["cpu_us_per_msg"], 1),
        "baseline_mqtt311_peak_rss_mb": baseline311["peak_rss_mb"],
        "messages": count,
        "publish_msgs_per_s": round(drain["publish_msgs_per_s"], 1),
        **profile,
    }


def receive(port: int, client_id: str, count: int, protocol: str = "5") -> dict:
    """The bare paho receive loop: resume the session, count messages (auto-ack), time first to last."""
    received = 0
    first = last = cpu_first = cpu_last = 0.0
    done = threading.Event()

    def on_message(_client, _userdata, _message) -> None:
        nonlocal received, first, last, cpu_first, cpu_last
        last = time.monotonic()
        if not received:
            first, cpu_first = last, time.process_time()
        received += 1
        if received >= count:
            cpu_last = time.process_time()
            done.set()

    client = session_client(port, client_id, protocol=PROTOCOLS[protocol])
    client.on_message = on_message
    client.loop_start()
    done.wait(600)
    client.disconnect()
    client.loop_stop()
    return {
        "msgs_per_s": (received - 1) / max(last - first, 1e-3),
        "cpu_us_per_msg": (cpu_last - cpu_first) / max(received - 1, 1) * 1e6,
        "received": received,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.bridge", description="the bare paho receiver")
    parser.add_argument("action", choices=["receive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="5")
    args = parser.parse_args(argv)
    print(json.dumps(receive(args.port, args.client_id, args.count, args.protocol)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
