"""The servers themselves: real records through Kafka, real messages through Mosquitto, the runtime's behaviour."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from common.errors import LocalRuntimeError
from scripts.runtime.local import ROOT, KafkaNode, MosquittoNode, free_port, mqtt_round_trip, pid_alive, port_in_use
from scripts.runtime.mqtt_broker import mqtt_broker_name
from scripts.testkit.kafka import read_to_end


@pytest.mark.containers
def test_kafka_produces_and_consumes_real_records(kafka_bootstrap, topic_factory, producer):
    topic = topic_factory("infra", partitions=3)
    for i in range(500):
        producer.produce(topic, key=f"car-{i % 7:05d}", value=f"value-{i}".encode())
    producer.flush(30)
    messages = read_to_end(kafka_bootstrap, topic)
    assert sorted(m.value() for m in messages) == sorted(f"value-{i}".encode() for i in range(500))
    # One key always lands on one partition: per-car order is kept.
    partitions_by_key = {}
    for message in messages:
        partitions_by_key.setdefault(message.key(), set()).add(message.partition())
    assert all(len(p) == 1 for p in partitions_by_key.values())


@pytest.mark.containers
def test_mosquitto_delivers_qos1_messages_to_a_subscriber(mqtt_endpoint):
    host, port = mqtt_endpoint
    topic = f"test/{uuid.uuid4().hex}"
    received = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    subscribed = threading.Event()
    subscriber.on_message = lambda _c, _u, msg: received.append(msg.payload)
    subscriber.on_subscribe = lambda *_args: subscribed.set()  # the SUBACK
    subscriber.connect(host, port)
    subscriber.loop_start()
    subscriber.subscribe(topic, qos=1)
    assert subscribed.wait(10), "no SUBACK"  # messages published before it would have no subscriber
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    publisher.connect(host, port)
    publisher.loop_start()
    infos = [publisher.publish(topic, f"m{i}".encode(), qos=1) for i in range(200)]
    for info in infos:
        info.wait_for_publish(10)
    deadline = time.monotonic() + 10
    while len(received) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    for client in (publisher, subscriber):
        client.disconnect()
        client.loop_stop()
    assert received == [f"m{i}".encode() for i in range(200)]


@pytest.mark.containers
def test_a_persistent_session_gets_every_qos1_message_published_while_it_was_away(mqtt_endpoint):
    """The broker's session queue (compose/mosquitto/mosquitto.conf, which the container mounts and the local runtime
    rewrites): 3,000 QoS 1 messages for a subscriber that is away, three times Mosquitto's default bound (1,000),
    which would drop the rest while still acknowledging every publish."""
    host, port = mqtt_endpoint
    topic, client_id, count = f"test/{uuid.uuid4().hex}", f"away-{uuid.uuid4().hex[:8]}", 3000
    received: list[bytes] = []
    subscribed = threading.Event()

    def session() -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        client.on_message = lambda _c, _u, msg: received.append(msg.payload)
        client.on_subscribe = lambda *_args: subscribed.set()
        client.connect(host, port)
        client.loop_start()
        return client

    subscriber = session()
    subscriber.subscribe(topic, qos=1)
    assert subscribed.wait(10), "no SUBACK"
    subscriber.disconnect()
    subscriber.loop_stop()
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    publisher.connect(host, port)
    publisher.loop_start()
    infos = [publisher.publish(topic, f"m{i}".encode(), qos=1) for i in range(count)]
    for info in infos:
        info.wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()

    subscriber = session()  # the same client id, no clean session: the broker hands over what it queued
    deadline = time.monotonic() + 30
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    subscriber.disconnect()
    subscriber.loop_stop()
    assert received == [f"m{i}".encode() for i in range(count)]


def test_a_second_start_does_not_start_a_second_broker(kafka_node_factory):
    node = kafka_node_factory()
    pid = node.pid()
    twin = KafkaNode(node.run_dir, port=node.port, controller_port=node.controller_port)
    assert twin.start() is False
    assert twin.pid() == pid


def test_a_taken_port_gives_an_error_naming_the_port_its_holder_and_how_to_move(tmp_path, mosquitto_node_factory):
    holder = mosquitto_node_factory()  # the broker MQTT_BROKER names: its program is mosquitto or java
    program = Path(holder.command()[0]).name
    with pytest.raises(
        LocalRuntimeError, match=rf"port {holder.port} .*taken by {program} \(pid {holder.pid()}\).*MQTT_PORT="
    ):
        MosquittoNode(tmp_path / "other", port=holder.port).start()


def test_stop_leaves_no_process_and_data_survives_a_restart(tmp_path):
    node = MosquittoNode(tmp_path / "mq", port=free_port())
    node.start()
    node.wait_ready()
    pid = node.pid()
    assert node.stop() is True
    assert not pid_alive(pid) and node.pid() is None and not os.path.exists(node.pid_file)
    assert not mqtt_round_trip("127.0.0.1", node.port, timeout=1)
    node.start()
    node.wait_ready()
    node.stop()


def test_the_local_runtime_starts_and_stops_an_optional_schema_registry(tmp_path):
    """`make up REGISTRY=1`: Kafka, Mosquitto and Apicurio Registry (Confluent-compatible API) as local processes;
    `make down` stops all three."""
    ports = {name: free_port() for name in ("kafka", "controller", "mqtt", "registry")}
    env = dict(
        os.environ,
        RUNTIME_DIR=str(tmp_path / "runtime"),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{ports['kafka']}",
        KAFKA_CONTROLLER_PORT=str(ports["controller"]),
        MQTT_PORT=str(ports["mqtt"]),
        SCHEMA_REGISTRY_PORT=str(ports["registry"]),
    )
    runtime = [sys.executable, "-m", "scripts.runtime.local"]  # from the checkout: scripts/ is not installed
    up = subprocess.run(
        [*runtime, "up", "--schema-registry"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        url = f"http://127.0.0.1:{ports['registry']}/apis/ccompat/v7"
        assert f"SCHEMA_REGISTRY_URL={url}" in up.stdout
        with urllib.request.urlopen(f"{url}/subjects", timeout=10) as response:
            assert json.loads(response.read()) == []
    finally:
        down = subprocess.run([*runtime, "down"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert f"stopped: schema-registry, kafka, {mqtt_broker_name()}" in down.stdout
    for port in ports.values():
        assert not port_in_use(port)
