"""Code shared by every service: schemas, Avro framing, topics, settings, logging, Kafka helpers."""
