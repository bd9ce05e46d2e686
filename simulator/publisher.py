"""Publishing over a pool of paho-mqtt clients (callback API v2), with a bounded number of messages in flight.

Cars are spread over `--connections` clients (car i on client i mod N): one client per car for small fleets,
a few clients for 100,000 cars. Each client runs paho's network thread (loop_start).

Flow control is ours, not paho's: paho's own in-flight limit rescans its whole outgoing queue on every
acknowledgement, which made QoS 1 about three times slower in a measurement here, and its message ids wrap at
65,535. So paho gets no limit and each connection holds at most `window` messages sent but not yet acknowledged
(QoS 1) or not yet written to the socket (QoS 0); past that, `publish` waits, and the simulation falls behind
its schedule instead of piling messages up in memory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from common.errors import CarStreamError
from simulator.settings import PublishSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


class PublishError(CarStreamError):
    """The MQTT broker could not be reached or refused the connection."""


@dataclass
class _Connection:
    name: str
    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    refused: str | None = None
    sent: int = 0
    done: int = 0  # written by paho's network thread only: acknowledged (QoS 1) or written out (QoS 0)

    @property
    def outstanding(self) -> int:
        return self.sent - self.done


class FleetPublisher:
    """A pool of MQTT connections. Use as a context manager: connect on enter, drain and disconnect on exit."""

    def __init__(self, settings: PublishSettings, connections: int, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.dropped = 0
        self._closing = False
        self._pool = [self._make_client(i) for i in range(max(1, connections))]

    @property
    def address(self) -> str:
        return f"{self.settings.mqtt_host}:{self.settings.mqtt_port}"

    def _make_client(self, number: int) -> _Connection:
        s = self.settings
        name = f"{s.client_id}-{os.getpid()}-{number}"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=name,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.max_inflight_messages_set(0)  # unlimited: see the module docstring
        client.max_queued_messages_set(0)
        if s.mqtt_username:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password else None
            client.username_pw_set(s.mqtt_username, password)
        if s.mqtt_tls:
            client.tls_set(ca_certs=s.mqtt_ca_file)
        connection = _Connection(name, client)
        client.on_connect = lambda _c, _u, _f, reason, _p: self._on_connect(connection, reason)
        client.on_disconnect = lambda _c, _u, _f, reason, _p: self._on_disconnect(connection, reason)
        client.on_publish = lambda _c, _u, _mid, _reason, _p: self._on_publish(connection)
        return connection

    def _on_connect(self, connection: _Connection, reason: Any) -> None:
        if reason.is_failure:
            connection.refused = str(reason)
        else:
            connection.connected.set()

    def _on_disconnect(self, connection: _Connection, reason: Any) -> None:
        connection.connected.clear()
        if not self._closing:
            log.warning("MQTT connection %s lost (%s); paho reconnects", connection.name, reason)

    @staticmethod
    def _on_publish(connection: _Connection) -> None:
        connection.done += 1

    def __enter__(self) -> FleetPublisher:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        s = self.settings
        log.info(
            "connecting %d MQTT client(s) to %s (qos %d, tls %s)", len(self._pool), self.address, s.qos, s.mqtt_tls
        )
        for connection in self._pool:
            try:
                connection.client.connect(s.mqtt_host, s.mqtt_port, keepalive=30)
            except (OSError, ValueError) as exc:
                self.close()
                raise PublishError(
                    f"cannot reach the MQTT broker at {self.address}: {exc} (check MQTT_HOST / MQTT_PORT)"
                ) from None
            connection.client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        for connection in self._pool:
            while not connection.connected.wait(0.05) and connection.refused is None:
                if time.monotonic() > deadline:
                    self.close()
                    raise PublishError(f"the MQTT broker at {self.address} did not accept within {CONNECT_TIMEOUT_S} s")
            if connection.refused is not None:
                self.close()
                raise PublishError(f"the MQTT broker at {self.address} refused the connection: {connection.refused}")
        log.info("connected to %s", self.address)

    def publish(self, connection_index: int, topic: str, payload: bytes) -> bool:
        """Send one message on connection `connection_index % connections`; False when asked to stop while
        waiting for room in the window (the message was not sent)."""
        connection = self._pool[connection_index % len(self._pool)]
        while connection.outstanding >= self.settings.window:
            if self.stop.is_set():
                return False
            time.sleep(0.001)
        connection.sent += 1
        info = connection.client.publish(topic, payload, qos=self.settings.qos)
        if self.settings.qos == 0 and info.rc != mqtt.MQTT_ERR_SUCCESS:
            connection.done += 1  # QoS 0 while disconnected: paho drops it and will never call on_publish
            self.dropped += 1
        return True

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self._pool)

    @property
    def done(self) -> int:
        return sum(c.done for c in self._pool)

    @property
    def outstanding(self) -> int:
        return sum(c.outstanding for c in self._pool)

    def drain(self, timeout: float) -> bool:
        """Wait until every sent message is acknowledged (QoS 1) or written (QoS 0); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.outstanding > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._closing = True
        for connection in self._pool:
            connection.client.disconnect()
            connection.client.loop_stop()
