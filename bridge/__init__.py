"""MQTT → Kafka bridge: `python -m bridge`. See bridge/README.md."""
