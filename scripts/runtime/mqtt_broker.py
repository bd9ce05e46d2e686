"""Which MQTT broker the local runtime, the tests and the studies start: MQTT_BROKER, read here and nowhere else.

    MQTT_BROKER=mosquitto   Mosquitto from the OS packages (the default; compose/mosquitto/mosquitto.conf)
    MQTT_BROKER=hivemq      HiveMQ CE embedded, built by `make setup` (scripts/runtime/hivemq.py)

`make up|demo|test MQTT_BROKER=hivemq` pass it on as an environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import ConfigError
from scripts.runtime.hivemq import HiveMQNode
from scripts.runtime.local import MosquittoNode, ServerProcess
from scripts.runtime.secured import SecureMaterial

MQTT_BROKERS: dict[str, type[ServerProcess]] = {"mosquitto": MosquittoNode, "hivemq": HiveMQNode}
DEFAULT_MQTT_BROKER = "mosquitto"


def mqtt_broker_name() -> str:
    """MQTT_BROKER, checked; the default when unset or empty."""
    name = os.environ.get("MQTT_BROKER") or DEFAULT_MQTT_BROKER
    if name not in MQTT_BROKERS:
        raise ConfigError(f"MQTT_BROKER={name!r}: choose one of {', '.join(MQTT_BROKERS)}")
    return name


def mqtt_node(run_dir: Path, port: int, secure: SecureMaterial | None = None, name: str | None = None) -> ServerProcess:
    """The broker MQTT_BROKER names (or `name`), with its data and logs under `run_dir`."""
    return MQTT_BROKERS[name or mqtt_broker_name()](run_dir, port=port, secure=secure)


def every_mqtt_node(run_dir: Path, port: int, secure: SecureMaterial | None = None) -> list[ServerProcess]:
    """One node of each broker: `make down` stops whichever runs, whatever MQTT_BROKER says now."""
    return [mqtt_node(run_dir, port, secure, name) for name in MQTT_BROKERS]
