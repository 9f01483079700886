"""Chunk planning, index ranges and the held-chunk bitmap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomdrop.protocol.chunks import ChunkSet, chunk_length, count_chunks, indexes_in, ranges_of


def test_the_seeds_example_ten_mib_in_64_kib_chunks_is_160_chunks() -> None:
    assert count_chunks(10_485_760, 65_536) == 160


def test_an_empty_file_has_no_chunks_and_a_short_last_chunk_is_counted() -> None:
    assert count_chunks(0, 65_536) == 0
    assert count_chunks(65_537, 65_536) == 2
    assert chunk_length(1, 65_537, 65_536) == 1
    assert chunk_length(2, 65_537, 65_536) == 0


@given(st.integers(0, 10**7), st.integers(1, 2**20))
def test_chunk_lengths_add_up_to_the_file_size(file_size: int, chunk_size: int) -> None:
    total = count_chunks(file_size, chunk_size)
    lengths = [chunk_length(i, file_size, chunk_size) for i in range(total)] if total < 5000 else []
    if lengths:
        assert sum(lengths) == file_size
        assert all(0 < n <= chunk_size for n in lengths)


@given(st.sets(st.integers(0, 300)))
def test_ranges_round_trip_to_the_same_indexes(indexes: set[int]) -> None:
    ranges = ranges_of(indexes)
    assert set(indexes_in(ranges)) == indexes
    assert all(a < b for a, b in ranges)
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))


def test_chunk_set_counts_each_chunk_once_and_reports_what_is_missing() -> None:
    held = ChunkSet(10, [0, 1, 2, 7])
    assert held.add(3) is True
    assert held.add(3) is False
    assert len(held) == 5
    assert held.missing() == [4, 5, 6, 8, 9]
    assert held.missing_ranges() == [(4, 7), (8, 10)]
    assert held.first_missing() == 4
    assert 3 in held and 4 not in held and -1 not in held and 10 not in held
    assert not held.complete
    with pytest.raises(IndexError):
        held.add(10)


def test_bytes_held_counts_the_short_last_chunk_exactly() -> None:
    held = ChunkSet(3, [0, 2])
    assert held.bytes_held(file_size=2 * 100 + 7, chunk_size=100) == 107
