import json

import pytest

from bridge.validation import ERROR_CODES, RangePolicy, Rejected, TopicRule, content_seq, parse_reading
from common import schemas
from common.topics import MQTT_TOPIC_FILTER
from simulator.fleet import generate_readings

LIMIT = 4096


@pytest.fixture(scope="module")
def reading() -> dict:
    return next(iter(generate_readings(1, 1)))


def payload(record: dict) -> bytes:
    return json.dumps(record).encode()


def rejection(record_or_bytes, car: str = "car-00001", policy: RangePolicy = RangePolicy.FLAG) -> Rejected:
    data = record_or_bytes if isinstance(record_or_bytes, bytes) else payload(record_or_bytes)
    with pytest.raises(Rejected) as caught:
        parse_reading(car, data, LIMIT, policy)
    assert caught.value.code in ERROR_CODES
    return caught.value


def test_a_full_reading_comes_back_as_sent(reading):
    parsed = parse_reading(reading["car_id"], payload(reading), LIMIT)
    assert parsed == {**reading, "out_of_range": [], "seq_origin": "SENDER"}


def test_integral_floats_become_ints_and_ints_become_floats(reading):
    record = parse_reading(reading["car_id"], payload({**reading, "tire_pressure_1_1": 33.0, "speed": 80}), LIMIT)
    assert record["tire_pressure_1_1"] == 33 and type(record["tire_pressure_1_1"]) is int
    assert record["speed"] == 80.0 and type(record["speed"]) is float


def test_the_seed_simulators_shape_takes_the_car_from_the_topic_and_its_seq_from_the_content(reading):
    seed = {name: reading[name] for name in schemas.SENSOR_FIELDS} | {"timestamp": "2019-10-01", "vin": "WVW"}
    record = parse_reading("car-00042", payload(seed), LIMIT)
    assert record["car_id"] == "car-00042"
    assert record["seq"] == content_seq("car-00042", payload(seed)) and record["seq_origin"] == "CONTENT_HASH"
    assert record["event_time"] is None  # the bridge's receive time
    assert record["failure_occurred"] is None
    assert {k: record[k] for k in schemas.SENSOR_FIELDS} == {k: reading[k] for k in schemas.SENSOR_FIELDS}


def test_content_seq_is_the_same_for_the_same_bytes_and_differs_for_other_bytes_or_cars(reading):
    data = payload({name: reading[name] for name in schemas.SENSOR_FIELDS})
    seq = content_seq("car-00001", data)
    assert seq == content_seq("car-00001", data)  # a redelivery, another bridge, after a restart
    assert 0 <= seq < 2**63  # fits Avro's signed long
    assert seq != content_seq("car-00002", data)
    assert seq != content_seq("car-00001", data.replace(b"}", b', "x": 1}'))
    seqs = {content_seq("car-00001", b'{"n": %d}' % n) for n in range(10_000)}
    assert len(seqs) == 10_000  # no collision among distinct payloads


def test_the_seed_shape_with_camel_case_duplicates_and_foreign_units_is_forwarded_and_flagged(reading):
    seed = {name: reading[name] for name in schemas.SENSOR_FIELDS}
    seed.update(battery_voltage=2989.37, coolant_temp=262.27, current_draw=2730.0)
    seed |= {"batteryVoltage": 2989.37, "coolantTemp": 262.27, "currentDraw": 2730.0, "tirePressure11": 33}
    record = parse_reading("car7", payload(seed), LIMIT)
    assert record["out_of_range"] == ["coolant_temp", "battery_voltage", "current_draw"]  # schema order
    assert record["battery_voltage"] == 2989.37


def test_the_seed_shape_ignores_a_failure_label_it_cannot_trust(reading):
    seed = {name: reading[name] for name in schemas.SENSOR_FIELDS} | {"failure_occurred": "yes"}
    assert parse_reading("car-00042", payload(seed), LIMIT)["failure_occurred"] is None


def test_an_optional_sensor_absent_or_null_is_written_as_null_and_a_present_one_must_be_a_number(reading):
    optional = sorted(schemas.OPTIONAL_SENSOR_FIELDS)
    assert optional == [f"accelerometer_{c}_peak" for c in ("1_1", "1_2", "2_1", "2_2")]
    for sent in (_without(reading, *optional), {**reading, **dict.fromkeys(optional)}):
        parsed = parse_reading(reading["car_id"], payload(sent), LIMIT)
        assert all(parsed[name] is None for name in optional)
        assert parsed["out_of_range"] == []
    seed = {name: reading[name] for name in schemas.SENSOR_FIELDS if name not in optional}  # the 2019 shape
    assert all(parse_reading("car7", payload(seed), LIMIT)[name] is None for name in optional)
    error = rejection({**reading, optional[0]: "high"}, reading["car_id"])
    assert (error.code, optional[0] in error.detail) == ("wrong_type", True)
    required = rejection({**reading, "speed": None}, reading["car_id"])
    assert (required.code, "speed" in required.detail) == ("wrong_type", True)


@pytest.mark.parametrize("name", schemas.SENSOR_FIELDS)
def test_range_bounds_are_inclusive_and_one_step_outside_is_flagged_or_rejected_by_policy(reading, name):
    low, high = schemas.SENSOR_RANGES[name]
    car = reading["car_id"]
    for edge in (low, high):
        for policy in RangePolicy:
            parsed = parse_reading(car, payload({**reading, name: edge}), LIMIT, policy)
            assert (parsed[name], parsed["out_of_range"]) == (edge, [])
    step = 1 if name in schemas.INT_SENSOR_FIELDS else 0.001
    for outside in (low - step, high + step):
        flagged = parse_reading(car, payload({**reading, name: outside}), LIMIT, RangePolicy.FLAG)
        assert (flagged[name], flagged["out_of_range"]) == (outside, [name])
        unchecked = parse_reading(car, payload({**reading, name: outside}), LIMIT, RangePolicy.OFF)
        assert (unchecked[name], unchecked["out_of_range"]) == (outside, [])
        error = rejection({**reading, name: outside}, car, RangePolicy.REJECT)
        assert (error.code, name in error.detail) == ("out_of_range", True)


def _without(record: dict, *names: str) -> dict:
    return {k: v for k, v in record.items() if k not in names}


@pytest.mark.parametrize(
    ("change", "code", "detail"),
    [
        (lambda r: b'{"speed": 1', "malformed_json", "Expecting"),
        (lambda r: payload(r).replace(b'"speed": ', b'"speed": NaN, "x": '), "malformed_json", "NaN"),
        (lambda r: payload({**r, "speed": 12345.5}).replace(b"12345.5", b"1e400"), "not_finite", "speed=inf"),
        (lambda r: payload({**r, "speed": 10**400}), "not_finite", "speed=inf"),
        (lambda r: payload({**r, "tire_pressure_1_1": 2**31}), "wrong_type", "does not fit a 32-bit integer"),
        (lambda r: b"[" * 2000 + b"]" * 2000, "malformed_json", "nested too deeply"),
        (lambda r: b"[1, 2]", "wrong_type", "JSON object, got array"),
        (lambda r: b'"text"', "wrong_type", "got string"),
        (lambda r: payload({**r, "speed": "fast"}), "wrong_type", "speed must be a number, got string"),
        (lambda r: payload({**r, "speed": True}), "wrong_type", "got boolean"),
        (lambda r: payload({**r, "tire_pressure_2_2": 31.5}), "wrong_type", "tire_pressure_2_2 must be an integer"),
        (lambda r: payload({**r, "seq": "7"}), "wrong_type", "seq must be an integer"),
        (lambda r: payload({**r, "car_id": 12}), "wrong_type", "car_id must be a string"),
        (lambda r: payload({**r, "failure_occurred": 1}), "wrong_type", "failure_occurred"),
        (lambda r: payload({**r, "failure_mode": 3}), "wrong_type", "failure_mode must be a string"),
        (lambda r: payload({**r, "failure_mode": ""}), "wrong_type", "failure_mode must be a string of 1 to 64"),
        (lambda r: payload({**r, "failure_mode": "x" * 65}), "wrong_type", "failure_mode"),
        (lambda r: payload(_without(r, "coolant_temp")), "missing_field", "coolant_temp is missing"),
        (lambda r: payload(_without(r, "seq")), "missing_field", "seq"),
        (lambda r: payload(_without(r, "car_id", "seq")), "missing_field", "car_id, seq"),
        (lambda r: payload({**r, "seq": -1}), "out_of_range", "seq=-1"),
        (lambda r: payload({**r, "event_time": 10**17}), "out_of_range", "event_time"),
        (lambda r: payload({**r, "car_id": "car-00002"}), "car_id_mismatch", "car-00002"),
        (lambda r: payload({**r, "pad": "x" * LIMIT}), "payload_too_large", f"the limit is {LIMIT}"),
        (lambda r: b'{"speed": "\xff"}', "not_utf8", "invalid UTF-8 at byte 11"),
    ],
)
def test_each_kind_of_bad_payload_is_rejected_with_its_code_and_a_detail(reading, change, code, detail):
    error = rejection(change(reading), car=reading["car_id"])
    assert error.code == code
    assert detail in error.detail


def test_topic_rule_takes_the_car_from_the_last_level_of_a_matching_topic():
    rule = TopicRule(MQTT_TOPIC_FILTER)
    assert rule.car_id("vehicles/sensor/data/car-00007") == "car-00007"
    assert rule.car_id("vehicles/sensor/data/car-00007") == "car-00007"  # second time from the cache
    for topic in (
        "vehicles/sensor/data/",
        "vehicles/sensor/data/bad car!",
        "vehicles/sensor/data/car-1/extra",
        "other/sensor/data/car-1",
        "vehicles/sensor/data/" + "x" * 65,
    ):
        with pytest.raises(Rejected, match="bad_topic"):
            rule.car_id(topic)


def test_topic_rule_follows_a_configured_filter():
    rule = TopicRule("fleet/+/telemetry/+")
    assert rule.car_id("fleet/eu/telemetry/truck-9") == "truck-9"
    with pytest.raises(Rejected):
        rule.car_id("vehicles/sensor/data/car-00001")


def test_topic_rule_caches_valid_topics_within_its_byte_bound_and_never_bad_ones():
    rule = TopicRule(MQTT_TOPIC_FILTER, cache_bytes=10 * 250)
    for i in range(100):
        with pytest.raises(Rejected):
            rule.car_id(f"vehicles/sensor/data/bad car {i}" + "x" * 60_000)
    assert rule.cached_bytes == 0
    for i in range(100):
        assert rule.car_id(f"vehicles/sensor/data/car-{i:05d}") == f"car-{i:05d}"
    assert 0 < rule.cached_bytes <= 10 * 250
    assert rule.car_id("vehicles/sensor/data/car-00099") == "car-00099"  # beyond the bound: checked each time


def test_failure_mode_is_forwarded_as_sent_and_null_when_left_out(reading):
    car = reading["car_id"]
    named = parse_reading(car, payload({**reading, "failure_occurred": True, "failure_mode": "P0217"}), LIMIT)
    assert (named["failure_occurred"], named["failure_mode"]) == (True, "P0217")
    assert parse_reading(car, payload(_without(reading, "failure_mode")), LIMIT)["failure_mode"] is None
