"""The secured mode on HiveMQ: a private HiveMQ started as scripts/runtime/hivemq.py starts it with the material of
scripts/runtime/secured.py (TLS only, Mosquitto's password file and ACL file read by our embedded extension), probed
with paho. Every refusal is paired with the same call done right, so that a test cannot pass because nothing works."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from common.security import car_password
from common.topics import MQTT_TOPIC_FILTER, car_id, mqtt_topic
from scripts.runtime.hivemq import HiveMQNode
from scripts.runtime.local import free_port
from scripts.runtime.secured import SecureMaterial

CARS = 3
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HiveMQNode]:
    run_dir = tmp_path_factory.mktemp("hivemq-secured")
    material = SecureMaterial(run_dir / "secure").ensure(CARS)
    node = HiveMQNode(run_dir, port=free_port(), secure=material, heap="256m")
    node.start()
    try:
        node.wait_ready(timeout=120)
        yield node
    finally:
        node.stop()


class Client:
    """paho, MQTT 5, over TLS verified against `ca_file` unless `tls` is False; records CONNACK, PUBACK and
    messages."""

    def __init__(self, broker: HiveMQNode, user: str | None, password: str | None, tls: bool = True, ca=None):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        if tls:
            self.client.tls_set(ca_certs=str(ca or broker.secure.ca_file))
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.subscribed: list[int] = []
        self.received: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subscribed.extend(c.value for c in codes)
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload))
        self.client.on_publish = lambda _c, _u, mid, code, _p: self.pubacks.__setitem__(mid, code.value)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connack = reason_code
        self.connected.set()

    def accepted(self, timeout: float = 10.0) -> bool:
        """Whether the broker answered the CONNECT with success."""
        assert self.connected.wait(timeout), "no CONNACK"
        return not self.connack.is_failure

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> int:
        """One QoS 1 publish; returns the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + timeout
        while info.mid not in self.pubacks:
            assert time.monotonic() < deadline, "no PUBACK"
            time.sleep(0.02)
        return self.pubacks[info.mid]

    def subscribe(self, topic: str, timeout: float = 10.0) -> int:
        """One QoS 1 subscription; returns the SUBACK's reason code."""
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + timeout
        while not self.subscribed:
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.02)
        return self.subscribed.pop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def as_car(broker: HiveMQNode, number: int, password: str | None = None) -> Client:
    car = car_id(number)
    return Client(broker, car, password or car_password(broker.secure.fleet_secret, car))


def test_hivemq_refuses_anonymous_clients_and_wrong_passwords_and_lets_a_car_in_with_its_own(broker):
    anonymous, wrong, own = Client(broker, None, None), as_car(broker, 1, "not-its-password"), as_car(broker, 1)
    try:
        assert not anonymous.accepted()
        assert not wrong.accepted() and wrong.connack.getName() in ("Bad user name or password", "Not authorized")
        assert own.accepted()
    finally:
        for client in (anonymous, wrong, own):
            client.close()


def test_hivemq_has_no_plaintext_listener_and_a_client_that_does_not_trust_the_ca_cannot_connect(broker, tmp_path):
    # Plain MQTT on the TLS port: the broker answers no CONNACK (the bytes are no TLS handshake).
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x0a\x00\x04test")
        try:
            answer = sock.recv(4)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert answer[:1] != b"\x20"
    other = SecureMaterial(tmp_path / "other").ensure(1)
    with pytest.raises(ssl.SSLCertVerificationError):
        Client(broker, car_id(1), "x", ca=other.ca_file)
    trusted = as_car(broker, 1)
    assert trusted.accepted()
    trusted.close()


def test_a_car_publishes_to_its_own_topic_only_and_only_the_bridge_identity_reads_the_fleet(broker):
    bridge = Client(broker, "bridge", broker.secure.mqtt_password("bridge"))
    car_one, car_two = as_car(broker, 1), as_car(broker, 2)
    try:
        assert bridge.accepted() and car_one.accepted() and car_two.accepted()
        assert bridge.subscribe(f"$share/car-bridge/{MQTT_TOPIC_FILTER}") < 0x80
        assert car_two.subscribe(MQTT_TOPIC_FILTER) >= 0x80, "a car read the fleet's topics"
        assert car_one.publish(mqtt_topic(car_id(1)), b"own") < 0x80
        assert car_one.publish(mqtt_topic(car_id(2)), b"forged") == NOT_AUTHORIZED
        deadline = time.monotonic() + 10
        while not bridge.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a forged reading, had it passed, would have come with the own one
        assert bridge.received == [(mqtt_topic(car_id(1)), b"own")]
    finally:
        for client in (bridge, car_one, car_two):
            client.close()
