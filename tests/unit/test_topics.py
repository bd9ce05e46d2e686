from common.topics import car_from_mqtt_topic, car_id, mqtt_topic


def test_car_ids_are_zero_padded_and_round_trip_through_mqtt_topics():
    assert car_id(1) == "car-00001"
    assert car_id(100_000) == "car-100000"
    assert mqtt_topic("car-00042") == "vehicles/sensor/data/car-00042"
    assert car_from_mqtt_topic(mqtt_topic("car-00042")) == "car-00042"


def test_topics_of_another_shape_name_no_car():
    for topic in ("vehicles/sensor/data", "vehicles/sensor/data/", "other/sensor/data/car-1", "x"):
        assert car_from_mqtt_topic(topic) is None
