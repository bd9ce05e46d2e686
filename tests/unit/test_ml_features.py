"""Per-car windows and labels: a window never spans two cars or a gap; the label is an onset within the next
`horizon` readings, and windows that end in failure are left out."""

import numpy as np
import pytest

from common.schemas import SENSOR_FIELDS
from ml.episodes import onset_labels, onsets
from ml.features import (
    complete_features,
    feature_matrix,
    fill_missing,
    gather_windows,
    missing_values,
    series_from_records,
    window_ends,
)
from ml.training.dataset import TrainingDataError, require_labels, split_cars, window_set


def reading(car: str, seq: int, failure: bool = False) -> dict:
    # Every sensor carries a value that encodes (car, seq), so a window's rows can be traced back.
    code = int(car[-1]) * 1000 + seq
    return {"car_id": car, "seq": seq, "event_time": 1_000 * seq, "failure_occurred": failure} | dict.fromkeys(
        SENSOR_FIELDS, float(code)
    )


def test_windows_hold_consecutive_readings_of_one_car():
    records = [reading(car, seq) for seq in range(10) for car in ("car-1", "car-2", "car-3")]
    records = [records[i] for i in np.random.default_rng(0).permutation(len(records))]  # any arrival order
    records.append(reading("car-2", 4))  # a duplicate (at-least-once delivery)
    records = [r for r in records if not (r["car_id"] == "car-3" and r["seq"] == 5)]  # a gap
    series = series_from_records(records)
    ends = window_ends(series, 4)
    windows = gather_windows(series.features, ends, 4)[:, :, 0]
    assert len(windows) == 7 + 7 + (2 + 1)  # car-3: runs 0..4 and 6..9
    for rows in windows:
        cars, seqs = rows // 1000, rows % 1000
        assert (cars == cars[0]).all()
        assert (np.diff(seqs) == 1).all()


def test_labels_mark_onsets_within_the_horizon_of_the_car_only():
    records = [reading("car-1", s, failure=s in (6, 7)) for s in range(10)] + [reading("car-2", s) for s in range(10)]
    series = series_from_records(records)
    label, eligible = onset_labels(series, 2)
    assert label[:10].tolist() == [False] * 4 + [True, True] + [False] * 4  # the onset at 6 is 1-2 readings ahead
    assert eligible[:10].tolist() == [True] * 6 + [False] * 4  # 6, 7 in failure; 8, 9 with an unknown future
    assert not label[10:].any()  # car-1's failure never leaks into car-2
    assert np.flatnonzero(onsets(series)).tolist() == [6]


def test_window_set_leaves_out_windows_that_end_in_failure():
    records = [reading("car-1", s, failure=s in (7, 8)) for s in range(14)]
    windows = window_set(series_from_records(records), window=3, horizon=2)
    # ends 2..11 have a known future; 7 and 8 are in failure; 5 and 6 see the onset at 7 coming
    assert windows.ends.tolist() == [2, 3, 4, 5, 6, 9, 10, 11]
    assert windows.labels.tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert windows.windows().shape == (8, 3, len(SENSOR_FIELDS))


def test_cars_are_split_apart_with_failing_cars_everywhere():
    records = [reading(f"car-{c}", s, failure=(c < 5 and s == 3)) for c in range(10) for s in range(5)]
    series = series_from_records(records)
    split = split_cars(series, 0.2, 0.2, seed=1)
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert set().union(*parts) == set(series.cars)
    assert sum(map(len, parts)) == 10
    failing = {f"car-{c}" for c in range(5)}
    assert all(part & failing for part in parts)
    with pytest.raises(TrainingDataError):
        split_cars(series.select_cars(["car-1", "car-2"]), 0.2, 0.2, seed=1)


def hashed_reading(car: str, content_hash: int, value: float) -> dict:
    """A reading of a device that sends no seq: the bridge made seq a hash of the payload (seq_origin
    CONTENT_HASH). Every sensor carries `value`, so a window's rows can be traced back."""
    record = reading(car, 0) | dict.fromkeys(SENSOR_FIELDS, float(value))
    return record | {"seq": content_hash, "seq_origin": "CONTENT_HASH"}


def test_content_hash_readings_keep_arrival_order_and_drop_redeliveries():
    hashes = [int(h) for h in np.random.default_rng(3).integers(0, 2**63 - 1, size=10)]  # random: no order
    records = [hashed_reading("car-1", h, value=i) for i, h in enumerate(hashes)]
    records.insert(6, hashed_reading("car-1", hashes[2], value=99))  # the third payload delivered again
    records.insert(9, hashed_reading("car-1", hashes[0], value=98))
    series = series_from_records(records)
    assert series.features[:, 0].tolist() == list(range(10)), "arrival order, the first delivery kept"
    assert series.hashed.all() and (series.run_start == 0).all(), "one run: a hash has no gap to cut at"
    windows = gather_windows(series.features, window_ends(series, 4), 4)[:, :, 0]
    assert windows.tolist() == [[i, i + 1, i + 2, i + 3] for i in range(7)]


def test_sender_and_content_hash_readings_of_one_car_never_share_a_window():
    records = [reading("car-1", s) for s in (0, 1, 2, 4, 5)]  # sender seq: sorted, cut at the gap
    records += [hashed_reading("car-1", h, value=500 + i) for i, h in enumerate((9, 3, 7))]
    records += [hashed_reading("car-2", 5, value=600)]
    series = series_from_records([records[i] for i in (5, 0, 6, 4, 1, 7, 3, 2, 8)])
    ends = window_ends(series, 3)
    windows = gather_windows(series.features, ends, 3)[:, :, 0]
    assert windows.tolist() == [[1000, 1001, 1002], [500, 501, 502]]  # hashed car-1 in arrival order 9, 3, 7
    assert series.hashed[ends].tolist() == [False, True]


def test_unlabelled_readings_stop_training_with_one_clear_line():
    records = [reading(f"car-{c}", s) | {"failure_occurred": None} for c in range(5) for s in range(30)]
    with pytest.raises(TrainingDataError, match="failure_occurred column") as caught:
        require_labels(series_from_records(records))
    assert "\n" not in str(caught.value) and "simulator labels" in str(caught.value)


def test_training_keeps_the_features_every_reading_reports_and_the_predictor_fills_the_others():
    records = [reading("car-1", seq) for seq in range(4)]
    records[2] = records[2] | {"accelerometer_1_1_peak": None}  # a v2 record, or a sender without peaks
    series = series_from_records(records)
    assert np.isnan(series.features[2, SENSOR_FIELDS.index("accelerometer_1_1_peak")])
    names, kept = complete_features(series)
    assert names == tuple(name for name in SENSOR_FIELDS if name != "accelerometer_1_1_peak")
    assert kept.features.shape == (4, len(SENSOR_FIELDS) - 1) and not np.isnan(kept.features).any()
    assert complete_features(kept, names)[0] == names  # nothing more to leave out
    # A NaN a sender wrote is a value (far out of distribution), not a missing one; null is missing.
    rows = feature_matrix([records[2], records[1] | {"speed": float("nan")}])
    missing = missing_values([records[2], records[1] | {"speed": float("nan")}], SENSOR_FIELDS, rows)
    assert np.flatnonzero(missing[0]).tolist() == [SENSOR_FIELDS.index("accelerometer_1_1_peak")]
    assert not missing[1].any()
    mean = np.arange(len(SENSOR_FIELDS), dtype=np.float32)
    filled = fill_missing(rows, missing, mean)
    assert filled[0, missing[0]].tolist() == [mean[missing[0]][0]] and np.isnan(filled[1]).sum() == 1


def test_a_failure_mode_column_follows_its_readings_and_is_none_when_the_data_carry_none():
    records = [
        reading(car, seq, failure=seq == 3) | {"failure_mode": "battery" if seq == 3 else None}
        for seq in range(5)
        for car in ("car-1", "car-2")
    ]
    records = [records[i] for i in np.random.default_rng(1).permutation(len(records))]
    series = series_from_records(records)
    assert series.failure_mode is not None
    assert (series.failure_mode == np.where(series.failure, "battery", "")).all()  # aligned after sorting
    one = series.select_cars(["car-2"])
    assert one.failure_mode.tolist() == ["", "", "", "battery", ""]
    plain = series_from_records([reading("car-1", seq) for seq in range(5)])
    assert plain.failure_mode is None and plain.select_cars(["car-1"]).failure_mode is None
    with pytest.raises(ValueError, match="3 failure modes for 5 readings"):
        plain.with_failure_modes(np.array(["", "", ""]))
