import time
from datetime import UTC, datetime

from common import dlq
from common.health import Health


def test_a_dlq_record_carries_the_contract_headers_and_the_original_bytes():
    value, headers = dlq.record("bridge", "malformed_json", "Expecting value", b"{oops", mqtt_topic=b"vehicles/x")
    parsed = dlq.parse(headers)
    assert value == b"{oops"
    assert parsed[dlq.ERROR] == "malformed_json"
    assert parsed[dlq.ERROR_DETAIL] == "Expecting value"
    assert parsed[dlq.SERVICE] == "bridge"
    assert parsed[dlq.MQTT_TOPIC] == "vehicles/x"
    assert abs(datetime.fromisoformat(parsed[dlq.RECEIVED_AT]).timestamp() - datetime.now(UTC).timestamp()) < 5
    assert dlq.PAYLOAD_TRUNCATED_FROM not in parsed


def test_a_dlq_record_from_kafka_names_its_source_and_keeps_the_head_of_a_huge_value():
    huge = b"x" * (dlq.VALUE_LIMIT + 10)
    value, headers = dlq.record("predictor", "undecodable", "d" * 5000, huge, source=("car-sensor", 3, 1234))
    parsed = dlq.parse(headers)
    assert value == huge[: dlq.VALUE_LIMIT]
    assert parsed[dlq.PAYLOAD_TRUNCATED_FROM] == str(len(huge))
    assert (parsed[dlq.SOURCE_TOPIC], parsed[dlq.SOURCE_PARTITION], parsed[dlq.SOURCE_OFFSET]) == (
        "car-sensor",
        "3",
        "1234",
    )
    assert len(parsed[dlq.ERROR_DETAIL]) == dlq.DETAIL_LIMIT
    assert dlq.record("predictor", "undecodable", "empty", None)[0] == b""


def test_liveness_fails_when_the_loop_stops_beating_and_readiness_is_the_services_check():
    health = Health(stall_after=0.2, readiness=lambda: "not connected")
    assert health.liveness() is None
    time.sleep(0.3)
    assert "has not turned" in health.liveness()
    health.beat()
    assert health.liveness() is None
    assert health.readiness() == "not connected"
