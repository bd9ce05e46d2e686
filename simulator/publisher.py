"""Publishing over a pool of paho-mqtt clients (callback API v2), driven from the caller's thread.

Cars are spread over `--connections` clients (car i on client i mod N): one client per car for small fleets,
a few clients for 100,000 cars. In secured mode (a fleet secret) every car is its own client, logged in as itself
with the password derived from the secret (common/security.py): the broker lets it publish to its own topic only.

Two choices, both measured on this project's 2-core machine, make 10,000 msg/s reachable from one process:
- No network threads (no loop_start): paho then writes each PUBLISH straight to the socket in `publish()`, and
  `pump()` reads acknowledgements, flushes pending writes, sends keep-alives and reconnects, with one selector
  over all sockets. With loop_start, every publish wakes the client's thread through a socket pair and the two
  threads contend for the GIL and paho's locks.
- Flow control is ours: paho's own in-flight limit rescans its whole outgoing queue on every acknowledgement
  (about three times slower at QoS 1 here), and its message ids wrap at 65,535. So paho gets no limit and each
  connection holds at most `window` messages sent but not yet acknowledged (QoS 1) or not yet written (QoS 0);
  past that, `publish` pumps until there is room, and the caller falls behind its schedule instead of piling
  messages up in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from common.errors import CarStreamError, ConfigError
from common.security import car_password, client_tls_context
from simulator.settings import PublishSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
PUMP_EVERY = 256  # publishes between two reads of acknowledgements
MAX_RECONNECT_DELAY_S = 5.0


class PublishError(CarStreamError):
    """The MQTT broker could not be reached or refused the connection."""


@dataclass
class _Connection:
    name: str
    client: mqtt.Client
    connected: bool = False
    lost: bool = False
    refused: str | None = None
    sock: socket.socket | None = None
    retry_at: float = 0.0
    retry_delay: float = 0.5
    sent: int = 0
    done: int = 0  # acknowledged (QoS 1) or written out (QoS 0)

    @property
    def outstanding(self) -> int:
        return self.sent - self.done


class FleetPublisher:
    """A pool of MQTT connections. Use as a context manager: connect on enter, disconnect on exit."""

    def __init__(
        self,
        settings: PublishSettings,
        connections: int,
        stop: threading.Event | None = None,
        cars: Sequence[str] | None = None,
    ) -> None:
        """`cars`: with a fleet secret, the car each connection logs in as (one connection per car)."""
        self.settings = settings
        if settings.fleet_secret is not None and cars is None:
            raise ConfigError(
                "SIMULATOR_FLEET_SECRET logs each car in on a connection of its own, which only the live fleet "
                "does; replay has no per-car logins yet: unset it and give MQTT_USERNAME/MQTT_PASSWORD instead"
            )
        self._cars = cars if settings.fleet_secret is not None else None
        if self._cars is not None:
            connections = len(self._cars)
        self._tls = client_tls_context(settings.mqtt_ca_file) if settings.mqtt_tls else None
        self.stop = stop or threading.Event()
        self.dropped = 0
        self._closing = False
        self._since_pump = 0
        self._next_misc = 0.0
        self._selector = selectors.DefaultSelector()
        self._pool = [self._make_client(i) for i in range(max(1, connections))]

    @property
    def address(self) -> str:
        return f"{self.settings.mqtt_host}:{self.settings.mqtt_port}"

    def _make_client(self, number: int) -> _Connection:
        s = self.settings
        name = f"{s.client_id}-{os.getpid()}-{number}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(0)  # unlimited: see the module docstring
        client.max_queued_messages_set(0)
        if self._cars is not None and s.fleet_secret is not None:
            car = self._cars[number]
            client.username_pw_set(car, car_password(s.fleet_secret.get_secret_value(), car))
        elif s.mqtt_username:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password else None
            client.username_pw_set(s.mqtt_username, password)
        if self._tls is not None:
            client.tls_set_context(self._tls)  # one context for every connection: the CA is parsed once
        connection = _Connection(name, client)
        client.on_connect = lambda _c, _u, _f, reason, _p: self._on_connect(connection, reason)
        client.on_disconnect = lambda _c, _u, _f, reason, _p: self._on_disconnect(connection, reason)
        client.on_publish = lambda _c, _u, _mid, _reason, _p: self._on_publish(connection)
        return connection

    def _on_connect(self, connection: _Connection, reason: Any) -> None:
        if reason.is_failure:
            connection.refused = str(reason)
            return
        if connection.lost:
            log.info("MQTT connection %s is back", connection.name)
        connection.connected, connection.lost = True, False
        connection.retry_delay = 0.5

    def _on_disconnect(self, connection: _Connection, reason: Any) -> None:
        connection.connected = False
        self._unwatch(connection)
        if not self._closing:
            connection.lost = True
            log.warning("MQTT connection %s lost (%s); reconnecting", connection.name, reason)
            connection.retry_at = time.monotonic() + connection.retry_delay

    @staticmethod
    def _on_publish(connection: _Connection) -> None:
        connection.done += 1

    def _watch(self, connection: _Connection) -> None:
        connection.sock = connection.client.socket()  # type: ignore[assignment]
        if connection.sock is not None:
            self._selector.register(connection.sock, selectors.EVENT_READ, connection)

    def _unwatch(self, connection: _Connection) -> None:
        if connection.sock is not None:
            with contextlib.suppress(KeyError, ValueError):  # already closed by paho
                self._selector.unregister(connection.sock)
            connection.sock = None

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
                connection.client.connect(s.mqtt_host, s.mqtt_port, keepalive=KEEPALIVE_S)
            except (OSError, ValueError) as exc:
                self.close()
                raise PublishError(
                    f"cannot reach the MQTT broker at {self.address}: {exc} (check MQTT_HOST / MQTT_PORT)"
                ) from None
            self._watch(connection)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not all(c.connected for c in self._pool):
            refused = next((c.refused for c in self._pool if c.refused), None)
            if refused or time.monotonic() > deadline:
                self.close()
                why = f"refused the connection: {refused}" if refused else f"did not accept in {CONNECT_TIMEOUT_S} s"
                raise PublishError(f"the MQTT broker at {self.address} {why}")
            self.pump(0.05)
        log.info("connected to %s", self.address)

    def publish(self, connection_index: int, topic: str, payload: bytes) -> bool:
        """Send one message on connection `connection_index % connections`; False when asked to stop while
        waiting for room in the window (the message was not sent)."""
        connection = self._pool[connection_index % len(self._pool)]
        while connection.outstanding >= self.settings.window:
            if self.stop.is_set():
                return False
            self.pump(0.005)
        connection.sent += 1
        info = connection.client.publish(topic, payload, qos=self.settings.qos)
        if self.settings.qos == 0 and info.rc != mqtt.MQTT_ERR_SUCCESS:
            connection.done += 1  # QoS 0 while disconnected: paho drops it and will never call on_publish
            self.dropped += 1
        self._since_pump += 1
        if self._since_pump >= PUMP_EVERY:
            self.pump(0.0)
        return True

    def pump(self, timeout: float = 0.0) -> None:
        """Network work for every connection: read acknowledgements (waiting up to `timeout` for some), flush
        pending writes, send keep-alives, reconnect lost connections."""
        self._since_pump = 0
        if self._selector.get_map():
            for key, _events in self._selector.select(timeout):
                key.data.client.loop_read()
        elif timeout > 0:
            time.sleep(timeout)
        now = time.monotonic()
        for connection in self._pool:
            if connection.sock is not None and connection.client.want_write():
                connection.client.loop_write()
            elif connection.sock is None and not self._closing and now >= connection.retry_at:
                self._reconnect(connection, now)
        if now >= self._next_misc:
            self._next_misc = now + 1.0
            for connection in self._pool:
                if connection.sock is not None:
                    connection.client.loop_misc()

    def _reconnect(self, connection: _Connection, now: float) -> None:
        try:
            connection.client.reconnect()
        except OSError as exc:
            connection.retry_delay = min(MAX_RECONNECT_DELAY_S, connection.retry_delay * 2)
            connection.retry_at = now + connection.retry_delay
            log.debug("reconnect of %s failed (%s); next try in %.1f s", connection.name, exc, connection.retry_delay)
            return
        self._watch(connection)

    def wait(self, seconds: float) -> None:
        """Keep the connections serviced for `seconds`, or until asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.pump(min(left, 0.05))

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
        """Pump until every sent message is acknowledged (QoS 1) or written (QoS 0); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.outstanding > 0:
            if time.monotonic() > deadline:
                return False
            self.pump(0.01)
        return True

    def close(self) -> None:
        self._closing = True
        for connection in self._pool:
            if connection.sock is not None:
                connection.client.disconnect()
            self._unwatch(connection)
        self._selector.close()
