"""bridge/paho_client.py replaces two paho internals for speed: these tests hold them to paho's own behaviour, byte
for byte, over a socket pair (no broker), and fail when the installed paho is not the one they were written for."""

from __future__ import annotations

import socket
import struct

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge import paho_client
from bridge.paho_client import BufferedClient

TOPIC = "vehicles/sensor/data/car-00001"


def test_written_for_the_installed_paho():
    assert paho.mqtt.__version__ == paho_client.PAHO_VERSION, (
        f"paho-mqtt {paho.mqtt.__version__} is installed; bridge/paho_client.py overrides _handle_publish and uses "
        f"_packet_queue of {paho_client.PAHO_VERSION}: compare them with the new version, then update PAHO_VERSION"
    )
    assert paho_client.LEAN


def publish_packet(
    mid: int, payload: bytes, qos: int = 1, dup: bool = False, retain: bool = False, properties: bytes = b"\x00"
) -> bytes:
    """An MQTT 5 PUBLISH as a broker sends it; `properties` is the encoded property length and properties."""
    topic = TOPIC.encode()
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + properties + payload
    header = 0x30 | dup << 3 | qos << 1 | retain
    length, remaining = bytearray(), len(body)  # the remaining length, 7 bits a byte
    while True:
        length.append(remaining & 0x7F | (0x80 if remaining > 0x7F else 0))
        remaining >>= 7
        if not remaining:
            return bytes([header]) + bytes(length) + body


def with_expiry(seconds: int) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = seconds
    return properties.pack()


PACKETS = [
    publish_packet(1, b'{"speed": 1}'),
    publish_packet(65535, b"", dup=True),
    publish_packet(7, b"x", qos=0, retain=True),
    publish_packet(8, b"with a property", properties=with_expiry(60)),
    publish_packet(9, b"r" * 600),  # a two-byte remaining length
    publish_packet(10, b"s" * 20_000),  # three
]


def receive(client_class: type[mqtt.Client], packets: list[bytes], manual_ack: bool = True, piece: int = 1 << 20):
    """What on_message saw, and the bytes the client wrote back."""
    client = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    seen = []
    client.on_message = lambda _c, _u, m: seen.append(
        (
            m.mid,
            m.topic,
            m.payload,
            type(m.payload),
            m.qos,
            m.dup,
            m.retain,
            m.properties.json() if m.properties else {},
        )
    )
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    data = b"".join(packets)
    for start in range(0, len(data), piece):  # what the client reads at a time: packets split between reads
        broker.sendall(data[start : start + piece])
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    while len(seen) < len(packets):
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    broker.setblocking(False)
    try:
        written = broker.recv(65536)
    except BlockingIOError:
        written = b""
    return client, seen, written


@pytest.mark.parametrize("piece", [1 << 20, 1000, 7, 1])
def test_messages_come_out_as_paho_decodes_them(piece):
    assert receive(BufferedClient, PACKETS, piece=piece)[1] == receive(mqtt.Client, PACKETS)[1]


def test_the_lean_decoder_takes_the_packets_without_properties(monkeypatch):
    decoded = []
    monkeypatch.setattr(mqtt.Client, "_handle_publish", lambda self: decoded.append(1) or mqtt.MQTT_ERR_SUCCESS)
    client = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_message = lambda *_: None
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    broker.sendall(b"".join(PACKETS))
    for _ in PACKETS:
        client.loop_read()
    assert decoded == [1]  # only the one with a property went to paho


def test_automatic_acknowledgements_are_paho_s():
    assert receive(BufferedClient, PACKETS, manual_ack=False)[2] == receive(mqtt.Client, PACKETS, manual_ack=False)[2]


@pytest.mark.parametrize("mids", [[1], [1, 2, 300, 65535]])
def test_a_batch_of_acknowledgements_is_the_pubacks_paho_writes(mids):
    lean = capture(BufferedClient, lambda client: client.ack_many(mids))
    assert lean == capture(mqtt.Client, lambda client: [client.ack(mid, 1) for mid in mids])
    assert len(lean) == 4 * len(mids)


def capture(client_class: type[mqtt.Client], send) -> bytes:
    """The bytes `send(client)` writes, in one go."""
    client = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    send(client)
    assert not client.want_write()
    broker.setblocking(False)
    return broker.recv(65536)
