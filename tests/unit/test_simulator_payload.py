"""The JSON payload equals the reading dict, field for field, in schema order."""

import json

from common.schemas import payload_fields
from simulator.failures import MODES, FailureMode, Phase
from simulator.fleet import Fleet, FleetConfig
from simulator.payload import encode_reading, encode_step


def test_encoded_step_parses_to_the_reading_dicts():
    fleet = Fleet(300, seed=5, config=FleetConfig(failure_rate=30.0))
    for _ in range(40):
        step = fleet.step()
        payloads = encode_step(step, fleet.car_ids, 0, fleet.cars)
        readings = list(step.readings(fleet.car_ids))
        for payload, reading in zip(payloads, readings, strict=True):
            decoded = json.loads(payload)
            assert decoded == reading
            assert list(decoded) == payload_fields()
            assert {type(v) for v in decoded.values()} == {type(v) for v in reading.values()}
    assert any(r["failure_occurred"] for r in readings), "labels true and false both covered"


def test_a_reading_names_its_failure_mode_while_failed_and_never_in_a_lead_up():
    fleet = Fleet(300, seed=5, config=FleetConfig(failure_rate=30.0))
    named: set[str] = set()
    for _ in range(60):
        step = fleet.step()
        for reading, mode, phase in zip(step.readings(fleet.car_ids), step.mode, step.phase, strict=True):
            if reading["failure_occurred"]:
                assert reading["failure_mode"] == FailureMode(mode).name.lower()
                named.add(reading["failure_mode"])
            else:
                assert reading["failure_mode"] is None, f"phase {Phase(phase).name} names no failure"
    assert named == {mode.name.lower() for mode in MODES}


def test_slices_and_single_readings():
    fleet = Fleet(10, seed=1)
    step = fleet.step()
    middle = encode_step(step, fleet.car_ids, 3, 6)
    readings = list(step.readings(fleet.car_ids, 3, 6))
    assert [json.loads(p)["car_id"] for p in middle] == ["car-00004", "car-00005", "car-00006"]
    assert [json.loads(encode_reading(r)) for r in readings] == [json.loads(p) for p in middle]
