"""The bridge under faults that are not its input's: a schema registry down, a DLQ that refuses records for good, a
readings topic that refuses them for a while, Kafka down with large payloads held. Each proven by counting
(car_id, seq) end to end through a real Mosquitto and Kafka, with `python -m bridge` as its own process.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import pytest

from common import dlq
from common.topics import mqtt_topic
from scripts.runtime.local import MosquittoNode, free_port, port_in_use
from scripts.runtime.schema_registry import SchemaRegistryNode
from scripts.testkit.bridge import assert_in_order_per_car, assert_none_missing
from scripts.testkit.kafka import alter_topic_config, collect, create_topic, unique
from scripts.testkit.mqtt import Publisher
from scripts.testkit.readings import as_mqtt_messages, decoded, readings
from scripts.testkit.services import ChildService

pytestmark = pytest.mark.timeout(300)


def interleave(good: list[tuple[str, bytes]], bad: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The bad messages first among the good ones, so that they are in flight when the good ones come."""
    messages = []
    for i, message in enumerate(good):
        if i < len(bad):
            messages.append(bad[i])
        messages.append(message)
    return messages


def test_a_registry_down_at_the_first_reading_holds_readings_until_it_answers_then_delivers_all_in_order(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics, tmp_path
):
    registry = SchemaRegistryNode(
        tmp_path / "registry", port=free_port(), kafka_bootstrap=kafka_bootstrap, journal_topic=unique("_schemas")
    )
    broker = mosquitto_node_factory()
    bridge = bridge_factory(
        kafka_bootstrap, broker.port, bridge_topics, SCHEMA_REGISTRY_URL=registry.url, BRIDGE_BUFFER_SIZE="50"
    )
    try:
        sent = readings(cars=5, per_car=40)
        publisher = Publisher(broker.port, as_mqtt_messages(sent))
        metrics = bridge.wait_for_metrics(
            lambda m: m.get("bridge_registry_waits_total", 0) >= 2, "waits for the registry"
        )
        # Held, unacknowledged: nothing produced, nothing dead-lettered, the buffer full, the bridge alive.
        assert metrics["bridge_produced_total"] == 0
        assert metrics["bridge_dead_lettered_total"] == 0
        bridge.wait_for_metrics(lambda m: m.get("bridge_in_flight") == 50, "a full buffer")
        registry.start()
        registry.wait_ready(timeout=120)
        publisher.wait()
        messages = collect(kafka_bootstrap, bridge_topics[0], want=len(sent), timeout=120)
        assert messages[0].value()[0] == 0  # Confluent framing: the registry gave the schema its id
        assert not assert_none_missing(sent, decoded(messages))
        assert_in_order_per_car(messages)
        assert collect(kafka_bootstrap, bridge_topics[1], want=1, timeout=5, linger=0) == []
        bridge.stop_ok(timeout=60)
    finally:
        registry.stop()


def test_a_dlq_that_refuses_records_for_good_parks_them_and_good_readings_keep_flowing(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics, tmp_path
):
    """Five bad payloads and a buffer of five: if the DLQ's refusals held their MQTT slots, no good reading could
    pass. The DLQ topic takes no record of 100 bytes or more, so every DLQ delivery fails for good."""
    create_topic(kafka_bootstrap, bridge_topics[1], 4, **{"max.message.bytes": "100"})
    broker = mosquitto_node_factory()
    park_file = tmp_path / "parked.jsonl"
    bridge = bridge_factory(
        kafka_bootstrap, broker.port, bridge_topics, BRIDGE_BUFFER_SIZE="5", BRIDGE_PARK_FILE=str(park_file)
    )
    good = readings(cars=2, per_car=10)
    bad = [(mqtt_topic("car-00001"), b'{"not": "a reading %d"}' % i) for i in range(5)]
    Publisher(broker.port, interleave(as_mqtt_messages(good), bad)).wait()

    messages = collect(kafka_bootstrap, bridge_topics[0], want=len(good))
    assert not assert_none_missing(good, decoded(messages))
    assert_in_order_per_car(messages)
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_parked_total") == 5, "five parked")
    assert metrics["bridge_in_flight"] == 0
    assert metrics["bridge_dead_lettered_total"] == 0
    parked = [json.loads(line) for line in park_file.read_text().splitlines()]
    assert sorted(base64.b64decode(p["value_base64"]) for p in parked) == sorted(payload for _, payload in bad)
    for entry in parked:  # the DLQ contract's headers, and why Kafka refused it
        assert entry["headers"][dlq.ERROR] == "missing_field"
        assert entry["headers"][dlq.SERVICE] == "bridge"
        assert entry["headers"][dlq.MQTT_TOPIC] == mqtt_topic("car-00001")
        assert "MSG_SIZE_TOO_LARGE" in entry["kafka_error"] or "too large" in entry["kafka_error"].lower()
    bridge.assert_running()


def test_refused_dlq_records_that_cannot_be_parked_are_held_with_a_throttled_log_and_delivered_when_it_accepts(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics, tmp_path
):
    """No room in the parking file either: the two bad ones are held (unacknowledged, two of five slots) while
    good readings pass through the other three; once the DLQ takes records again, they land there."""
    create_topic(kafka_bootstrap, bridge_topics[1], 4, **{"max.message.bytes": "100"})
    broker = mosquitto_node_factory()
    bridge = bridge_factory(
        kafka_bootstrap,
        broker.port,
        bridge_topics,
        BRIDGE_BUFFER_SIZE="5",
        BRIDGE_PARK_FILE=str(tmp_path / "parked.jsonl"),
        BRIDGE_PARK_MAX_BYTES="0",
    )
    good = readings(cars=2, per_car=30)
    bad = [(mqtt_topic("car-00002"), b"not json %d" % i) for i in range(2)]
    Publisher(broker.port, interleave(as_mqtt_messages(good), bad)).wait()

    messages = collect(kafka_bootstrap, bridge_topics[0], want=len(good))
    assert not assert_none_missing(good, decoded(messages))
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_dlq_held") == 2, "two held")
    assert metrics["bridge_in_flight"] == 2
    time.sleep(12)  # past one more offer to the DLQ: refused again, and not logged again
    assert bridge.metrics()["bridge_dlq_refusals_total"] >= 3
    assert bridge.log().count("the parking file") == 1

    alter_topic_config(kafka_bootstrap, bridge_topics[1], **{"max.message.bytes": "1048588"})
    dead = collect(kafka_bootstrap, bridge_topics[1], want=2, timeout=60)
    assert sorted(m.value() for m in dead) == sorted(payload for _, payload in bad)
    assert {dlq.parse(m.headers())[dlq.ERROR] for m in dead} == {"malformed_json"}
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_in_flight") == 0, "nothing held")
    assert metrics["bridge_dlq_held"] == 0
    assert not (tmp_path / "parked.jsonl").exists()


def test_readings_refused_for_a_while_are_produced_again_in_their_order(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    """The readings topic refuses every record (too large for it) until its limit is raised: each refused reading
    goes back to its place, nothing newer passes it, and each car's readings land in the order published."""
    create_topic(kafka_bootstrap, bridge_topics[0], 4, **{"max.message.bytes": "100"})
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics, BRIDGE_BUFFER_SIZE="100")
    sent = readings(cars=4, per_car=100)
    publisher = Publisher(broker.port, as_mqtt_messages(sent), rate=200)
    bridge.wait_for_metrics(lambda m: m.get("bridge_produce_retries_total", 0) >= 50, "refused deliveries")
    assert bridge.metrics()["bridge_produced_total"] == 0
    alter_topic_config(kafka_bootstrap, bridge_topics[0], **{"max.message.bytes": "1048588"})
    publisher.wait()
    messages = collect(kafka_bootstrap, bridge_topics[0], want=len(sent), timeout=120)
    duplicates = assert_none_missing(sent, decoded(messages))
    assert not duplicates
    assert_in_order_per_car(messages)
    log = bridge.log()
    assert log.count("Kafka refused a reading") <= 2, "one warning per 30 s, not one per retry"
    bridge.assert_running()


def test_bytes_held_while_kafka_is_down_stay_under_the_bound_and_nothing_is_lost(
    kafka_node_factory, mosquitto_node_factory, bridge_factory
):
    """Payloads of 300 KB (too large for a reading, so bound for the DLQ, whole) while Kafka is down: the bridge
    stops reading MQTT at its byte bound (2 MiB, where its buffer of 1,000 messages would hold 300 MB), and once
    Kafka is back every payload is in the DLQ and every reading in the readings topic."""
    kafka = kafka_node_factory()
    broker = mosquitto_node_factory()
    topics = ("bytes-readings", "bytes-dlq")
    bound = 2 * 2**20
    bridge = bridge_factory(
        kafka.bootstrap_servers,
        broker.port,
        topics,
        BRIDGE_BUFFER_SIZE="1000",
        BRIDGE_MAX_BUFFER_BYTES=str(bound),
        BRIDGE_KEEPALIVE="5",
    )
    kafka.stop()
    good = readings(cars=2, per_car=20)
    large = [(mqtt_topic("car-00001"), b'{"pad": "%s"}' % (b"x" * 300_000) + b" " * i) for i in range(30)]
    publisher = Publisher(broker.port, interleave(as_mqtt_messages(good), large))
    peak, deadline = 0.0, time.monotonic() + 15
    while time.monotonic() < deadline:
        metrics = bridge.metrics()
        peak = max(peak, metrics.get("bridge_bytes_held", 0.0))
        time.sleep(0.2)
    assert metrics["bridge_reading_paused"] == 1
    assert bound <= peak < bound + 310_000, f"held {peak:.0f} bytes with a bound of {bound}"
    kafka.start()
    kafka.wait_ready()
    publisher.wait(timeout=180)
    readings_messages = collect(kafka.bootstrap_servers, topics[0], want=len(good), timeout=120)
    assert_none_missing(good, decoded(readings_messages))
    dead = collect(kafka.bootstrap_servers, topics[1], want=len(large), timeout=120)
    assert {m.value() for m in dead} == {payload for _, payload in large}
    assert {dlq.parse(m.headers())[dlq.ERROR] for m in dead} == {"payload_too_large"}
    bridge.wait_for_metrics(lambda m: m.get("bridge_in_flight") == 0 and m.get("bridge_reading_paused") == 0, "drained")


def test_health_endpoints_say_ready_only_with_the_subscription_granted(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics, tmp_path
):
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_subscribed") == 1, "the subscription")
    assert bridge.health("/healthz") == (200, "ok")
    assert bridge.health("/readyz") == (200, "ok")

    # A broker whose dynamic-security plugin refuses every subscription (reason 0x87, not authorized): connected,
    # but nothing can be read. (Mosquitto's plain acl_file grants a subscription it will not serve.)
    dynsec = tmp_path / "dynsec.json"
    dynsec.write_text(json.dumps({"defaultACLAccess": {"subscribe": False}, "clients": [], "groups": [], "roles": []}))

    class StrictMosquitto(MosquittoNode):
        def prepare(self) -> None:
            super().prepare()
            plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
            extra = f"\nplugin {plugin}\nplugin_opt_config_file {dynsec}\n"
            self.config_file.write_text(self.config_file.read_text() + extra)

        def answers(self) -> bool:  # its health check subscribes, which this broker refuses
            return port_in_use(self.port)

    strict = StrictMosquitto(tmp_path / "strict", port=free_port())
    try:
        strict.start()
        strict.wait_ready()
        refused = bridge_factory(kafka_bootstrap, strict.port, bridge_topics, client_id="bridge-refused")
        _, body = wait_for_status(refused, "/readyz", 503)
        assert "not granted the subscription" in body
        assert refused.health("/healthz") == (200, "ok")  # alive: not ready is no reason to restart
        assert refused.metrics()["bridge_mqtt_connected"] == 1
        assert "refused the subscription" in refused.log()
    finally:
        strict.stop()


def wait_for_status(service: ChildService, path: str, status: int, timeout: float = 30) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        answer = service.health(path)
        if answer[0] == status or time.monotonic() > deadline:
            assert answer[0] == status, answer
            return answer
        time.sleep(0.3)


def test_hostile_numbers_from_mosquitto_pub_are_dead_lettered_each_with_one_log_line_at_most(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    """1e400 parses as infinity; as an integer field, a seq or an event_time it is no integer at all. Sent with
    mosquitto_pub (a client nobody here wrote), 50 times each: every one lands in the DLQ with its code, and the
    bridge logs no traceback."""
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    good = readings(cars=1, per_car=1)[0]
    template = json.dumps(good)
    hostile = {
        template.replace(f'"coolant_temp": {good["coolant_temp"]}', '"coolant_temp": 1e400'): "not_finite",
        template.replace(
            f'"tire_pressure_1_1": {good["tire_pressure_1_1"]}', '"tire_pressure_1_1": 1e400'
        ): "wrong_type",
        template.replace('"seq": 0', '"seq": 1e400'): "wrong_type",
        template.replace(f'"event_time": {good["event_time"]}', '"event_time": -1e400'): "wrong_type",
        "[" * 10_000 + "]" * 10_000: "malformed_json",
    }
    assert all(payload != template for payload in hostile)
    for payload in hostile:
        for _ in range(50):
            subprocess.run(
                ["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", mqtt_topic(good["car_id"]), "-s"],
                input=payload.encode(),
                check=True,
                timeout=30,
            )
    dead = collect(kafka_bootstrap, bridge_topics[1], want=len(hostile), timeout=60)
    assert len(dead) == 50 * len(hostile)
    codes = {m.value().decode(): dlq.parse(m.headers())[dlq.ERROR] for m in dead}
    assert codes == hostile
    log = bridge.log()
    assert "Traceback" not in log
    assert len(log.splitlines()) < 60, "a line per message is a log flood"
    bridge.assert_running()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


BRIDGE_RSS_LIMIT_MIB = 256  # bridge/README.md, "Memory"; the Kubernetes limit is 512Mi


def test_a_flood_of_200000_distinct_cars_and_2000_huge_bad_topics_keeps_the_bridge_under_its_memory_limit(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    baseline = peak_rss_mib(bridge.pid)
    good = readings(cars=1, per_car=1)[0]
    cars = [{**good, "car_id": f"flood-{i:06d}"} for i in range(200_000)]
    bad_topics = [(f"vehicles/sensor/data/bad car {i} " + "x" * 60_000, b"{}") for i in range(2_000)]
    Publisher(broker.port, bad_topics + as_mqtt_messages(cars)).wait(timeout=240)
    metrics = bridge.wait_for_metrics(
        lambda m: m.get("bridge_produced_total") == len(cars) and m.get("bridge_in_flight") == 0,
        "every reading confirmed",
        timeout=240,
    )
    assert metrics["bridge_dead_lettered_total"] == len(bad_topics)
    peak = peak_rss_mib(bridge.pid)
    print(f"bridge peak RSS {peak:.0f} MiB (at start {baseline:.0f} MiB) after 200,000 cars and 2,000 60 KB topics")
    assert peak < BRIDGE_RSS_LIMIT_MIB
    keys = {m.key() for m in collect(kafka_bootstrap, bridge_topics[0], want=len(cars), timeout=120, linger=1)}
    assert len(keys) == len(cars)
