"""How the tensorflow-io reader cuts a range into kernel reads: never a one-record read, which returns nothing."""

import numpy as np

from ml.source import CHUNK, PartitionRange, _tfio_chunks


def chunks(start: int, end: int) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row) for row in np.stack(_tfio_chunks(PartitionRange(0, start, end)), axis=1)]


def test_ranges_are_cut_into_chunks_that_cover_every_offset_once():
    assert chunks(10, 20) == [(10, 10, 20, 0)]
    two = 2 * CHUNK
    assert chunks(0, two + 5) == [(0, 0, CHUNK, 0), (CHUNK, CHUNK, two, 0), (two, two, two + 5, 0)]


def test_a_one_record_tail_joins_the_chunk_before():
    assert chunks(0, CHUNK + 1) == [(0, 0, CHUNK + 1, 0)]


def test_a_lone_record_is_read_with_its_predecessor_or_from_the_beginning():
    assert chunks(7, 8) == [(7, 6, 8, 1)]
    start, first, stop, skip = chunks(0, 1)[0]
    assert (start, stop, skip) == (0, 1, 0) and first < 0  # OFFSET_BEGINNING
