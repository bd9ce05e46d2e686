"""MQTT_BROKER picks the local runtime's MQTT broker (scripts/runtime/mqtt_broker.py), read in that one place."""

import pytest

from common.errors import ConfigError
from scripts.runtime.hivemq import HiveMQNode
from scripts.runtime.local import MosquittoNode, default_nodes
from scripts.runtime.mqtt_broker import every_mqtt_node, mqtt_broker_name, mqtt_node


@pytest.mark.parametrize(("value", "node_class"), [(None, MosquittoNode), ("", MosquittoNode), ("hivemq", HiveMQNode)])
def test_mqtt_broker_names_the_node_the_runtime_and_the_tests_start(monkeypatch, tmp_path, value, node_class):
    if value is None:
        monkeypatch.delenv("MQTT_BROKER", raising=False)
    else:
        monkeypatch.setenv("MQTT_BROKER", value)
    monkeypatch.setenv("MQTT_PORT", "18830")
    monkeypatch.delenv("RUNTIME_DIR", raising=False)
    assert type(mqtt_node(tmp_path, 1884)) is node_class
    _kafka, broker = default_nodes(run_dir=tmp_path, secure=False)
    assert type(broker) is node_class and broker.port == 18830 and broker.run_dir == tmp_path


def test_an_unknown_broker_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("MQTT_BROKER", "emqx")
    with pytest.raises(ConfigError, match="mosquitto, hivemq"):
        mqtt_broker_name()


def test_down_finds_every_broker_whatever_mqtt_broker_says(tmp_path):
    assert {type(node) for node in every_mqtt_node(tmp_path, 1883)} == {MosquittoNode, HiveMQNode}
