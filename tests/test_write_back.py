"""A part file's data are written back to disk as chunks land, so the fsync before the
file is placed has little left to write; the guarantees stay: the file is placed only
after a full fsync, and a write-back that failed fails the placement.

The write-back (``fdatasync``) is the real one, watched through a wrapper that notes
how many bytes had landed when each began."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from roomdrop import storage
from roomdrop.storage import PARTS_DIR, ContentKey, PartFile

MiB = 1024 * 1024
CHUNK = 64 * 1024


def content(size: int) -> bytes:
    return os.urandom(size)


def key_of(data: bytes) -> ContentKey:
    return ContentKey(hashlib.sha256(data).hexdigest(), len(data), CHUNK)


def write_all(part: PartFile, data: bytes) -> None:
    for index in range(0, len(data), CHUNK):
        assert part.write_chunk(index // CHUNK, data[index : index + CHUNK])


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every write-back: the bytes the part file held when it began, and its thread."""
    seen: list[dict[str, Any]] = []
    real = storage._datasync
    parts: list[PartFile] = []
    real_init = PartFile.__init__

    def init(self: PartFile, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        parts.append(self)

    def datasync(fd: int) -> None:
        held = next(p.bytes_held() for p in parts if p._fd == fd)
        seen.append({"held": held, "thread": threading.current_thread().name})
        real(fd)

    monkeypatch.setattr(storage, "_datasync", datasync)
    monkeypatch.setattr(PartFile, "__init__", init)
    return seen


def test_data_are_written_back_as_they_land_not_all_at_the_end(
    tmp_path: Path, syncs: list[dict[str, Any]]
) -> None:
    data = content(64 * MiB + 12345)
    part = PartFile.open(tmp_path, "big.bin", key_of(data))
    first = 20 * MiB
    write_all(part, data[:first])
    job = part._sync_job
    assert job is not None  # begun at 16 MiB, while chunks go on landing
    job.result()
    assert len(syncs) == 1 and 16 * MiB <= syncs[0]["held"] <= first, syncs
    assert syncs[0]["thread"].startswith("roomdrop-write-back")
    for index in range(first, len(data), CHUNK):
        assert part.write_chunk(index // CHUNK, data[index : index + CHUNK])
    assert part.verify() == key_of(data).sha256
    placed = part.place("big.bin")
    assert placed.read_bytes() == data
    assert not list((tmp_path / PARTS_DIR).iterdir())
    # one write-back begun per 16 MiB landed, at most one at a time, each in the
    # write-back thread; the fsync before placing waited for the last one
    assert 2 <= len(syncs) <= 4, syncs
    assert all(s["thread"].startswith("roomdrop-write-back") for s in syncs)
    assert part._sync_job is None
    assert part.final_sync_s is not None and part.final_sync_s >= 0


def test_a_small_file_is_only_synced_when_placed(
    tmp_path: Path, syncs: list[dict[str, Any]]
) -> None:
    data = content(3 * MiB)
    part = PartFile.open(tmp_path, "small.bin", key_of(data))
    write_all(part, data)
    part.verify()
    assert part.place("small.bin").read_bytes() == data
    assert syncs == []
    assert part.final_sync_s is not None


def test_a_write_back_that_failed_fails_the_placement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fdatasync the kernel may call the next fsync clean although data
    were lost: the error is kept and the file is not placed."""

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(storage, "_datasync", failing)
    data = content(40 * MiB)
    part = PartFile.open(tmp_path, "f.bin", key_of(data))
    write_all(part, data)
    assert part.verify() == key_of(data).sha256
    with pytest.raises(OSError) as raised:
        part.place("f.bin")
    assert raised.value.errno == errno.EIO
    assert not (tmp_path / "f.bin").exists()
    part.close()
    # the part file and its record stay for a later try; the record claims what it held
    assert sorted(p.name for p in (tmp_path / PARTS_DIR).iterdir()) == [
        "f.bin.part",
        "f.bin.part.jsonl",
    ]


def test_closing_waits_for_a_write_back_under_way(tmp_path: Path) -> None:
    data = content(20 * MiB)
    part = PartFile.open(tmp_path, "f.bin", key_of(data))
    write_all(part, data)
    part.close()  # no write-back left syncing a closed (or reused) descriptor
    assert part._sync_job is None
    again = PartFile.open(tmp_path, "f.bin", key_of(data))
    try:
        assert again.held.complete  # every chunk the record claims is there
        assert again.verify() == key_of(data).sha256
    finally:
        again.close()
