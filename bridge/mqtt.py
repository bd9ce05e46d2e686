"""The MQTT side: a persistent MQTT 5 session read at QoS 1 with manual acknowledgements.

- Fixed client id, clean start off and a session expiry above 0: while the bridge is away (crash, restart,
  broker restart with persistence) the broker keeps the subscription and queues the messages.
- Receive Maximum = the bridge's buffer size: the broker never has more unacknowledged messages out to us, so a
  Kafka outage fills the buffer and then simply holds messages back in the broker.
- The connection is driven from the bridge's own loop thread (`loop()`), which also serves Kafka's delivery
  reports: one thread, no locks. Lost connections are retried with exponential backoff; the subscription is
  renewed on every connect.
- Acknowledgements are collected while Kafka's delivery reports come in and written once per turn of the loop, all
  in one send() (`BufferedClient.ack_many`): on a busy bridge one system call per message was a large share of its
  CPU time. They still go out before anything else is read or waited for.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.metrics import Stats
from bridge.paho_client import BufferedClient
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

MIN_RECONNECT_DELAY = 0.25
MAX_BURST = 200  # packets read from memory per loop() call
Handler = Callable[[mqtt.MQTTMessage, int], None]


class MqttSource:
    def __init__(
        self, settings: BridgeSettings, handler: Handler, stats: Stats, may_read: Callable[[], bool] = lambda: True
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.may_read = may_read  # asked before each packet: False is back-pressure (see loop())
        # Bumped on every CONNACK: a message id is only valid on the connection that delivered it.
        self.generation = 0
        self._socket_open = False
        self._ever_connected = False
        self._delay = MIN_RECONNECT_DELAY
        self._next_attempt = 0.0
        self._closing = False
        self._barrier_passed = False
        self._acks: list[int] = []  # QoS 1 message ids Kafka confirmed, on the current connection, not yet written
        self.client = self._client(handler)

    def _client(self, handler: Handler) -> mqtt.Client:
        s = self.settings
        client = BufferedClient(
            mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        s.configure_client(client)
        paho_log = logging.getLogger("paho.mqtt")
        if paho_log.isEnabledFor(logging.DEBUG):  # every packet, for LOG_LEVEL=DEBUG only: it costs per message
            client.enable_logger(paho_log)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe

        def on_message(_client, _userdata, message: mqtt.MQTTMessage) -> None:
            if not self._closing:  # while closing, leave messages unacknowledged: the broker sends them again
                handler(message, self.generation)

        client.on_message = on_message
        return client

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.session_expiry
        properties.ReceiveMaximum = self.settings.buffer_size
        return properties

    @property
    def connected(self) -> bool:
        return self.stats.connected

    def loop(self, timeout: float) -> None:
        """Serve the connection for up to `timeout` seconds: read, write, keepalive, or (re)connect.

        While `may_read()` is False (back-pressure) acknowledgements still go out, but nothing is read, so the
        broker holds further messages (TCP fills up). Past the keepalive the connection then drops (no PINGRESP
        can be read); it is made again only once reading resumes, and what was unacknowledged on it comes again."""
        if not self._socket_open:
            if self.may_read():
                self._try_connect(timeout)
            else:
                time.sleep(timeout)
            return
        rc = self._serve(timeout, self.may_read())
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._socket_open = False
            self._lost(f"connection lost ({mqtt.error_string(rc)})")

    def _serve(self, timeout: float, read: bool = True) -> mqtt.MQTTErrorCode:
        """paho's external-loop API (loop_read/loop_write/loop_misc) around our own select(): unlike loop(), it
        needs no wake-up socket pair, so a turn's acknowledgements cost one send() (paho's loop() would add one per
        acknowledgement to wake itself)."""
        client = self.client
        sock = client.socket()
        if sock is None:
            return mqtt.MQTT_ERR_NO_CONN
        self._write_acks()
        if read:
            readable, _, _ = select.select([sock], [], [], 0 if client.buffered else timeout)
        else:
            readable = []
            time.sleep(timeout)
        rc = mqtt.MQTT_ERR_SUCCESS
        burst = MAX_BURST  # then back to the caller, which serves Kafka's delivery reports
        while (readable or (read and client.buffered)) and burst and rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_read()
            readable, burst = [], burst - 1
            read = self.may_read()
        if rc == mqtt.MQTT_ERR_SUCCESS and client.want_write():
            rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc

    def _try_connect(self, timeout: float) -> None:
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            return
        s = self.settings
        try:
            self.client.connect(
                s.mqtt_host, s.mqtt_port, s.keepalive, clean_start=False, properties=self._connect_properties()
            )
        except OSError as exc:
            self._lost(f"cannot reach the MQTT broker at {s.mqtt_host}:{s.mqtt_port} ({exc})")
            return
        self._socket_open = True

    def _lost(self, reason: str) -> None:
        self._acks.clear()
        self.stats.connected = False
        self.stats.subscribed = False
        log.warning("MQTT %s; next attempt in %.2f s", reason, self._delay)
        self._next_attempt = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.settings.reconnect_max_delay)

    def _on_connect(self, client: mqtt.Client, _userdata, flags, reason: ReasonCode, _properties) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        self.generation += 1
        self._acks.clear()  # ids of the previous connection: the broker sends those messages again
        if self._ever_connected:
            self.stats.reconnects += 1
            if not flags.session_present:
                # The broker kept no session for us (it expired, or a broker crash lost it): what it had queued
                # while we were away is gone, and only publishers that did not get a PUBACK will send it again.
                self.stats.sessions_lost += 1
                log.warning(
                    "MQTT broker had no session %s left: messages queued for it are lost", self.settings.client_id
                )
        self._ever_connected = True
        self.stats.subscribed = False
        self.stats.connected = True
        self._delay = MIN_RECONNECT_DELAY
        log.info(
            "MQTT connected to %s:%d as %s (session %s); subscribing to %s at QoS 1",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.settings.client_id,
            "resumed" if flags.session_present else "new",
            self.settings.subscription,
        )
        # Retained messages are a "last value" cache, not new readings: never replay them on (re)subscribe.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        client.subscribe(self.settings.subscription, options=options)

    def _on_subscribe(self, _client, _userdata, _mid, reasons: list[ReasonCode], _properties) -> None:
        refused = [reason for reason in reasons if reason.is_failure]
        for reason in refused:
            log.error("MQTT broker refused the subscription to %s: %s (not ready)", self.settings.subscription, reason)
        if not refused:  # from here on, what is published reaches the bridge
            log.info("MQTT broker granted the subscription to %s", self.settings.subscription)
        self.stats.subscribed = not refused

    def _on_disconnect(self, _client, _userdata, _flags, reason: ReasonCode, _properties) -> None:
        self._acks.clear()
        self.stats.connected = False
        self.stats.subscribed = False
        if reason.is_failure:
            log.warning("MQTT disconnected: %s", reason)

    def ack(self, mid: int, qos: int, generation: int) -> None:
        """Acknowledge a message on the connection it came from; after a reconnect the broker sends it again.
        QoS 1 acknowledgements are written at the next turn of the loop (`_write_acks`)."""
        if generation == self.generation and self.stats.connected:
            if qos == 1:
                self._acks.append(mid)
            else:
                self.client.ack(mid, qos)

    def _write_acks(self) -> None:
        if self._acks:
            self.client.ack_many(self._acks)
            self._acks = []

    def close(self, timeout: float = 5.0) -> None:
        """Make sure the broker has taken our acknowledgements, then disconnect; the session stays on the broker.

        Closing a socket that still holds unread data (the broker keeps sending up to Receive Maximum) makes the
        kernel send a reset, and the broker may drop the acknowledgements it had not read yet: those messages
        would come again. So first a round trip as a barrier: the broker answers an UNSUBSCRIBE (of a filter we
        never subscribed, so nothing changes) only after it processed every packet sent before it.
        """
        if not self._socket_open:
            return
        self._closing = True
        if self.stats.connected:
            self._write_acks()  # before the barrier, which only covers what was sent before it
            self.client.unsubscribe(f"bridge-barrier/{self.settings.client_id}")
            deadline = time.monotonic() + timeout
            while not self._barrier_passed and time.monotonic() < deadline:
                if self._serve(0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
            if not self._barrier_passed:
                log.warning("MQTT broker did not confirm the last acknowledgements; it may send those messages again")
        self.client.disconnect()
        self._socket_open = False

    def _on_unsubscribe(self, _client, _userdata, _mid, _reasons, _properties) -> None:
        self._barrier_passed = True
