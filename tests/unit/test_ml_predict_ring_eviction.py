"""The per-car windows' bound in bytes: least recently seen cars evicted past it, idle cars evicted by event time,
evicted cars remembered (within the bound) so that the predictor can rebuild them when they return."""

import numpy as np
import pytest

from ml.serving.ring_buffer import ENTRY_BYTES, IDLE_SWEEPS, CarWindows


def rows(*values: float) -> np.ndarray:
    return np.array([[v, -v] for v in values], dtype=np.float32)


def bounded(cars: int, **options) -> CarWindows:
    return CarWindows(window=3, features=2, max_bytes=CarWindows.bytes_for(3, 2, cars), **options)


def test_the_bound_in_bytes_sets_how_many_cars_are_held():
    windows = bounded(cars=100)
    assert windows.max_cars == 100
    assert CarWindows(window=3, features=2, max_bytes=CarWindows.bytes_for(3, 2, 100) - 1).max_cars == 99
    windows.push([f"c{i}" for i in range(100)], [0] * 100, rows(*range(100)))
    assert len(windows) == 100 and windows.nbytes <= CarWindows.bytes_for(3, 2, 100)
    assert windows.take_evictions() == {"idle": 0, "bytes": 0}


def test_past_the_bound_the_least_recently_seen_car_is_evicted_first():
    windows = bounded(cars=3)
    windows.push(["a", "b", "c"], [0, 0, 0], rows(1, 2, 3))
    windows.push(["a"], [1], rows(4))  # a seen again: b is now the least recently seen
    windows.push(["d"], [0], rows(5))
    assert windows.readings_of("b") == 0 and {windows.readings_of(c) for c in "acd"} == {1, 2}
    assert windows.returning(["d", "b", "x"]) == ["b"]
    windows.push(["e", "f"], [0, 0], rows(6, 7))  # c and a go, in that order of age
    assert windows.returning(list("abcdef")) == ["a", "b", "c"]
    assert len(windows) == 3 and windows.take_evictions() == {"idle": 0, "bytes": 3}
    assert windows.nbytes <= CarWindows.bytes_for(3, 2, 3)


def test_an_evicted_car_starts_from_what_is_pushed_again_and_is_no_longer_returning():
    windows = bounded(cars=1)
    windows.push(["a", "a"], [0, 1], rows(1, 2))
    windows.push(["b"], [0], rows(9))
    assert windows.returning(["a"]) == ["a"]
    windows.push(["a", "a"], [0, 1], rows(1, 2), windows=False)  # its history, re-read from Kafka
    out = windows.push(["a"], [2], rows(3))
    assert out[0][:, 0].tolist() == [1, 2, 3], "the rebuilt window, not a padded one"
    assert windows.returning(["a"]) == [] and windows.returning(["b"]) == ["b"]


def test_a_push_never_evicts_its_own_cars_and_a_slot_reused_starts_clean():
    windows = bounded(cars=2)
    windows.push(["a", "b"], [5, 5], rows(1, 2))
    out = windows.push(["c", "d", "c"], [0, 0, 1], rows(3, 4, 5))
    assert [o[:, 0].tolist() for o in out] == [[3, 3, 3], [4, 4, 4], [3, 3, 5]]
    assert windows.readings_of("c") == 2 and windows.readings_of("a") == 0
    with pytest.raises(ValueError, match="more new cars"):
        windows.push(["x", "y", "z"], [0, 0, 0], rows(1, 2, 3))


def test_idle_cars_are_evicted_by_their_partitions_event_time_clock():
    windows = bounded(cars=10, idle_ms=60_000)
    windows.push(["a", "b"], [0, 0], rows(1, 2), group=0, times=[0, 0])
    windows.push(["x"], [0], rows(3), group=1, times=[0])
    windows.push(["b"], [1], rows(4), group=0, times=[50_000])
    assert windows.take_evictions() == {"idle": 0, "bytes": 0}
    windows.push(["b"], [2], rows(5), group=0, times=[70_000])  # a: 70 s behind partition 0's clock
    assert windows.returning(["a", "b", "x"]) == ["a"], "x's partition has its own clock"
    assert windows.take_evictions() == {"idle": 1, "bytes": 0}
    windows.push(["a"], [1], rows(6), group=0, times=[0], windows=False)  # history re-read: never idle-evicted
    assert windows.readings_of("a") == 1 and windows.take_evictions()["idle"] == 0


def test_idle_cars_are_evicted_at_most_one_sweep_step_late():
    windows = bounded(cars=10, idle_ms=60_000)
    step = 60_000 // IDLE_SWEEPS
    windows.push(["a", "b"], [0, 0], rows(1, 2), times=[0, 0])
    evicted_at = None
    for seq, now in enumerate(range(step // 4, 60_000 + 3 * step, step // 4), start=1):
        windows.push(["b"], [seq], rows(3), times=[now])
        if evicted_at is None and windows.take_evictions()["idle"]:
            evicted_at = now
    assert evicted_at is not None and 60_000 < evicted_at <= 60_000 + step, "at most one step late"


def test_one_sender_clock_far_ahead_does_not_age_the_others():
    windows = bounded(cars=10, idle_ms=60_000)
    cars = [f"c{i}" for i in range(5)]
    windows.push(cars, [0] * 5, rows(*range(5)), times=[0] * 5)
    windows.push([*cars, "skewed"], [1] * 5 + [0], rows(*range(6)), times=[10_000] * 5 + [10**12])
    windows.push(cars, [2] * 5, rows(*range(5)), times=[20_000] * 5)
    assert len(windows) == 6 and windows.take_evictions()["idle"] == 0


def test_remembered_evictions_stay_within_the_bound():
    windows = bounded(cars=4)
    for i in range(0, 40, 2):
        windows.push([f"c{i}", f"c{i + 1}"], [0, 0], rows(i, i + 1))
        assert windows.nbytes <= CarWindows.bytes_for(3, 2, 4)
        assert len(windows._evicted) <= 4
    assert windows.returning(["c35"]) == ["c35"] and windows.returning(["c0"]) == [], "the oldest are forgotten"


def test_a_revoked_partition_forgets_its_evictions_a_rebuilt_one_keeps_them():
    windows = bounded(cars=1)
    windows.push(["a"], [0], rows(1), group=0)
    windows.push(["b"], [0], rows(2), group=0)
    windows.reset_group(0, keep_evicted=True)
    assert windows.returning(["a"]) == ["a"] and len(windows) == 0
    windows.reset_group(0)
    assert windows.returning(["a"]) == []


def test_memory_is_only_taken_for_the_cars_held():
    """The arrays are sized for the bound up front; pages are touched only as cars arrive."""
    windows = CarWindows(window=36, features=18, max_bytes=2**30)
    assert windows.max_cars * (windows.car_bytes + ENTRY_BYTES) <= 2**30
    assert windows._rows.nbytes > 512 * 2**20  # reserved, not resident: np.zeros maps pages lazily


def test_a_batchs_cars_are_kept_while_its_returning_cars_history_is_re_read():
    windows = bounded(cars=3)
    windows.push(["a", "b", "c"], [0, 0, 0], rows(1, 2, 3))
    windows.push(["d"], [0], rows(4))  # a, the least recently seen, goes
    assert windows.arriving(["b", "a"]) == ["a"]
    windows.push(["a"], [0], rows(1), windows=False)  # a's history: c goes, not b, although b was seen before c
    assert windows.returning(["b", "c"]) == ["c"]
    out = windows.push(["b", "a"], [1, 1], rows(5, 6))
    assert out[0][:, 0].tolist() == [2, 2, 5] and out[1][:, 0].tolist() == [1, 1, 6]
