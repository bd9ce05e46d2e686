"""Model decisions on Kafka: each registry decision (ml/registry.py) also produced to the decisions topic
(common/topics.py's MODEL_DECISIONS_TOPIC unless told), by `python -m ml registry` and by `python -m ml judge`.

The record: key = the decision's version, value = the decision's JSON (`Decision.to_json()`, as in decisions.jsonl)
in UTF-8. The topic is created with ONE partition when missing: one partition keeps the records in the order of the
decisions. The registry's file is the source of truth and is written first: a record Kafka does not confirm is
logged as an error naming the file that holds the decision, and the caller hears False.
"""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from common.errors import KafkaError
from common.kafka import ensure_topics, producer_config
from common.settings import KafkaSecurity
from common.topics import MODEL_DECISIONS_TOPIC, TOPIC_PARTITIONS
from ml.registry import Decision

log = logging.getLogger(__name__)

DECISIONS_PARTITIONS = TOPIC_PARTITIONS[MODEL_DECISIONS_TOPIC]  # 1: the records in the decisions' order


def publish_decision(
    decision: Decision,
    bootstrap_servers: str,
    security: KafkaSecurity,
    topic: str,
    timeout: float,
    history_file: Path,
) -> bool:
    """Produce `decision` (already in `history_file`) to `topic`; True once Kafka confirmed it within about
    `timeout` seconds (a failure is logged)."""
    failures: list[str] = []
    try:
        ensure_topics(bootstrap_servers, security, {topic: DECISIONS_PARTITIONS}, timeout=timeout)
        producer = Producer(producer_config(bootstrap_servers, security, **{"message.timeout.ms": int(timeout * 1000)}))
        producer.produce(
            topic,
            decision.to_json().encode(),
            decision.version.encode(),
            on_delivery=lambda error, _message: failures.append(str(error)) if error else None,
        )
        if producer.flush(timeout + 5):
            failures.append(f"not confirmed within {timeout + 5:.0f} s")
    except (KafkaException, KafkaError, BufferError) as exc:
        failures.append(str(exc))
    if failures:
        log.error(
            "decision %s %s is in %s but not on Kafka topic %s (%s): %s",
            decision.action, decision.version, history_file, topic, bootstrap_servers, "; ".join(failures),
        )  # fmt: skip
        return False
    log.info("decision %s %s produced to %s", decision.action, decision.version, topic)
    return True
