"""Two bridges on one shared group, Mosquitto SIGKILLed and restarted under load: both subscribe again.

Mosquitto 2.0 restores a persistent session after a restart but never its shared subscriptions
(docs/reliability.md), so a bridge that resumed its session (`session_present` true) and trusted it would get
nothing more. The bridge subscribes on every CONNACK, whatever `session_present` says; this proves it end to end:
every reading the broker acknowledged with success after the restart, and every one acknowledged before the crash
window, reaches Kafka, and each bridge carries readings again after the restart.
"""

from __future__ import annotations

import pytest

from simulator.fleet import generate_readings
from tests.integration.test_broker_crash import (
    NO_MATCHING_SUBSCRIBERS,
    WINDOW_S,
    TrackingPublisher,
    crash_and_restart,
    kafka_keys,
    split_by_age,
)

pytestmark = pytest.mark.timeout(150)

SHARED_GROUP = "car-bridge"
RATE = 500  # readings/s, the publisher's pace through the crash


def test_a_shared_group_of_two_bridges_subscribes_again_after_a_broker_restart_and_loses_nothing_acknowledged(
    kafka_bootstrap, mosquitto_node_factory, bridge_factory, bridge_topics
):
    broker = mosquitto_node_factory()
    bridges = [
        bridge_factory(kafka_bootstrap, broker.port, bridge_topics, client_id=name, BRIDGE_SHARED_GROUP=SHARED_GROUP)
        for name in ("bridge-a", "bridge-b")
    ]
    for bridge in bridges:
        bridge.wait_for_metrics(lambda m: m.get("bridge_mqtt_subscribed") == 1.0, "the shared subscription")
    readings = list(generate_readings(10, int(RATE * (WINDOW_S + 12) / 10), seed=13))
    publisher = TrackingPublisher(broker.port)
    publisher.publish_in_background(readings, rate=RATE)
    produced = lambda: sum(b.metric("bridge_produced_total") for b in bridges)  # noqa: E731
    bridges[0].wait_until(lambda: produced() >= RATE * (WINDOW_S + 2), "readings before the crash")
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
    assert len(old) >= RATE and len(after_restart) >= RATE, (len(old), len(after_restart))
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
