"""The last W readings of every car, in one numpy array, and the model windows that end at each new reading.

Storage is one float32 array [cars, W, features] used as a ring per car: reading number n of a car (0-based, in
arrival order) lives in slot n % W. A window for a car that has n readings is the slots of readings n-W .. n-1.

A car's first readings, before it has W of them, are predicted on a window padded on the left with the car's
earliest known reading (clipping the reading number at 0 does exactly that), so every reading gets a prediction
from its first one on; the model sees a "flat" history for the missing part.

Duplicates (a reading whose seq is not newer than the car's last one, e.g. re-delivered by Kafka after a
restart) are predicted on the car's current window and do not enter the ring twice. A seq far below the last one
(more than W back) means the car's sequence started again (its sender restarted): the car's history is reset.

Readings whose seq is a hash of their content (seq_origin CONTENT_HASH, `hashed=True`) carry an identity, not an
order: they enter the ring in arrival order, a hash equal to one of the car's last W seqs (kept beside the rows,
so memory stays W per car) is a redelivery and is treated as a duplicate, and a hash never resets the car (a
random hash is "far below the last one" half of the time).

"The car told us" (ml/episodes.py): each car also keeps how many of its readings came since its last one with a
reported failure (`failed`), capped at W + 1 (none within W), so that a push tells which of its readings are
suppressed: the reading itself or one of its previous W readings reported a failure. One number per car; a
duplicate takes the car's current count, a reset car (a new sequence) keeps it: the car still told us.

A ring may be longer than a model's window: the predictor keeps one ring of the longest window it scores (the
champion's, or a challenger's in the shadow, ml/serving/shadow.py), and a model of window w takes the last w rows
of each window (exactly the window a ring of w gives, its left padding included) and `since_failure` <= w for the
suppression rule. The ring's own length W then decides when a car's sequence started again and which hashes are
redeliveries.

Bounded in bytes (`max_bytes`, the predictor's ML_MAX_STATE_BYTES): the arrays are sized once for the most cars
the bound holds (`max_cars`) and np.zeros maps their pages lazily, so memory grows with the cars held, never past
the bound, and never copies. A new car past the bound evicts the least recently seen car (by push, not by event
time: partitions may lag each other). With `idle_ms`, a car whose newest reading lies that far behind its group's
event-time clock (the median event time of the group's pushes, the newest seen: one sender with a clock far ahead
cannot age every other car) is evicted too, looked for once per idle_ms / IDLE_SWEEPS of that clock. Evicted
cars are remembered by id (`returning`), up to `max_cars` of them and counted in the bound, so that the predictor
can re-read a returning car's history from Kafka before its next prediction (ml/serving/partitions.py); an id
forgotten past that starts again like a new car.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


DEFAULT_MAX_BYTES = 512 * 2**20
ENTRY_BYTES = 160
"""Bytes of one car id held in the index (its str and dict entry: 130 measured with tracemalloc for ids like
"car-000123") and its reference in the slot list, rounded up; a remembered eviction costs the same."""
SLOT_BYTES = 6 * 8  # count, last seq, group, last push, newest event time, readings since a reported failure
IDLE_SWEEPS = 60
"""Sweeps for idle cars per idle_ms of a group's event-time clock (one a minute for the default hour). A sweep
costs 0.17 ms at 100,000 cars: once per partition per batch, it cost the predictor about 0.7 µs per reading."""


class CarWindows:
    """Per-car rings of the last `window` feature rows for at most `max_cars` cars: as many as `max_bytes` holds
    (each car also paying for one remembered eviction), and at least `min_cars` (one push must fit)."""

    def __init__(
        self, window: int, features: int, max_bytes: int = DEFAULT_MAX_BYTES, idle_ms: int | None = None,
        min_cars: int = 1,
    ) -> None:  # fmt: skip
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.features = features
        self.idle_ms = idle_ms
        self.car_bytes = window * features * 4 + window * 8 + SLOT_BYTES + ENTRY_BYTES
        self.max_cars = max(min_cars, max_bytes // (self.car_bytes + ENTRY_BYTES), 1)
        n = self.max_cars
        self._rows = np.zeros((n, window, features), dtype=np.float32)
        self._seqs = np.zeros((n, window), dtype=np.int64)  # the seq of each row: duplicates of hashes
        self._count = np.zeros(n, dtype=np.int64)
        self._last_seq = np.zeros(n, dtype=np.int64)
        self._group = np.zeros(n, dtype=np.int64)  # -1: a free slot
        self._touched = np.zeros(n, dtype=np.int64)  # number of the push that last saw the car: least recent first
        self._newest = np.zeros(n, dtype=np.int64)  # event time (ms) of the car's newest reading: idleness
        self._since_failure = np.zeros(n, dtype=np.int64)  # readings since the last reported failure, at most W + 1
        self._offsets = np.arange(window, dtype=np.int64)
        self._index: dict[str, int] = {}
        self._cars: list[str | None] = []  # slot -> car; slots in use so far (at most max_cars)
        self._free: list[int] = []
        self._evicted: dict[str, int] = {}  # car -> group, oldest eviction first
        self._clock: dict[int, int] = {}  # group -> its event-time clock (ms)
        self._swept: dict[int, int] = {}  # group -> its clock at its last sweep for idle cars
        self._push = 0
        self._pinned = 0  # cars seen from this push on belong to the batch being predicted (0: none)
        self.evictions = {"idle": 0, "bytes": 0}
        """Evictions by reason since the last `take_evictions()`."""

    @staticmethod
    def bytes_for(window: int, features: int, cars: int) -> int:
        """The `max_bytes` that holds `cars` cars of this window and features."""
        return cars * (window * features * 4 + window * 8 + SLOT_BYTES + 2 * ENTRY_BYTES)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """State held: the cars' rows and slots, their ids, and the remembered evictions (at most `max_bytes`)."""
        return len(self._index) * self.car_bytes + len(self._evicted) * ENTRY_BYTES

    def readings_of(self, car: str) -> int:
        """How many readings of `car` the ring has seen (at most `window` of them are kept)."""
        slot = self._index.get(car)
        return 0 if slot is None else int(self._count[slot])

    def short_cars(self, group: int | None = None) -> int:
        """Cars (of one group, e.g. a partition) with fewer than `window` readings: their windows are padded."""
        used = len(self._cars)
        mask = (self._group[:used] >= 0) & (self._count[:used] < self.window)
        if group is not None:
            mask &= self._group[:used] == group
        return int(mask.sum())

    def returning(self, cars: Sequence[str]) -> list[str]:
        """The cars among `cars` that were evicted and are remembered: their history is worth re-reading."""
        return [car for car in dict.fromkeys(cars) if car in self._evicted]

    def arriving(self, cars: Sequence[str]) -> list[str]:
        """A batch with `cars` is about to be predicted: until the next batch, its cars held now are evicted only
        when no other car is left to evict (re-reading the history of its returning cars, or another partition's
        push, must not push them out). Returns its returning cars."""
        self._push += 1
        self._pinned = self._push
        held = [slot for slot in map(self._index.get, cars) if slot is not None]
        self._touched[held] = self._push
        return self.returning(cars)

    def take_evictions(self) -> dict[str, int]:
        """Evictions by reason since the last call (for the metrics)."""
        taken, self.evictions = self.evictions, {"idle": 0, "bytes": 0}
        return taken

    def reset_group(self, group: int, keep_evicted: bool = False) -> int:
        """Forget every car of `group` (a partition that was revoked, or is about to be rebuilt: then
        `keep_evicted`, so that its evicted cars are still recognised when they return)."""
        slots = np.flatnonzero(self._group[: len(self._cars)] == group)
        self._release(slots)
        if not keep_evicted:
            self._evicted = {car: g for car, g in self._evicted.items() if g != group}
            self._clock.pop(group, None)
            self._swept.pop(group, None)
        return len(slots)

    def _release(self, slots: np.ndarray) -> list[str]:
        cars = [self._cars[slot] for slot in slots.tolist()]
        for slot, car in zip(slots.tolist(), cars, strict=True):
            del self._index[car]
            self._cars[slot] = None
        self._group[slots] = -1
        self._count[slots] = 0
        self._free.extend(slots.tolist())
        return cars

    def _evict(self, slots: np.ndarray, reason: str) -> None:
        groups = self._group[slots].tolist()
        for car, group in zip(self._release(slots), groups, strict=True):
            self._evicted[car] = group
        self.evictions[reason] += len(slots)
        if len(self._evicted) > self.max_cars:
            # past the bound, the oldest quarter is forgotten at once (a dict drops its oldest keys in O(n) only)
            keep = self.max_cars - self.max_cars // 4
            self._evicted = dict(itertools.islice(self._evicted.items(), len(self._evicted) - keep, None))

    def _evict_idle(self, group: int, times: np.ndarray) -> None:
        if self.idle_ms is None or not len(times):
            return
        now = int(np.median(times))
        clock = max(self._clock.get(group, now), now)
        self._clock[group] = clock
        # A sweep reads every car held (100,000 at the reference load): once per idle_ms / IDLE_SWEEPS of the
        # group's clock, not once per push, so a car is evicted at most that much later than idle_ms.
        swept = self._swept.get(group)
        if swept is not None and clock < swept + self.idle_ms // IDLE_SWEEPS:
            return
        self._swept[group] = clock
        used = len(self._cars)
        idle = (self._group[:used] == group) & (self._touched[:used] < self._push)
        idle &= self._newest[:used] < clock - self.idle_ms
        if idle.any():
            self._evict(np.flatnonzero(idle), "idle")

    def _take(self, n: int) -> list[int]:
        """`n` free slots: released ones first, then never used ones, then those of the least recently seen cars
        (never one of the current push, whose windows are still to be built)."""
        short = n - len(self._free) - (self.max_cars - len(self._cars))
        if short > 0:
            used = len(self._cars)
            live = self._group[:used] >= 0
            candidates = np.flatnonzero(live & (self._touched[:used] < (self._pinned or self._push)))
            if len(candidates) < short:
                if self._pinned:
                    log.warning("the state bound holds fewer cars than one batch: raise ML_MAX_STATE_BYTES")
                candidates = np.flatnonzero(live & (self._touched[:used] < self._push))
            if len(candidates) < short:
                raise ValueError(f"one push holds more new cars than the bound's {self.max_cars}")
            if short < len(candidates):
                candidates = candidates[np.argpartition(self._touched[candidates], short - 1)[:short]]
            self._evict(candidates, "bytes")
        reused = self._free[len(self._free) - min(n, len(self._free)) :]
        del self._free[len(self._free) - len(reused) :]
        fresh = list(range(len(self._cars), len(self._cars) + n - len(reused)))
        self._cars.extend([None] * len(fresh))
        return reused + fresh

    def _slots(self, cars: Sequence[str], group: int, times: np.ndarray | None) -> np.ndarray:
        index = self._index
        slots = np.fromiter((index.get(car, -1) for car in cars), dtype=np.int64, count=len(cars))
        known = slots >= 0
        self._touched[slots[known]] = self._push
        if times is not None:
            self._evict_idle(group, times)
        if not known.all():
            new = list(dict.fromkeys(itertools.compress(cars, ~known)))
            taken = self._take(len(new))
            for car, slot in zip(new, taken, strict=True):
                index[car] = slot
                self._cars[slot] = car
                self._evicted.pop(car, None)
            self._count[taken] = 0
            self._last_seq[taken] = -1
            self._newest[taken] = np.iinfo(np.int64).min
            self._since_failure[taken] = self.window + 1
            self._touched[taken] = self._push
            slots[~known] = [index[car] for car in itertools.compress(cars, ~known)]
        self._group[slots] = group
        return slots

    def push(
        self,
        cars: Sequence[str],
        seqs: Sequence[int],
        rows: np.ndarray,
        hashed: Sequence[bool] | np.ndarray | None = None,
        group: int = 0,
        windows: bool = True,
        times: Sequence[int] | np.ndarray | None = None,
        failed: Sequence[bool] | np.ndarray | None = None,
        suppressed: np.ndarray | None = None,
        since_failure: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Append readings in arrival order and return the window ending at each: float32 [N, window, features]
        (None with windows=False, for re-reading history). `hashed` marks readings whose seq is a content hash;
        `times` are their event times (ms): they move the group's clock, and idle cars are evicted, only when
        predicting (windows=True): history re-read from Kafka is old by nature. `failed`: the readings that report
        a failure (failure_occurred true); `suppressed`, a bool array of N, is filled with whether the car reported
        one in each reading or in its previous W readings; `since_failure`, an int64 array of N, with how many
        readings before each one its car last reported one (0: in the reading itself; at most W + 1), so that a
        model of a shorter window w than the ring's applies the same rule: suppressed when since_failure <= w."""
        self._push += 1
        times = None if times is None else np.asarray(times, dtype=np.int64)
        slots = self._slots(cars, group, times if windows else None)
        if times is not None:
            np.maximum.at(self._newest, slots, times)
        seqs = np.asarray(seqs, dtype=np.int64)
        hashed = np.zeros(len(seqs), dtype=bool) if hashed is None else np.asarray(hashed, dtype=bool)
        failed = np.zeros(len(seqs), dtype=bool) if failed is None else np.asarray(failed, dtype=bool)
        out = np.empty((len(cars), self.window, self.features), dtype=np.float32) if windows else None
        # A car may have several readings in one batch: take them in rounds, each car at most once per round,
        # so that a later reading never overwrites a slot that an earlier reading's window still needs.
        occurrence = _occurrence(slots)
        rounds = int(occurrence.max(initial=-1)) + 1
        for round_ in range(rounds):
            # one round (every car once, the usual batch): all of it, without copies
            picked = slice(None) if rounds == 1 else np.flatnonzero(occurrence == round_)
            self._append(slots[picked], seqs[picked], rows[picked], hashed[picked], failed[picked])
            if out is not None:
                out[picked] = self._gather(slots[picked])
            if suppressed is not None or since_failure is not None:
                since = np.where(failed[picked], 0, self._since_failure[slots[picked]])
                if since_failure is not None:
                    since_failure[picked] = since
                if suppressed is not None:
                    suppressed[picked] = since <= self.window
        return out

    def _append(
        self, slots: np.ndarray, seqs: np.ndarray, rows: np.ndarray, hashed: np.ndarray, failed: np.ndarray
    ) -> None:
        last = self._last_seq[slots]
        restarted = ~hashed & (seqs <= last - self.window)
        if restarted.any():
            log.info("%d car(s) started their sequence again; their history is reset", int(restarted.sum()))
            self._count[slots[restarted]] = 0
            last = np.where(restarted, -1, last)
        new = np.where(hashed, ~self._recent(slots, seqs), seqs > last)
        slots, rows, seqs, hashed = slots[new], rows[new], seqs[new], hashed[new]
        since = np.minimum(self._since_failure[slots] + 1, self.window + 1)
        self._since_failure[slots] = np.where(failed[new], 0, since)
        ring = self._count[slots] % self.window
        self._rows[slots, ring] = rows
        self._seqs[slots, ring] = seqs
        self._count[slots] += 1
        sender = ~hashed  # a hash says nothing about where the sender's sequence is
        self._last_seq[slots[sender]] = seqs[sender]

    def _recent(self, slots: np.ndarray, seqs: np.ndarray) -> np.ndarray:
        """Whether each seq equals one of its car's last `window` seqs (the rows the ring still holds)."""
        held = self._offsets[None, :] < self._count[slots, None]
        return ((self._seqs[slots] == seqs[:, None]) & held).any(axis=1)

    def _gather(self, slots: np.ndarray) -> np.ndarray:
        # reading numbers n-W .. n-1, clipped at 0: the left padding with the car's first reading
        numbers = np.maximum(self._count[slots, None] - self.window + self._offsets[None, :], 0)
        # rows by their flat number: np.take on one axis copies twice as fast as indexing [slot, ring]
        flat = (slots[:, None] * self.window + numbers % self.window).ravel()
        rows = np.take(self._rows.reshape(-1, self.features), flat, axis=0)
        return rows.reshape(len(slots), self.window, self.features)


def _occurrence(slots: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements have the same value (0 for the first occurrence)."""
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(ordered)]))
    occurrence = np.empty_like(slots)
    occurrence[order] = np.arange(len(ordered)) - run_start
    return occurrence
