"""make demo: start the infrastructure and send a round trip through it (the services join in later issues)."""

from __future__ import annotations

import argparse
import sys
import uuid

from confluent_kafka import Consumer, Producer

from common.kafka import consumer_config
from common.logs import setup_logging
from scripts import local_runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__)
    parser.add_argument("--cars", type=int, default=25)
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--runtime", choices=["local", "compose"], default="local")
    parser.parse_args(argv)
    setup_logging()
    local_runtime.up()
    kafka, mosquitto = local_runtime.default_nodes()
    topic = f"demo-roundtrip-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(topic, b"hello")
    producer.flush(30)
    consumer = Consumer(consumer_config(kafka.bootstrap_servers, topic))
    consumer.subscribe([topic])
    message = None
    while message is None or message.error():
        message = consumer.poll(1.0)
    consumer.close()
    ok = local_runtime.mqtt_round_trip("127.0.0.1", mosquitto.port)
    print(f"Kafka round trip: {message.value()!r}; MQTT round trip: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
