"""paho's client with its per-message costs cut, for a bridge that reads tens of thousands of QoS 1 messages a
second: the same packets on the wire, the same callbacks, less Python per message.

- Reads: paho reads every packet with three or more recv() calls (command byte, each length byte, body). This
  client reads the socket in 64 KiB chunks and serves paho's reads from memory: the same bytes in the same order.
- PUBLISH: paho 2.2 builds an MQTT 5 `Properties` object for every PUBLISH, even one that carries no property
  (the broker's, to a subscriber that asked for none): 10 to 20 µs measured, a loop over every property name. Such a
  packet is decoded here; any other (properties present, QoS 2, MQTT 3.1.1) goes to paho as before.
- PUBACKs: `ack()` queues and writes each acknowledgement on its own, one send() each. `ack_many()` writes a
  batch as one packet of concatenated PUBACKs (the same bytes).

The last two replace paho internals (`_handle_publish`, `_packet_queue`), so they are used only with the paho
version they were written against (`PAHO_VERSION`, as in requirements.lock); with any other, paho's own code runs.
tests/unit/test_bridge_paho_client.py compares them with paho's output byte for byte and fails on another version.
"""

from __future__ import annotations

import struct

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

READ_CHUNK = 64 * 1024
PAHO_VERSION = "2.2.0"
LEAN = paho.mqtt.__version__ == PAHO_VERSION
PUBACK = 0x40


class BufferedClient(mqtt.Client):
    """`buffered` says how many bytes wait in memory: select() cannot see them, so the owner of the loop reads on
    (`loop_read`) while it is above 0. The buffer is dropped with the socket, so a new connection starts clean."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._offset = 0

    @property
    def buffered(self) -> int:
        # Over TLS, decrypted bytes can also wait inside the SSL object, which select() cannot see either.
        pending = getattr(self._sock, "pending", None)
        return len(self._chunk) - self._offset + (pending() if pending else 0)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._offset >= len(self._chunk):
            self._chunk = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there, b"" at EOF
            self._offset = 0
        data = self._chunk[self._offset : self._offset + bufsize]
        self._offset += len(data)
        return data

    def _sock_close(self) -> None:
        self._chunk, self._offset = b"", 0
        super()._sock_close()

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK (success) for each QoS 1 message id, in one write."""
        if not LEAN:
            for mid in mids:
                self.ack(mid, 1)
            return
        # Each PUBACK is 4 bytes: type 0x40, remaining length 2, the id; as one big-endian word, 0x4002_0000 | mid.
        packets = struct.pack(f"!{len(mids)}I", *[0x4002_0000 | mid for mid in mids])
        self._packet_queue(PUBACK, packets, 0, 0)

    def _handle_publish(self) -> MQTTErrorCode:
        """paho 2.2's _handle_publish for an MQTT 5 PUBLISH at QoS 0 or 1 without properties (property length 0),
        less the Properties object (`message.properties` is None, as paho gives it for MQTT 3.1.1) and the debug
        log line (the bridge attaches paho's logger only at DEBUG, and then paho decodes every packet itself)."""
        command = self._in_packet["command"]
        body = self._in_packet["packet"]
        qos = (command & 0x06) >> 1
        topic_end = 2 + (body[0] << 8 | body[1]) if len(body) >= 2 else 2
        properties_at = topic_end + 2 if qos else topic_end
        if (
            not LEAN
            or self._logger is not None
            or self._protocol != MQTTProtocolVersion.MQTTv5
            or qos > 1
            or topic_end == 2  # an empty topic: a topic alias, paho's business
            or len(body) <= properties_at
            or body[properties_at] != 0
        ):
            return super()._handle_publish()
        mid = body[topic_end] << 8 | body[topic_end + 1] if qos else 0
        message = mqtt.MQTTMessage(mid, bytes(body[2:topic_end]))
        message.dup = command & 0x08 != 0
        message.qos = qos
        message.retain = command & 0x01 != 0
        message.payload = bytes(body[properties_at + 1 :])
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        if qos and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
