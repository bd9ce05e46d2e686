"""A QoS 1 MQTT publisher for tests: paho in a background thread, which re-sends what the broker did not
acknowledge (across a broker restart too)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable

import paho.mqtt.client as mqtt

QUEUE_AHEAD = 2_000  # paho's queue costs O(queued) per PUBACK: publish at most this far ahead of the PUBACKs


class Publisher:
    """Publishes (topic, payload) pairs at QoS 1 on 127.0.0.1:`port`, at `rate` messages/s or as fast as the broker
    takes them; starts at once."""

    def __init__(self, port: int, messages: Iterable[tuple[str, bytes]], rate: float | None = None) -> None:
        self.messages = list(messages)
        self.rate = rate
        self.sent = 0
        self.acknowledged = 0  # PUBACKs; publishes made while the broker was away are sent on reconnect
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(200)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_publish(self, *_args: object) -> None:
        self.acknowledged += 1

    def _run(self) -> None:
        started = time.monotonic()
        for topic, payload in self.messages:
            while self.sent - self.acknowledged > QUEUE_AHEAD:
                time.sleep(0.001)
            self.client.publish(topic, payload, qos=1)
            self.sent += 1
            if self.rate:
                ahead = self.sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def wait(self, timeout: float = 120.0) -> None:
        """Until the broker acknowledged every message; then disconnects."""
        self.thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.acknowledged < len(self.messages):
            assert time.monotonic() < deadline, (
                f"the broker acknowledged {self.acknowledged} of {len(self.messages)} publishes in {timeout:.0f} s"
            )
            time.sleep(0.1)
        self.client.disconnect()
        self.client.loop_stop()
