"""Names of topics, consumer groups and cars: the topic contracts of the README in one place."""

READINGS_TOPIC = "car-sensor"
PREDICTIONS_TOPIC = "car-sensor-predictions"
# The challenger's predictions, scored by the predictor beside the champion's on the same readings (the same schema,
# its own model_version): never the product, what `python -m ml judge` compares with the champion's
# (ml/serving/shadow.py writes it, ml/continual/ reads it).
SHADOW_PREDICTIONS_TOPIC = "car-sensor-predictions-shadow"
DLQ_TOPIC = "car-sensor-dlq"
# `python -m ml registry` (when Kafka is given) and `python -m ml judge` produce each model decision (register,
# promote, reject, rollback) here (ml/decisions_topic.py); the registry's files stay the source of truth.
MODEL_DECISIONS_TOPIC = "car-sensor-model-decisions"
# The stack's topics and their partitions, as the demo and the secured mode's set-up create them (the compose
# stack's `topics` has the same defaults, Strimzi's KafkaTopics the same numbers). The shadow as the product;
# decisions on one partition: a low-rate history read in the order the decisions were made.
TOPIC_PARTITIONS = {
    READINGS_TOPIC: 4,
    PREDICTIONS_TOPIC: 4,
    SHADOW_PREDICTIONS_TOPIC: 4,
    DLQ_TOPIC: 1,
    MODEL_DECISIONS_TOPIC: 1,
}

PREDICTOR_GROUP = "car-stream-predictor"  # predictors' consumer groups start with it (secured mode's ACLs too)
# The ml readers' throw-away groups (metadata and assigned reads, never committed) start with it: ml-range-*,
# ml-reader-*, the judge's ml-judge-* (the secured mode's ACLs name the prefix).
ML_READER_GROUP_PREFIX = "ml-"
# The Java serving program's (ml/streams/) default application id: its consumer group, the prefix of its changelog
# topics and of its transactional ids (the secured mode's ACLs name it; Settings.java has the same default).
STREAMS_APPLICATION_ID = "car-failure-streams"

MQTT_TOPIC_PREFIX = "vehicles/sensor/data"
MQTT_TOPIC_FILTER = f"{MQTT_TOPIC_PREFIX}/+"


def car_id(number: int) -> str:
    """The id of car `number` (1-based): car-00001, car-00002, ..."""
    return f"car-{number:05d}"


def mqtt_topic(car: str) -> str:
    return f"{MQTT_TOPIC_PREFIX}/{car}"


# A car id is one MQTT topic level: "/" would publish outside the bridge's subscription (vehicles/sensor/data/+),
# "+" and "#" are wildcards no publisher may use, NUL is not allowed in a topic at all.
NOT_IN_A_TOPIC_LEVEL = ("/", "+", "#", "\0")


def car_id_problem(car: str) -> str | None:
    """Why `car` cannot be a car id in an MQTT topic, or None when it can."""
    if not car:
        return "an empty car id"
    found = [repr(character) for character in NOT_IN_A_TOPIC_LEVEL if character in car]
    return f"car id {car!r} holds {', '.join(found)}, which an MQTT topic level cannot" if found else None


def car_from_mqtt_topic(topic: str) -> str | None:
    """The car id in `vehicles/sensor/data/<car_id>`, or None when the topic has another shape."""
    prefix, sep, car = topic.rpartition("/")
    if not sep or prefix != MQTT_TOPIC_PREFIX or not car:
        return None
    return car
