"""Who may do what in the secured mode (SECURITY.md has the threat model). Nothing is allowed that is not here.

- Kafka (SCRAM-SHA-512 over TLS): `broker` (between the node's own listeners) and `admin` (creates topics, users
  and ACLs; the operator's tools) are super users; each service logs in as itself and may do exactly its job
  (KAFKA_ACLS).
- MQTT (a password file, TLS only): one user per car, named by its car id, may publish to its own topic only;
  `bridge` may read every car's topic; `monitor` (the operator's tools) may read them too and round-trip messages
  under HEALTH_TOPIC_PREFIX/ (MOSQUITTO_ACL).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.topics import (
    DLQ_TOPIC,
    ML_READER_GROUP_PREFIX,
    MODEL_DECISIONS_TOPIC,
    MQTT_TOPIC_FILTER,
    MQTT_TOPIC_PREFIX,
    PREDICTIONS_TOPIC,
    PREDICTOR_GROUP,
    READINGS_TOPIC,
    SHADOW_PREDICTIONS_TOPIC,
    STREAMS_APPLICATION_ID,
    TOPIC_PARTITIONS,
)

SCRAM_MECHANISM = "SCRAM-SHA-512"
KAFKA_SUPER_USERS = ("broker", "admin")  # written when the node's storage is formatted; the rest by `admin`
# The topics admin creates at a secured start (nothing else may create any), with their partitions.
SECURED_TOPICS = dict(TOPIC_PARTITIONS)
HEALTH_TOPIC_PREFIX = "healthcheck"


@dataclass(frozen=True)
class Grant:
    """One ACL: `operation` on a topic, a consumer group or a transactional id, by exact name or by prefix."""

    resource: str  # "topic", "group" or "transactional_id"
    name: str
    operation: str  # "read", "write", "describe" or "create"
    prefixed: bool = False


# What each service may do in Kafka, and nothing else (DESCRIBE comes with READ and WRITE). Its keys are the
# services' Kafka users, which `admin` creates.
KAFKA_ACLS: dict[str, list[Grant]] = {
    "bridge": [Grant("topic", READINGS_TOPIC, "write"), Grant("topic", DLQ_TOPIC, "write")],
    # The product, and the registry's challenger's predictions beside it (ml/serving/shadow.py).
    "predictor": [
        Grant("topic", READINGS_TOPIC, "read"),
        Grant("topic", PREDICTIONS_TOPIC, "write"),
        Grant("topic", SHADOW_PREDICTIONS_TOPIC, "write"),
        Grant("topic", DLQ_TOPIC, "write"),
        Grant("group", PREDICTOR_GROUP, "read", prefixed=True),
        Grant("group", ML_READER_GROUP_PREFIX, "read", prefixed=True),
    ],
    "trainer": [Grant("topic", READINGS_TOPIC, "read"), Grant("group", ML_READER_GROUP_PREFIX, "read", prefixed=True)],
    # Continual training and the judge (`python -m ml continual`, `python -m ml judge`), and the operator's
    # `python -m ml registry` with Kafka: the readings and both models' predictions, read in the ml readers'
    # throw-away groups; the decisions written (idempotent: WRITE on a topic is what Kafka asks of it). It writes
    # no product: neither car-sensor nor any predictions.
    "continual": [
        Grant("topic", READINGS_TOPIC, "read"),
        Grant("topic", PREDICTIONS_TOPIC, "read"),
        Grant("topic", SHADOW_PREDICTIONS_TOPIC, "read"),
        Grant("topic", MODEL_DECISIONS_TOPIC, "write"),
        Grant("group", ML_READER_GROUP_PREFIX, "read", prefixed=True),
    ],
    # Reads by assign() and never commits: no group READ. DESCRIBE on the predictors' groups is what fetching
    # their committed offsets (OffsetFetch) needs, for the lag chart; it cannot join or commit in them.
    "dashboard": [
        Grant("topic", READINGS_TOPIC, "read"),
        Grant("topic", PREDICTIONS_TOPIC, "read"),
        Grant("topic", DLQ_TOPIC, "read"),
        Grant("group", PREDICTOR_GROUP, "describe", prefixed=True),
    ],
    # The Java serving program (ml/streams/, Kafka Streams, exactly_once_v2) under its default application id: its
    # group, the changelog topics it creates and restores from (<application id>-<store>-changelog), its producers'
    # transactional ids (<application id>-<process id>-<thread>). It does not serve without any one of these
    # (SECURITY.md says how each is missed).
    "streams-predictor": [
        Grant("topic", READINGS_TOPIC, "read"),
        Grant("topic", PREDICTIONS_TOPIC, "write"),
        Grant("topic", DLQ_TOPIC, "write"),
        Grant("group", STREAMS_APPLICATION_ID, "read"),
        Grant("topic", f"{STREAMS_APPLICATION_ID}-", "create", prefixed=True),
        Grant("topic", f"{STREAMS_APPLICATION_ID}-", "read", prefixed=True),
        Grant("topic", f"{STREAMS_APPLICATION_ID}-", "write", prefixed=True),
        Grant("transactional_id", f"{STREAMS_APPLICATION_ID}-", "write", prefixed=True),
    ],
}
KAFKA_SERVICE_USERS = tuple(KAFKA_ACLS)
KAFKA_IDENTITIES = (*KAFKA_SUPER_USERS, *KAFKA_SERVICE_USERS)

MQTT_SERVICE_IDENTITIES = ("bridge", "monitor")  # every other MQTT user is a car

MOSQUITTO_ACL = f"""\
# Written from admin/policy.py. Nothing is allowed that is not granted here.
user bridge
topic read {MQTT_TOPIC_FILTER}

# The operator's tools: the broker's round-trip check, the demo's count of what the fleet publishes.
user monitor
topic readwrite {HEALTH_TOPIC_PREFIX}/#
topic read {MQTT_TOPIC_FILTER}

# Every other user is a car: it may publish to its own topic only (%u = its user name, its car id).
pattern write {MQTT_TOPIC_PREFIX}/%u
"""
