"""TfioPartitionReader.read when tensorflow-io's kernel returns less than the range asked for: it stops at the first
end-of-partition event, which after a leader change can come before the high watermark the range was taken from.
The kernel is replaced by a partition log that serves only the offsets made readable so far; the real kernel's reads
are in tests/integration/test_ml_predict_readers.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import ml.source
from ml.source import SHORT_READ_TRIES, TfioPartitionReader


class PartitionLog:
    """Records 0..n-1; `readable` of them served, one more made readable after each read that fell short."""

    def __init__(self, records: int, readable: int, catch_up: bool) -> None:
        self.values = [f"v{i}".encode() for i in range(records)]
        self.readable = readable
        self.catch_up = catch_up
        self.reads = 0

    def __call__(self, _resource, start: int, stop: int) -> SimpleNamespace:
        self.reads += 1
        start = max(start, 0)
        served = self.values[start : min(stop, self.readable)]
        if self.catch_up and len(served) < stop - start:
            self.readable += 1
        array = lambda values: SimpleNamespace(numpy=lambda: np.array(values, dtype=object))  # noqa: E731
        return SimpleNamespace(key=array([b"k"] * len(served)), message=array(served))


def reader_on(log: PartitionLog) -> TfioPartitionReader:
    reader = TfioPartitionReader.__new__(TfioPartitionReader)
    reader._read, reader.partition, reader._resource = log, 0, None
    return reader


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(ml.source, "SHORT_READ_WAIT_S", 0.0)


def test_a_short_read_is_read_again_until_the_range_is_complete():
    log = PartitionLog(records=10, readable=6, catch_up=True)
    records = reader_on(log).read(0, 10)
    assert [r.value for r in records] == log.values
    assert [r.offset for r in records] == list(range(10))
    assert log.reads > 1


def test_offsets_nothing_serves_are_given_up_after_the_tries_and_logged(caplog):
    log = PartitionLog(records=10, readable=7, catch_up=False)  # 7..9: transaction markers, say
    records = reader_on(log).read(0, 10)
    assert [r.value for r in records] == log.values[:7]
    assert log.reads == 1 + SHORT_READ_TRIES
    assert "returned 7 records; the other 3 offsets" in caplog.text


def test_a_complete_read_reads_once():
    log = PartitionLog(records=10, readable=10, catch_up=False)
    assert len(reader_on(log).read(2, 9)) == 7
    assert log.reads == 1
