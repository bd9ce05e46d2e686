"""HiveMQ CE as the local runtime's MQTT broker (scripts/runtime/hivemq.py): it starts from the jar `make setup`
builds, answers the runtime's health check, keeps a persistent session's queue across a restart in its data folder
under the run folder, and stops leaving no process. What a SIGKILL keeps: tests/integration/test_broker_crash.py."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from scripts.runtime.hivemq import MAX_QUEUED_MESSAGES, HiveMQNode, build_hivemq
from scripts.runtime.local import free_port, mqtt_round_trip, pid_alive, require


def session(port: int, client_id: str, received: list, topic: str) -> mqtt.Client:
    """An MQTT 5 persistent session (clean start off, an hour's expiry) subscribed to `topic` at QoS 1."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    assert subscribed.wait(10), "no SUBACK"
    return client


def test_hivemq_help_says_what_it_runs():
    result = subprocess.run([require("java"), "-jar", str(build_hivemq()), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "conf/config.xml" in result.stdout and "SIGTERM" in result.stdout


def test_hivemq_answers_and_keeps_a_sessions_queue_across_a_restart(tmp_path):
    node = HiveMQNode(tmp_path / "run", port=free_port(), heap="256m")
    node.start()
    try:
        node.wait_ready(timeout=120)
        config = (node.home / "conf" / "config.xml").read_text()
        assert f"<port>{node.port}</port>" in config and f"<max-queue-size>{MAX_QUEUED_MESSAGES}<" in config
        topic = f"test/{uuid.uuid4().hex}"
        away = session(node.port, "hivemq-test-session", [], topic)
        away.disconnect()
        away.loop_stop()
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        publisher.connect("127.0.0.1", node.port)
        publisher.loop_start()
        for info in [publisher.publish(topic, f"m{i}".encode(), qos=1) for i in range(100)]:
            info.wait_for_publish(10)
        publisher.disconnect()
        publisher.loop_stop()
        node.stop()
        assert any(node.data_dir.iterdir()), "nothing in the data folder"
        node.start()
        node.wait_ready(timeout=120)
        received: list[bytes] = []
        back = session(node.port, "hivemq-test-session", received, topic)
        assert mqtt_round_trip("127.0.0.1", node.port)
        deadline = time.monotonic() + 10
        while len(received) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        back.disconnect()
        back.loop_stop()
        assert sorted(received) == sorted(f"m{i}".encode() for i in range(100))
    finally:
        pid = node.pid()
        node.stop()
    assert pid is None or not pid_alive(pid)
