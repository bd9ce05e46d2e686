"""The bridge's guarantees, each proven by counting (car_id, seq) end to end through a real Mosquitto and Kafka.

Every test runs `python -m bridge` as its own process (so SIGKILL is real) against a private Mosquitto and
per-test Kafka topics; the Kafka outage test uses a private Kafka it can stop and restart.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from bridge.validation import content_seq
from common import schemas
from common.topics import mqtt_topic
from scripts.testkit.bridge import assert_none_missing
from scripts.testkit.kafka import collect
from scripts.testkit.mqtt import Publisher
from scripts.testkit.readings import as_mqtt_messages, decoded, readings

pytestmark = pytest.mark.timeout(240)


def test_10000_readings_arrive_exactly_once_decodable_and_keyed_by_car(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    sent = readings(cars=20, per_car=500)
    Publisher(broker.port, as_mqtt_messages(sent)).wait()
    messages = collect(kafka_bootstrap, bridge_topics[0], want=10_000)
    records = decoded(messages)
    assert len(records) == 10_000
    assert not assert_none_missing(sent, records)
    # One car, one partition, in the order sent.
    for car in {r["car_id"] for r in sent}:
        mine = [m for m in messages if m.key() == car.encode()]
        assert len({m.partition() for m in mine}) == 1
        assert [m.offset() for m in mine] == sorted(m.offset() for m in mine)
        assert [r["seq"] for r in decoded(mine)] == list(range(500))
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_produced_total") == 10_000, "produced count")
    assert metrics["bridge_in_flight"] == 0
    bridge.stop_ok(timeout=60)
    assert "stopped;" in bridge.log()


def test_kafka_stopped_for_20_s_mid_stream_loses_nothing(kafka_node_factory, mosquitto_node_factory, bridge_factory):
    kafka = kafka_node_factory()
    broker = mosquitto_node_factory()
    topics = ("outage-readings", "outage-dlq")
    bridge = bridge_factory(kafka.bootstrap_servers, broker.port, topics, BRIDGE_BUFFER_SIZE="300")
    sent = readings(cars=10, per_car=300)
    publisher = Publisher(broker.port, as_mqtt_messages(sent), rate=100)
    bridge.wait_for_metrics(lambda m: m.get("bridge_produced_total", 0) >= 500, "readings before the outage")
    kafka.stop()
    peak_in_flight, deadline = 0.0, time.monotonic() + 20
    while time.monotonic() < deadline:
        peak_in_flight = max(peak_in_flight, bridge.metrics().get("bridge_in_flight", 0.0))
        time.sleep(0.5)
    kafka.start()
    kafka.wait_ready()
    publisher.wait()
    # The buffer filled and then held: the broker kept the rest for the session, nothing beyond 300 was taken.
    assert peak_in_flight == 300
    records = decoded(collect(kafka.bootstrap_servers, topics[0], want=len(sent), timeout=120))
    duplicates = assert_none_missing(sent, records)
    print(f"Kafka outage: {len(sent)} sent, {len(records)} in Kafka, {sum(duplicates.values())} duplicates")
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_in_flight") == 0, "an empty buffer")
    assert metrics["bridge_produced_total"] == len(records)


def test_bridge_killed_mid_stream_and_restarted_loses_nothing(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics, record_property
):
    broker = mosquitto_node_factory()
    first = bridge_factory(kafka_bootstrap, broker.port, bridge_topics, BRIDGE_BUFFER_SIZE="500")
    sent = readings(cars=10, per_car=400)
    publisher = Publisher(broker.port, as_mqtt_messages(sent), rate=1000)
    first.wait_for_metrics(lambda m: m.get("bridge_produced_total", 0) >= 1000, "readings before the kill")
    first.kill()
    time.sleep(1.0)
    bridge_factory(kafka_bootstrap, broker.port, bridge_topics, BRIDGE_BUFFER_SIZE="500")
    publisher.wait()
    records = decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(sent)))
    duplicates = assert_none_missing(sent, records)
    # Only what was in flight at the kill (delivered to Kafka, not yet acknowledged) can come twice.
    record_property("duplicates", sum(duplicates.values()))
    print(f"SIGKILL: {len(sent)} sent, {len(records)} in Kafka, {sum(duplicates.values())} duplicates")
    assert sum(duplicates.values()) <= 500


def test_sigterm_mid_stream_flushes_and_acknowledges_so_a_restart_repeats_nothing(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    first = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    sent = readings(cars=10, per_car=300)
    publisher = Publisher(broker.port, as_mqtt_messages(sent), rate=1000)
    first.wait_for_metrics(lambda m: m.get("bridge_produced_total", 0) >= 800, "readings before the stop")
    first.stop_ok(timeout=60)
    assert "stopped;" in first.log()
    bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    publisher.wait()
    records = decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(sent)))
    # Everything produced before the stop was acknowledged: the broker re-sends none of it.
    assert not assert_none_missing(sent, records)


def test_mosquitto_restarted_mid_stream_loses_nothing(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    sent = readings(cars=10, per_car=300)
    publisher = Publisher(broker.port, as_mqtt_messages(sent), rate=600)
    bridge.wait_for_metrics(lambda m: m.get("bridge_produced_total", 0) >= 800, "readings before the restart")
    broker.stop()
    time.sleep(1.0)
    broker.start()
    broker.wait_ready()
    publisher.wait()
    records = decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(sent)))
    duplicates = assert_none_missing(sent, records)
    print(f"Mosquitto restart: {len(sent)} sent, {len(records)} in Kafka, {sum(duplicates.values())} duplicates")
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_reconnects_total", 0) >= 1, "a reconnect")
    assert metrics["bridge_mqtt_connected"] == 1
    assert "(session resumed)" in bridge.log()  # the broker kept the session across its restart


def bad_payloads(good: dict) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected error) for each kind of bad input; every payload is distinct."""
    topic = mqtt_topic(good["car_id"])

    def variant(n: int, **changes) -> dict:
        return {**good, "seq": 10_000 + n, **changes}

    missing = variant(3)
    del missing["battery_voltage"]
    partial_identity = variant(4)
    del partial_identity["seq"]
    return [
        (topic, b'{"coolant_temp": 80.5, "speed":', "malformed_json"),
        (topic, json.dumps(variant(1, speed=float("nan"))).encode(), "malformed_json"),
        (topic, json.dumps(variant(2, speed="fast")).encode(), "wrong_type"),
        (topic, json.dumps([good]).encode(), "wrong_type"),
        (topic, json.dumps(missing).encode(), "missing_field"),
        (topic, json.dumps(partial_identity).encode(), "missing_field"),
        (topic, json.dumps(variant(5, speed=1.5)).encode().replace(b"1.5", b"1e400"), "not_finite"),
        (topic, json.dumps(variant(6, padding="x" * 5000)).encode(), "payload_too_large"),
        (topic, b"\xff\xfe{not utf-8 \xc3\x28}", "not_utf8"),
        ("vehicles/sensor/data/bad car!", json.dumps(variant(7)).encode(), "bad_topic"),
        (topic, json.dumps(variant(8, car_id="car-99999")).encode(), "car_id_mismatch"),
    ]


def test_bad_payloads_go_to_the_dlq_with_their_error_and_the_good_ones_around_them_arrive(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics, BRIDGE_MAX_PAYLOAD_BYTES="4096")
    good = readings(cars=1, per_car=20)
    bad = bad_payloads(good[0])
    # The seed simulator's shape: sensor fields and extra keys, no car_id/seq/event_time/failure_occurred.
    seed_car = "car-09001"
    seed = [{**{k: r[k] for k in schemas.SENSOR_FIELDS}, "timestamp": "2019-10-01T12:00:00", "vin": "X"} for r in good]
    messages = []
    for i, (topic, payload, _error) in enumerate(bad):
        messages += [
            as_mqtt_messages([good[i]])[0],
            (topic, payload),
            (mqtt_topic(seed_car), json.dumps(seed[i]).encode()),
        ]
    messages += as_mqtt_messages(good[len(bad) :])
    before = int(time.time() * 1000)
    Publisher(broker.port, messages).wait()

    dead = collect(kafka_bootstrap, bridge_topics[1], want=len(bad))
    assert len(dead) == len(bad)
    by_payload = {m.value(): m for m in dead}
    for topic, payload, error in bad:
        message = by_payload[payload]  # the original bytes, untouched
        headers = {k: v.decode() for k, v in message.headers()}
        assert headers["error"] == error, headers
        assert headers["error_detail"]
        assert headers["mqtt_topic"] == topic
        assert headers["service"] == "bridge"
        assert datetime.fromisoformat(headers["received_at"]).timestamp() * 1000 >= before - 1000
        assert message.key() == (None if error == "bad_topic" else good[0]["car_id"].encode())

    records = decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(good) + len(bad)))
    assert not assert_none_missing(good, [r for r in records if r["car_id"] != seed_car])
    from_seed = [r for r in records if r["car_id"] == seed_car]
    assert [r["seq"] for r in from_seed] == [content_seq(seed_car, json.dumps(s).encode()) for s in seed[: len(bad)]]
    assert all(r["seq_origin"] == "CONTENT_HASH" for r in from_seed)
    assert all(r["failure_occurred"] is None and r["event_time"] >= before for r in from_seed)
    assert [{k: r[k] for k in schemas.SENSOR_FIELDS} for r in from_seed] == [
        {k: s[k] for k in schemas.SENSOR_FIELDS} for s in seed[: len(bad)]
    ]
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_dead_lettered_total") == len(bad), "the DLQ count")
    assert metrics["bridge_rejected_total"] == len(bad)
    bridge.assert_running()


@pytest.mark.parametrize("policy", ["flag", "reject", "off"])
def test_range_policy_decides_whether_a_reading_in_other_units_is_flagged_rejected_or_passed(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics, policy
):
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics, BRIDGE_RANGE_POLICY=policy)
    sent = readings(cars=2, per_car=5)
    for reading in sent[::2]:  # volts and degrees of another vendor's scale
        reading.update(battery_voltage=2989.37, coolant_temp=262.27)
    Publisher(broker.port, as_mqtt_messages(sent)).wait()
    foreign = len(sent[::2])
    if policy == "reject":
        dead = collect(kafka_bootstrap, bridge_topics[1], want=foreign)
        assert sorted(dict(m.headers())["error"] for m in dead) == [b"out_of_range"] * foreign
        assert len(decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(sent) - foreign))) == len(sent) - foreign
        return
    records = decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(sent)))
    assert len(records) == len(sent)
    flagged = [r for r in records if r["out_of_range"]]
    if policy == "off":
        assert not flagged
        return
    assert {(r["car_id"], r["seq"]) for r in flagged} == {(r["car_id"], r["seq"]) for r in sent[::2]}
    assert all(r["out_of_range"] == ["coolant_temp", "battery_voltage"] for r in flagged)
    assert all(r["battery_voltage"] == 2989.37 for r in flagged)  # forwarded as sent
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_flagged_total") == foreign, "the flagged count")
    assert metrics["bridge_out_of_range_total"] == 2 * foreign  # two fields per reading, labelled by field


def test_two_bridges_on_one_shared_subscription_split_the_load_and_deliver_everything(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    bridges = [
        bridge_factory(kafka_bootstrap, broker.port, bridge_topics, client_id=f"bridge-{n}", BRIDGE_SHARED_GROUP="g")
        for n in "ab"
    ]
    sent = readings(cars=20, per_car=200)
    Publisher(broker.port, as_mqtt_messages(sent)).wait()
    records = decoded(collect(kafka_bootstrap, bridge_topics[0], want=len(sent)))
    assert not assert_none_missing(sent, records)
    assert len(records) == len(sent)
    shares = [b.wait_for_metrics(lambda m: m.get("bridge_in_flight") == 0, "an empty buffer") for b in bridges]
    produced = [m["bridge_produced_total"] for m in shares]
    assert sum(produced) == len(sent)
    assert all(p > 0 for p in produced), produced
