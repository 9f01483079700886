"""Chunk planning and the set of chunks a receiver holds.

A file of ``file_size`` bytes in chunks of ``chunk_size`` has
``ceil(file_size / chunk_size)`` chunks; chunk ``i`` covers bytes
``[i * chunk_size, min((i + 1) * chunk_size, file_size))``. An empty file has no
chunks. Sets of chunk indexes travel as sorted half-open ranges ``[start, end)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = [
    "ChunkSet",
    "chunk_length",
    "chunk_offset",
    "count_chunks",
    "indexes_in",
    "ranges_of",
]


def count_chunks(file_size: int, chunk_size: int) -> int:
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    return -(-file_size // chunk_size)


def chunk_offset(index: int, chunk_size: int) -> int:
    return index * chunk_size


def chunk_length(index: int, file_size: int, chunk_size: int) -> int:
    """Bytes in chunk ``index`` (0 if the index is past the end)."""
    return max(0, min(chunk_size, file_size - index * chunk_size))


def ranges_of(indexes: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged half-open ranges covering ``indexes``."""
    ranges: list[tuple[int, int]] = []
    for i in sorted(set(indexes)):
        if ranges and ranges[-1][1] == i:
            ranges[-1] = (ranges[-1][0], i + 1)
        else:
            ranges.append((i, i + 1))
    return ranges


def indexes_in(ranges: Iterable[tuple[int, int]]) -> Iterator[int]:
    for start, end in ranges:
        yield from range(start, end)


class ChunkSet:
    """Which of ``total`` chunks are held, as a bitmap (one bit per chunk)."""

    __slots__ = ("_bits", "_count", "total")

    def __init__(self, total: int, held: Iterable[int] = ()) -> None:
        self.total = total
        self._bits = bytearray(-(-total // 8))
        self._count = 0
        for i in held:
            self.add(i)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self.total:
            return False
        return bool(self._bits[index >> 3] & (1 << (index & 7)))

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        return (i for i in range(self.total) if i in self)

    def add(self, index: int) -> bool:
        """Mark ``index`` held; return False if it already was."""
        if not 0 <= index < self.total:
            raise IndexError(f"chunk {index} is not in 0..{self.total - 1}")
        byte, bit = index >> 3, 1 << (index & 7)
        if self._bits[byte] & bit:
            return False
        self._bits[byte] |= bit
        self._count += 1
        return True

    @property
    def complete(self) -> bool:
        return self._count == self.total

    def missing(self) -> list[int]:
        return [i for i in range(self.total) if i not in self]

    def missing_ranges(self) -> list[tuple[int, int]]:
        return ranges_of(self.missing())

    def first_missing(self) -> int | None:
        return next((i for i in range(self.total) if i not in self), None)

    def bytes_held(self, file_size: int, chunk_size: int) -> int:
        held = self._count * chunk_size
        last = self.total - 1
        if self._count and last in self:
            held -= chunk_size - chunk_length(last, file_size, chunk_size)
        return held
