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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


class CarWindows:
    """Per-car rings of the last `window` feature rows, growing with the number of cars seen."""

    def __init__(self, window: int, features: int, capacity: int = 1024) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.features = features
        self._index: dict[str, int] = {}
        self._rows = np.zeros((capacity, window, features), dtype=np.float32)
        self._seqs = np.zeros((capacity, window), dtype=np.int64)  # the seq of each row: duplicates of hashes
        self._count = np.zeros(capacity, dtype=np.int64)
        self._last_seq = np.full(capacity, -1, dtype=np.int64)
        self._group = np.full(capacity, -1, dtype=np.int64)
        self._offsets = np.arange(window, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._index)

    def readings_of(self, car: str) -> int:
        """How many readings of `car` the ring has seen (at most `window` of them are kept)."""
        slot = self._index.get(car)
        return 0 if slot is None else int(self._count[slot])

    def short_cars(self, group: int | None = None) -> int:
        """Cars (of one group, e.g. a partition) with fewer than `window` readings: their windows are padded."""
        used = len(self._index)
        counts = self._count[:used]
        mask = counts < self.window
        if group is not None:
            mask &= self._group[:used] == group
        return int(mask.sum())

    def reset_group(self, group: int) -> int:
        """Forget the history of every car of `group` (a partition that was revoked or is rebuilt)."""
        used = len(self._index)
        mask = self._group[:used] == group
        self._count[:used][mask] = 0
        self._last_seq[:used][mask] = -1
        return int(mask.sum())

    def _slot(self, car: str, group: int) -> int:
        slot = self._index.get(car)
        if slot is None:
            slot = len(self._index)
            if slot == len(self._count):
                self._grow()
            self._index[car] = slot
        self._group[slot] = group
        return slot

    def _grow(self) -> None:
        capacity = 2 * len(self._count)
        rows = np.zeros((capacity, self.window, self.features), dtype=np.float32)
        rows[: len(self._rows)] = self._rows
        self._rows = rows
        self._seqs = np.concatenate([self._seqs, np.zeros((capacity - len(self._seqs), self.window), np.int64)])
        self._count = np.concatenate([self._count, np.zeros(capacity - len(self._count), dtype=np.int64)])
        self._last_seq = np.concatenate([self._last_seq, np.full(capacity - len(self._last_seq), -1, np.int64)])
        self._group = np.concatenate([self._group, np.full(capacity - len(self._group), -1, np.int64)])

    def push(
        self,
        cars: Sequence[str],
        seqs: Sequence[int],
        rows: np.ndarray,
        hashed: Sequence[bool] | np.ndarray | None = None,
        group: int = 0,
        windows: bool = True,
    ) -> np.ndarray | None:
        """Append readings in arrival order and return the window ending at each: float32 [N, window, features]
        (None with windows=False, for re-reading history). `hashed` marks readings whose seq is a content hash."""
        slots = np.fromiter((self._slot(car, group) for car in cars), dtype=np.int64, count=len(cars))
        seqs = np.asarray(seqs, dtype=np.int64)
        hashed = np.zeros(len(seqs), dtype=bool) if hashed is None else np.asarray(hashed, dtype=bool)
        out = np.empty((len(cars), self.window, self.features), dtype=np.float32) if windows else None
        # A car may have several readings in one batch: take them in rounds, each car at most once per round,
        # so that a later reading never overwrites a slot that an earlier reading's window still needs.
        occurrence = _occurrence(slots)
        for round_ in range(int(occurrence.max(initial=-1)) + 1):
            picked = np.flatnonzero(occurrence == round_)
            self._append(slots[picked], seqs[picked], rows[picked], hashed[picked])
            if out is not None:
                out[picked] = self._gather(slots[picked])
        return out

    def _append(self, slots: np.ndarray, seqs: np.ndarray, rows: np.ndarray, hashed: np.ndarray) -> None:
        last = self._last_seq[slots]
        restarted = ~hashed & (seqs <= last - self.window)
        if restarted.any():
            log.info("%d car(s) started their sequence again; their history is reset", int(restarted.sum()))
            self._count[slots[restarted]] = 0
            last = np.where(restarted, -1, last)
        new = np.where(hashed, ~self._recent(slots, seqs), seqs > last)
        slots, rows, seqs, hashed = slots[new], rows[new], seqs[new], hashed[new]
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
        return self._rows[slots[:, None], numbers % self.window]


def _occurrence(slots: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements have the same value (0 for the first occurrence)."""
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(ordered)]))
    occurrence = np.empty_like(slots)
    occurrence[order] = np.arange(len(ordered)) - run_start
    return occurrence
