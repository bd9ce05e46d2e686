"""The MQTT broker SIGKILLed: which acknowledged readings survive, counted by (car_id, seq) from publisher to Kafka.

The broker is the one MQTT_BROKER names (scripts/runtime/mqtt_broker.py). HiveMQ keeps its queues in its file
persistence and lost no acknowledged message at a SIGKILL in the crash study (docs/reliability.md), so it gets no
window: every reading it acknowledged before the SIGKILL must reach Kafka. Mosquitto's window comes from its config:

Mosquitto keeps its state in memory and writes a snapshot of all of it every `autosave_interval` seconds
(compose/mosquitto/mosquitto.conf); a SIGKILL loses what changed since the last snapshot. The snapshot timer runs
on whole seconds and fires once `autosave_interval` full seconds have passed, so a reading the broker acknowledged
more than `autosave_interval + 1` s before the crash is in a snapshot; one second of slack covers the snapshot's own
duration and scheduling on a loaded machine. These tests derive that window from the config the stack runs and
assert that nothing older than it is lost; what is lost, if anything, is measured and printed
(docs/reliability.md, "MQTT broker crash"; figures from `python -m scripts.studies.broker_crash`).

Every test runs a private broker (mosquitto_node_factory) with the stack's config, `python -m bridge` as its own
process and a paho MQTT 5 publisher that records the time and reason code of every PUBACK.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterable

import paho.mqtt.client as mqtt
import pytest

from common.topics import mqtt_topic
from scripts.runtime.local import ROOT, ServerProcess, port_in_use
from scripts.runtime.mqtt_broker import mqtt_broker_name
from scripts.testkit.kafka import read_until
from scripts.testkit.readings import decoded
from scripts.testkit.services import ChildService
from simulator.fleet import generate_readings

pytestmark = pytest.mark.timeout(120)

CONFIG = (ROOT / "compose" / "mosquitto" / "mosquitto.conf").read_text()
SLACK_S = 1.0
NO_MATCHING_SUBSCRIBERS = 0x10


def config_value(name: str) -> str:
    match = re.search(rf"(?m)^{name}\s+(\S+)", CONFIG)
    assert match, f"mosquitto.conf sets no {name}"
    return match.group(1)


def crash_window_s() -> float:
    """How old an acknowledged reading must be at a SIGKILL to be in a snapshot, from the stack's config."""
    assert config_value("persistence") == "true"
    interval = float(config_value("autosave_interval"))
    on_changes = re.search(r"(?m)^autosave_on_changes\s+true", CONFIG) is not None
    assert interval > 0, "autosave_interval 0 saves only on a clean shutdown: a crash loses everything"
    # On changes, a snapshot follows every loop iteration with `interval` changes: the window is the snapshot itself.
    return SLACK_S + (0.0 if on_changes and interval <= 1 else interval + 1.0)


WINDOW_S = crash_window_s() if mqtt_broker_name() == "mosquitto" else 0.0


class TrackingPublisher:
    """paho, MQTT 5, QoS 1, its network thread reconnecting by itself; paho keeps what was not acknowledged and
    sends it again after a reconnect (as simulator/publisher.py relies on). Records each PUBACK's time and code."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(200)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.keys: dict[int, tuple[str, int]] = {}
        self.acks: list[tuple[int, int, float]] = []  # (mid, reason code, monotonic time)
        self.sent = 0
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread: threading.Thread | None = None

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties) -> None:
        self.acks.append((mid, reason_code.value, time.monotonic()))

    def publish(self, readings: Iterable[dict], rate: float | None = None) -> None:
        started = time.monotonic()
        for n, reading in enumerate(readings, 1):
            info = self.client.publish(mqtt_topic(reading["car_id"]), json.dumps(reading), qos=1)
            self.keys[info.mid] = (reading["car_id"], reading["seq"])  # mids stay unique below 65,535 messages
            self.sent += 1
            if rate and (ahead := n / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)

    def publish_in_background(self, readings: list[dict], rate: float) -> None:
        self.thread = threading.Thread(target=self.publish, args=(readings, rate), daemon=True)
        self.thread.start()

    def wait_acknowledged(self, timeout: float = 60.0) -> None:
        if self.thread:
            self.thread.join(timeout)
        deadline = time.monotonic() + timeout
        while len(self.acks) < self.sent:
            assert time.monotonic() < deadline, f"{self.sent - len(self.acks)} publishes never acknowledged"
            time.sleep(0.05)

    def acknowledged(self) -> dict[tuple[str, int], tuple[int, float]]:
        """(car_id, seq) -> (reason code, PUBACK time)."""
        return {self.keys[mid]: (code, at) for mid, code, at in self.acks}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def crash_and_restart(broker: ServerProcess) -> float:
    """SIGKILL, then start on the same data; returns the monotonic time of the kill."""
    killed_at = time.monotonic()
    assert broker.kill()
    deadline = time.monotonic() + 10
    while port_in_use(broker.port):  # the killed broker's connections close once their peers answer
        assert time.monotonic() < deadline, f"port {broker.port} still taken after the SIGKILL"
        time.sleep(0.01)
    broker.start()
    broker.wait_ready()
    return killed_at


def kafka_keys(kafka: str, topic: str, required: set, timeout: float = 45.0, linger: float = 2.0) -> list[dict]:
    """Records of `topic` until every required (car_id, seq) came (then `linger` s more), or `timeout`."""

    def arrived(messages: list) -> bool:
        return required <= {(r["car_id"], r["seq"]) for r in decoded(messages)}

    return decoded(read_until(kafka, topic, arrived, timeout=timeout, linger=linger))


def split_by_age(acknowledged: dict, killed_at: float) -> tuple[set, set]:
    """Readings acknowledged with success (reason code 0) older than the window at the kill, and the rest of them.

    A PUBACK with 0x10 "no matching subscribers" is left out: Mosquitto 2.0 restores no shared subscription after
    a restart, so what is published before the bridge has subscribed again goes nowhere, and an MQTT 5 publisher is
    told so. (An MQTT 3.1.1 publisher, such as the simulator, gets a plain PUBACK: docs/reliability.md.)"""
    ok = {key: at for key, (code, at) in acknowledged.items() if code == 0}
    old = {key for key, at in ok.items() if killed_at - at >= WINDOW_S}
    return old, set(ok) - old


def report(what: str, acknowledged: dict, old: set, recent: set, arrived: set, killed_at: float) -> None:
    lost = (old | recent) - arrived
    ages = sorted(round(killed_at - acknowledged[k][1], 2) for k in lost)
    codes = sorted({code for code, _at in acknowledged.values()})
    print(
        f"{what}: window {WINDOW_S:.1f} s; acknowledged {len(old)} before it (all must arrive), {len(recent)} "
        f"inside it or after the restart; lost {len(lost)} (ages at the kill, s: {ages[:3]}..{ages[-3:]}); "
        f"PUBACK codes {codes}"
    )


def diagnosis(bridge: ChildService, broker: ServerProcess) -> str:
    """What a loss needs to be told apart (never received, or received and not produced): the bridge's counters,
    its connection log and the broker's log tail."""
    counters = {name: bridge.metric(name) for name in ("bridge_received_total", "bridge_produced_total")}
    connections = [line for line in bridge.log_lines() if "bridge.mqtt" in line]
    broker_log = broker.run_dir / "logs" / "mosquitto.log"
    tail = broker_log.read_text(errors="replace").splitlines()[-40:] if broker_log.exists() else []
    return "\n".join([f"bridge counters: {counters}", "bridge MQTT log:", *connections, "broker log:", *tail])


def test_bridge_away_readings_acknowledged_before_the_window_survive_a_sigkill(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    # The bridge has run before: its persistent session and shared subscription exist; now it is away.
    first = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    first.wait_for_metrics(lambda m: m.get("bridge_mqtt_subscribed") == 1.0, "the subscription")
    first.stop_ok(timeout=60)
    readings = list(generate_readings(10, 200, seed=11))
    publisher = TrackingPublisher(broker.port)
    publisher.publish(readings[:1000])  # queued for the absent bridge
    publisher.wait_acknowledged()
    older_than_window = time.monotonic() + WINDOW_S
    # More while the window passes (these may be lost); with no window, right up to the kill (none may be lost).
    publisher.publish(readings[1000:], rate=1000 / max(WINDOW_S, 1.0))
    publisher.wait_acknowledged()
    time.sleep(max(0.0, older_than_window - time.monotonic()))
    killed_at = crash_and_restart(broker)
    publisher.close()

    acknowledged = publisher.acknowledged()
    assert {code for code, _at in acknowledged.values()} == {0}, "the session's subscription was missing"
    old, recent = split_by_age(acknowledged, killed_at)
    assert len(old) >= 1000
    bridge_factory(kafka_bootstrap, broker.port, bridge_topics)  # the bridge comes back: same client id
    records = kafka_keys(kafka_bootstrap, bridge_topics[0], old)
    arrived = {(r["car_id"], r["seq"]) for r in records}
    report("bridge away", acknowledged, old, recent, arrived, killed_at)
    missing = old - arrived
    assert not missing, f"{len(missing)} readings acknowledged over {WINDOW_S} s before the SIGKILL are lost"
    assert arrived <= {(r["car_id"], r["seq"]) for r in readings}


def test_bridge_running_nothing_acknowledged_before_the_window_is_lost_when_mosquitto_is_killed_mid_stream(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    bridge = bridge_factory(kafka_bootstrap, broker.port, bridge_topics)
    bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_subscribed") == 1.0, "the subscription")
    rate = 500
    readings = list(generate_readings(10, int(rate * (WINDOW_S + 6) / 10), seed=12))
    publisher = TrackingPublisher(broker.port)
    publisher.publish_in_background(readings, rate=rate)
    # Kill once readings older than the window exist, with the stream going on.
    bridge.wait_for_metrics(
        lambda m: m.get("bridge_produced_total", 0) >= rate * (WINDOW_S + 2), "readings before the crash"
    )
    killed_at = crash_and_restart(broker)
    publisher.wait_acknowledged()
    publisher.close()

    acknowledged = publisher.acknowledged()
    old, recent = split_by_age(acknowledged, killed_at)
    no_subscriber = {k for k, (code, _at) in acknowledged.items() if code == NO_MATCHING_SUBSCRIBERS}
    assert len(old) >= rate
    records = kafka_keys(kafka_bootstrap, bridge_topics[0], old | recent)
    arrived = {(r["car_id"], r["seq"]) for r in records}
    report("bridge running", acknowledged, old, recent, arrived, killed_at)
    print(f"PUBACK 'no matching subscribers' (published before the bridge subscribed again): {len(no_subscriber)}")
    missing = old - arrived
    assert not missing, f"{len(missing)} readings acknowledged over {WINDOW_S} s before the SIGKILL are lost"
    # Whatever is lost was acknowledged inside the window before the kill, never after the restart.
    lost_after_restart = {k for k in recent - arrived if acknowledged[k][1] > killed_at}
    assert not lost_after_restart, (
        f"{len(lost_after_restart)} readings acknowledged after the restart are lost\n{diagnosis(bridge, broker)}"
    )
    metrics = bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_subscribed") == 1.0, "the subscription again")
    assert metrics["bridge_mqtt_reconnects_total"] >= 1


SHARED_GROUP = "car-bridge"
RESUBSCRIBE_RATE = 500  # readings/s, the publisher's pace through the crash


@pytest.mark.timeout(150)
def test_a_shared_group_of_two_bridges_subscribes_again_after_a_broker_restart_and_loses_nothing_acknowledged(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    """Two bridges on one shared group, the broker SIGKILLed and restarted under load: both subscribe again.

    Mosquitto 2.0 restores a persistent session after a restart but never its shared subscriptions
    (docs/reliability.md), so a bridge that resumed its session (`session_present` true) and trusted it would get
    nothing more. The bridge subscribes on every CONNACK, whatever `session_present` says: every reading acknowledged
    before the crash window and every one acknowledged after the restart reaches Kafka, and each bridge carries
    readings again."""
    broker = mosquitto_node_factory()
    bridges = [
        bridge_factory(kafka_bootstrap, broker.port, bridge_topics, client_id=name, BRIDGE_SHARED_GROUP=SHARED_GROUP)
        for name in ("bridge-a", "bridge-b")
    ]
    for bridge in bridges:
        bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_subscribed") == 1.0, "the shared subscription")
    readings = list(generate_readings(10, int(RESUBSCRIBE_RATE * (WINDOW_S + 12) / 10), seed=13))
    publisher = TrackingPublisher(broker.port)
    publisher.publish_in_background(readings, rate=RESUBSCRIBE_RATE)
    produced = lambda: sum(b.metric("bridge_produced_total") for b in bridges)  # noqa: E731
    bridges[0].wait_until(lambda: produced() >= RESUBSCRIBE_RATE * (WINDOW_S + 2), "readings before the crash")
    killed_at = crash_and_restart(broker)
    before = [b.metric("bridge_produced_total") for b in bridges]
    for bridge in bridges:
        # The session came back (Mosquitto restored it from its snapshot): the case where trusting
        # session_present would leave the bridge without its subscription.
        bridge.wait_for_log("(session resumed)")
        bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_subscribed") == 1.0, "the shared subscription again")
    publisher.wait_acknowledged()
    publisher.close()

    acknowledged = publisher.acknowledged()
    old, recent = split_by_age(acknowledged, killed_at)
    after_restart = {key for key in recent if acknowledged[key][1] > killed_at}
    no_subscriber = sum(code == NO_MATCHING_SUBSCRIBERS for code, _at in acknowledged.values())
    assert len(old) >= RESUBSCRIBE_RATE and len(after_restart) >= RESUBSCRIBE_RATE, (len(old), len(after_restart))
    arrived = {(r["car_id"], r["seq"]) for r in kafka_keys(kafka_bootstrap, bridge_topics[0], old | after_restart)}
    print(
        f"acknowledged: {len(old)} before the window, {len(after_restart)} after the restart; "
        f"{no_subscriber} answered 'no matching subscribers' before a bridge subscribed again"
    )
    assert not old - arrived, f"{len(old - arrived)} readings acknowledged before the crash window are lost"
    assert not after_restart - arrived, f"{len(after_restart - arrived)} acknowledged after the restart are lost"
    # Both bridges share the load again: each produced readings after the restart.
    after = [b.metric("bridge_produced_total") for b in bridges]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
