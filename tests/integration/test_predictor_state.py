"""The predictor's per-car state is bounded (ML_MAX_STATE_BYTES, ML_CAR_IDLE_SECONDS), against the real Kafka.

- A car that goes idle (event time) or is pushed out by the byte bound is evicted; when it returns, its history is
  re-read from Kafka and its predictions equal those of a reference predictor that never evicted anything.
- A flood of 200,000 distinct cars stays within the bound: the predictor's peak RSS (VmHWM in /proc) grows by at
  most the bound and an allowance, and stays under the Kubernetes memory limit; every reading is predicted.

Every claim is counted by (car_id, seq), as in test_ml_predict.py (scripts/testkit/predictor.py).
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from common.schemas import SENSOR_FIELDS
from ml.serving.ring_buffer import CarWindows
from ml.serving.settings import PredictorSettings
from ml.training.untrained_model import save_untrained_model
from scripts.testkit.predictor import TOLERANCE, Stream, assert_same_as_reference, covered, probabilities
from simulator.fleet import generate_readings

K8S_MEMORY_LIMIT = 3 * 2**30  # compose/kubernetes/predictor.yaml: resources.limits.memory 3Gi
FLOOD_ALLOWANCE = 512 * 2**20  # beside the state: batches in flight, Kafka clients' buffers (measured 245-325 MiB)


def a_car_goes_away_and_returns(burst: int = 0) -> tuple[list[dict], str, int]:
    """Five cars, 60 readings each, 10 s apart; car-00003 sends nothing between its seq 10 and 40 (300 s of event
    time), then returns. `burst` one-reading cars arrive while it is away. Returns (readings in write order, the
    car, the seq it returns with)."""
    readings = list(generate_readings(cars=5, readings_per_car=60, seed=23))
    away, back = "car-00003", 40
    stream = [r for r in readings if not (r["car_id"] == away and 10 <= r["seq"] < back)]
    if burst:
        template = [r for r in readings if r["seq"] == 20]
        at = next(i for i, r in enumerate(stream) if r["seq"] == 20)
        flood = [
            {**template[i % len(template)], "car_id": f"burst-{i:05d}", "seq": 0} for i in range(burst)
        ]  # fmt: skip
        stream = stream[:at] + flood + stream[at:]
    return stream, away, back


@pytest.mark.parametrize("reason", ["idle", "bytes"])
def test_an_evicted_car_returns_with_its_history_rebuilt_from_kafka(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, model_dir, predictors, reason
):
    if reason == "idle":  # 300 s away, evicted after 120 s of its partition's event time
        readings, away, back = a_car_goes_away_and_returns()
        env = {"ML_CAR_IDLE_SECONDS": "120", "ML_MAX_BATCH": "20"}
    else:  # 1,500 one-reading cars while it is away; 1 MiB holds 1,110 cars of the model's 6 readings
        readings, away, back = a_car_goes_away_and_returns(burst=1500)
        env = {"ML_MAX_STATE_BYTES": str(2**20), "ML_CAR_IDLE_SECONDS": "0", "ML_MAX_BATCH": "200"}
        assert 2**20 // CarWindows.bytes_for(6, len(SENSOR_FIELDS), 1) == 1110
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=1)
    reference = Stream(kafka_bootstrap, topic_factory, consumer_factory, f"{group_id}-ref", input_topic=stream.input)
    stream.write(readings)
    predictor = predictors(stream, model_dir, **env)
    predictors(reference, model_dir)  # the defaults: nothing is evicted from 600 s and 1,505 cars

    predictions = stream.collect(covered(readings))
    counts = collections.Counter((p["car_id"], p["seq"]) for p in predictions)
    assert set(counts) == {(r["car_id"], r["seq"]) for r in readings}, "a reading lost its prediction"
    assert max(counts.values()) == 1
    ref = reference.collect(covered(readings))
    first_back = probabilities(predictions)[(away, back)][0]
    assert abs(first_back - probabilities(ref)[(away, back)][0]) <= TOLERANCE, "its window was not rebuilt in full"
    assert_same_as_reference(predictions, ref)

    assert predictor.metric("predictor_car_evictions_total", reason=reason) >= 1
    assert predictor.metric("predictor_cars_returned_total") >= 1
    assert "evicted car(s) back; history re-read from" in predictor.log()
    if reason == "bytes":
        assert predictor.metric("predictor_cars_held") <= 1248
        assert predictor.metric("predictor_state_bytes") <= 2**20
    predictor.stop_ok()


def vm_kib(pid: int, field: str) -> int:
    """A VmHWM / VmRSS line of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


FLOOD_CARS = 200_000


@pytest.mark.parametrize("bound", [PredictorSettings.model_fields["max_state_bytes"].default, 64 * 2**20])
def test_a_flood_of_200000_cars_stays_within_the_state_bound(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, tmp_path, predictors, bound
):
    """200,000 distinct car ids, one reading each, through a predictor with the training default window (36
    readings: 3.3 KB a car, 640 MB for all of them unbounded), under the default bound (512 MiB: what Kubernetes
    runs) and under 64 MiB (where holding every car would overshoot the allowance by far)."""
    models = tmp_path / "models36"
    save_untrained_model(models, window=36, threshold=0.99)
    held = bound // CarWindows.bytes_for(36, len(SENSOR_FIELDS), 1)
    assert held < FLOOD_CARS, "the flood must be larger than the bound"
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    template = list(generate_readings(cars=1000, readings_per_car=1, seed=41))
    warm = list(generate_readings(cars=20, readings_per_car=10, seed=43))
    predictor = predictors(stream, models, ML_MAX_BATCH="5000", ML_MAX_STATE_BYTES=str(bound))
    stream.write(warm)
    stream.collect(covered(warm))  # the model has run: TensorFlow's own memory is in the baseline
    baseline = vm_kib(predictor.pid, "VmHWM") * 1024

    flood = [{**template[i % 1000], "car_id": f"flood-{i:06d}", "seq": 0} for i in range(FLOOD_CARS)]
    started = time.monotonic()
    for i in range(0, FLOOD_CARS, 20_000):
        stream.write(flood[i : i + 20_000])
    written = time.monotonic() - started
    predictions = stream.collect(covered(flood), timeout=150)
    seconds = time.monotonic() - started
    peak = vm_kib(predictor.pid, "VmHWM") * 1024
    missing = {(r["car_id"], r["seq"]) for r in flood} - {(p["car_id"], p["seq"]) for p in predictions}
    print(
        f"flood: {FLOOD_CARS} cars written in {written:.1f} s, all predicted after {seconds:.1f} s "
        f"({FLOOD_CARS / seconds:.0f}/s); peak RSS {peak / 2**20:.0f} MiB, {baseline / 2**20:.0f} MiB before, "
        f"state bound {bound / 2**20:.0f} MiB ({held} cars); held {predictor.metric('predictor_cars_held'):.0f}, "
        f"{predictor.metric('predictor_state_bytes') / 2**20:.0f} MiB"
    )
    assert not missing, f"{len(missing)} readings without a prediction"
    assert peak < K8S_MEMORY_LIMIT
    assert peak - baseline <= bound + FLOOD_ALLOWANCE, f"grew {(peak - baseline) / 2**20:.0f} MiB"
    assert predictor.metric("predictor_cars_held") <= held
    assert predictor.metric("predictor_state_bytes") <= bound
    assert predictor.metric("predictor_car_evictions_total", reason="bytes") >= FLOOD_CARS + 20 - held
    predictor.stop_ok()
