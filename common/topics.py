"""Names of topics and cars: the topic contracts of the README in one place."""

READINGS_TOPIC = "car-sensor"
PREDICTIONS_TOPIC = "car-sensor-predictions"
DLQ_TOPIC = "car-sensor-dlq"

MQTT_TOPIC_PREFIX = "vehicles/sensor/data"
MQTT_TOPIC_FILTER = f"{MQTT_TOPIC_PREFIX}/+"


def car_id(number: int) -> str:
    """The id of car `number` (1-based): car-00001, car-00002, ..."""
    return f"car-{number:05d}"


def mqtt_topic(car: str) -> str:
    return f"{MQTT_TOPIC_PREFIX}/{car}"


def car_from_mqtt_topic(topic: str) -> str | None:
    """The car id in `vehicles/sensor/data/<car_id>`, or None when the topic has another shape."""
    prefix, sep, car = topic.rpartition("/")
    if not sep or prefix != MQTT_TOPIC_PREFIX or not car:
        return None
    return car
