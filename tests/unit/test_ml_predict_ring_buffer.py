"""The per-car windows of the predictor: order, padding of first readings, duplicates, several readings per batch."""

import numpy as np

from ml.episodes import suppressed
from ml.features import series_from_records
from ml.serving.ring_buffer import CarWindows


def rows(*values: float) -> np.ndarray:
    return np.array([[v, -v] for v in values], dtype=np.float32)


def test_first_readings_are_left_padded_with_the_earliest_reading():
    windows = CarWindows(window=4, features=2)
    out = windows.push(["a", "a"], [0, 1], rows(10, 11))
    assert out[0][:, 0].tolist() == [10, 10, 10, 10]
    assert out[1][:, 0].tolist() == [10, 10, 10, 11]
    assert windows.short_cars() == 1


def test_windows_hold_the_last_w_readings_in_order_across_batches_and_cars():
    windows = CarWindows(window=3, features=2, max_bytes=CarWindows.bytes_for(3, 2, cars=2))  # exactly the two cars
    windows.push(["a", "b", "a"], [0, 0, 1], rows(1, 100, 2))
    out = windows.push(["a", "b", "a", "a"], [2, 1, 3, 4], rows(3, 101, 4, 5))
    assert out[0][:, 0].tolist() == [1, 2, 3]
    assert out[1][:, 0].tolist() == [100, 100, 101]
    assert out[2][:, 0].tolist() == [2, 3, 4]
    assert out[3][:, 0].tolist() == [3, 4, 5]
    assert out[3][:, 1].tolist() == [-3, -4, -5]
    assert windows.readings_of("a") == 5 and len(windows) == 2


def test_many_readings_of_one_car_in_one_batch_each_get_their_own_window():
    windows = CarWindows(window=5, features=2)
    values = list(range(20))
    out = windows.push(["a"] * 20, values, rows(*values))
    for i in range(20):
        expected = [max(0, j) for j in range(i - 4, i + 1)]
        assert out[i][:, 0].tolist() == expected


def test_duplicates_are_predicted_on_the_current_window_and_not_stored_twice():
    windows = CarWindows(window=3, features=2)
    windows.push(["a"] * 3, [0, 1, 2], rows(0, 1, 2))
    out = windows.push(["a", "a"], [1, 3], rows(99, 3))
    assert out[0][:, 0].tolist() == [0, 1, 2]
    assert out[1][:, 0].tolist() == [1, 2, 3]
    assert windows.readings_of("a") == 4


def test_a_sequence_that_starts_again_resets_the_car():
    windows = CarWindows(window=2, features=2)
    windows.push(["a"] * 5, [0, 1, 2, 3, 4], rows(0, 1, 2, 3, 4))
    out = windows.push(["a"], [0], rows(50))
    assert out[0][:, 0].tolist() == [50, 50]


def test_reset_group_forgets_only_that_partitions_cars():
    windows = CarWindows(window=2, features=2)
    windows.push(["a"], [0], rows(1), group=0)
    windows.push(["b"], [0], rows(2), group=1)
    assert windows.reset_group(1) == 1
    assert windows.readings_of("a") == 1 and windows.readings_of("b") == 0
    out = windows.push(["b"], [0], rows(7), group=1)
    assert out[0][:, 0].tolist() == [7, 7]


def test_history_can_be_pushed_without_building_windows():
    windows = CarWindows(window=2, features=2)
    assert windows.push(["a", "a"], [0, 1], rows(1, 2), windows=False) is None
    assert windows.push(["a"], [2], rows(3))[0][:, 0].tolist() == [2, 3]


def test_a_redelivered_content_hash_is_predicted_on_the_current_window_and_not_stored_twice():
    windows = CarWindows(window=3, features=2)
    hashes = [8_123_456_789, 17, 4_000_000_000_000]  # an identity, not an order
    windows.push(["a"] * 3, hashes, rows(1, 2, 3), hashed=[True] * 3)
    out = windows.push(["a", "a", "a"], [17, 5, 5], rows(99, 4, 98), hashed=[True] * 3)
    assert out[0][:, 0].tolist() == [1, 2, 3], "a redelivery: the window as it was"
    assert out[1][:, 0].tolist() == [2, 3, 4], "a new hash below the others is appended, in arrival order"
    assert out[2][:, 0].tolist() == [2, 3, 4], "redelivered within the same batch"
    assert windows.readings_of("a") == 4


def test_random_content_hashes_never_reset_a_cars_history():
    windows = CarWindows(window=4, features=2)
    hashes = np.random.default_rng(0).integers(0, 2**63 - 1, size=1000)  # half of them "far below the last"
    values = np.arange(1000, dtype=np.float32)
    for start in range(0, 1000, 100):
        part = slice(start, start + 100)
        out = windows.push(["a"] * 100, hashes[part], rows(*values[part]), hashed=np.ones(100, bool))
    assert windows.readings_of("a") == 1000
    assert out[-1][:, 0].tolist() == [996, 997, 998, 999]


def test_only_the_last_w_hashes_of_a_car_are_remembered():
    windows = CarWindows(window=2, features=2)
    windows.push(["a"] * 3, [30, 10, 20], rows(1, 2, 3), hashed=[True] * 3)
    out = windows.push(["a"], [30], rows(4), hashed=[True])  # fell out of the ring: memory stays W per car
    assert out[0][:, 0].tolist() == [3, 4] and windows.readings_of("a") == 4


def test_sender_readings_after_content_hashes_keep_the_sequence_rules():
    windows = CarWindows(window=2, features=2)
    windows.push(["a"] * 2, [2**62, 2**61], rows(1, 2), hashed=[True, True])
    out = windows.push(["a"] * 3, [0, 1, 1], rows(3, 4, 5))
    assert [o[:, 0].tolist() for o in out] == [[2, 3], [3, 4], [3, 4]]  # no reset; seq 1 again is a duplicate


def test_suppression_follows_the_rule_of_ml_episodes_in_any_batching():
    """The car told us: a reading is suppressed when its car reported a failure in it or its previous W readings,
    the same readings ml/episodes.py leaves out of the false alerts, whatever the batches look like."""
    rng = np.random.default_rng(7)
    cars = [f"car-{i}" for i in range(5)]
    stream = [(car, seq) for seq in range(120) for car in rng.permutation(cars)]
    failing = {(car, seq) for car, seq in stream if rng.random() < 0.04}
    records = [
        {"car_id": car, "seq": seq, "event_time": 10_000 * seq, "failure_occurred": (car, seq) in failing}
        for car, seq in stream
    ]
    series = series_from_records(records, features=())
    keys = zip(series.car_ids.tolist(), series.seq.tolist(), strict=True)
    expected = dict(zip(keys, suppressed(series, 6).tolist(), strict=True))
    windows = CarWindows(window=6, features=2)
    start = 0
    while start < len(stream):  # batches of 1 to 40 readings, several of one car in a batch
        batch = stream[start : start + int(rng.integers(1, 40))]
        quiet = np.zeros(len(batch), dtype=bool)
        seqs = [seq for _, seq in batch]
        failed = [key in failing for key in batch]
        windows.push([car for car, _ in batch], seqs, rows(*seqs), failed=failed, suppressed=quiet)
        assert quiet.tolist() == [bool(expected[key]) for key in batch]
        start += len(batch)
    assert 0 < sum(expected.values()) < len(stream)


def test_a_duplicate_is_suppressed_as_the_cars_current_reading_and_history_pushes_count():
    windows = CarWindows(window=3, features=2)
    failed = [False, True, False, False]
    windows.push(["a"] * 4, [0, 1, 2, 3], rows(0, 1, 2, 3), windows=False, failed=failed)  # a rebuild
    quiet = np.zeros(3, dtype=bool)
    windows.push(["a"] * 3, [4, 2, 5], rows(4, 2, 5), suppressed=quiet)
    assert quiet.tolist() == [True, True, False], "4: 3 readings after the failure; 2: a duplicate; 5: past W"
