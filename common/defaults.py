"""Defaults that more than one part of the stack relies on, each written once: where the servers listen, the ports
the services serve on, where model versions live. The services never import one another, so what two of them (or a
service and the tools in scripts/) must agree on lives here; topic and group names are in common/topics.py.

The compose file, the Kubernetes manifests and the Dockerfile cannot import these: tests/unit/test_compose.py and
test_kubernetes.py check them against these values."""

from __future__ import annotations

LOCALHOST = "127.0.0.1"

# The servers, as the local runtime and the compose stack publish them on the host.
KAFKA_PORT = 9092
MQTT_PORT = 1883
MQTT_TLS_PORT = 8883  # the secured mode's MQTT listener (TLS only)
SCHEMA_REGISTRY_PORT = 8081
KAFKA_BOOTSTRAP_SERVERS = f"{LOCALHOST}:{KAFKA_PORT}"

# What the services serve: the bridge's and the predictor's Prometheus metrics and health, the dashboard's page.
BRIDGE_METRICS_PORT = 9108
PREDICTOR_METRICS_PORT = 9109
DASHBOARD_PORT = 8050

# The simulated fleet's size, and so the cars the secured mode's password file holds at least.
FLEET_CARS = 25

# Where the trainer writes model versions and the predictor and the dashboard read them (relative: the working
# folder; the image sets ML_MODEL_DIR=/models).
MODEL_DIR = "artifacts/models"
