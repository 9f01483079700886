"""The receiver's files on a real file system: resume records, full and read-only disks.

The full-disk tests mount their own small tmpfs; scripts/test runs the suite in a private
mount namespace (``unshare --mount``), so nothing leaks to the host.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from roomdrop import FileTransferManager, StorageError
from roomdrop.storage import ContentKey, PartFile

MiB = 1024 * 1024


def write_random(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of the test's own."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65_536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def test_a_full_disk_fails_that_transfer_clearly_and_keeps_what_arrived_for_resume(
    tmp_path: Path, small_disk: Path
) -> None:
    inbox = small_disk / "inbox"
    sender = FileTransferManager(download_dir=None)
    receiver = FileTransferManager(download_dir=inbox)
    doomed_src = write_random(tmp_path / "doomed.bin", 2 * MiB)
    other_src = write_random(tmp_path / "other.bin", 256 * 1024)
    doomed = (await sender.create_offer(doomed_src, "alice", "bob", "r"))["transfer_id"]
    other = (await sender.create_offer(other_src, "alice", "bob", "r"))["transfer_id"]
    for tid in (doomed, other):
        await receiver.register_offer(sender.offer(tid), "alice", "r")
        await receiver.accept_transfer(tid)
        await sender.accept_transfer(tid)
    for i in range(10):
        await receiver.receive_chunk(doomed, i, await sender.send_chunk(doomed, i))
    for i in range(2):
        await receiver.receive_chunk(other, i, await sender.send_chunk(other, i))

    filler = fill(small_disk)
    with pytest.raises(StorageError, match=r"disk full \(writing doomed.bin.part\)"):
        await receiver.receive_chunk(doomed, 10, await sender.send_chunk(doomed, 10))
    progress = await receiver.get_progress(doomed)
    assert progress["status"] == "failed"
    assert progress["error"] == "disk full (writing doomed.bin.part)"
    assert progress["chunks_sent"] == 10
    parts = inbox / ".roomdrop-parts"
    assert (parts / "doomed.bin.part").exists() and (parts / "doomed.bin.part.jsonl").exists()

    # the other transfer is untouched, and finishes once there is room again
    assert (await receiver.get_progress(other))["status"] == "active"
    filler.unlink()
    for i in range(2, 4):
        await receiver.receive_chunk(other, i, await sender.send_chunk(other, i))
    saved = Path((await receiver.get_progress(other))["saved_path"])
    assert sha(saved) == sha(other_src)

    # a new offer of the same content, in a restarted receiver, resumes from chunk 10
    await receiver.close()
    restarted = FileTransferManager(download_dir=inbox)
    again = (await sender.create_offer(doomed_src, "alice", "bob", "r"))["transfer_id"]
    await restarted.register_offer(sender.offer(again), "alice", "r")
    await restarted.accept_transfer(again)
    await sender.accept_transfer(again)
    missing = await restarted.missing_chunks(again)
    assert missing == list(range(10, 32))
    for i in missing:
        await restarted.receive_chunk(again, i, await sender.send_chunk(again, i))
    saved = Path((await restarted.get_progress(again))["saved_path"])
    assert saved.name == "doomed.bin" and sha(saved) == sha(doomed_src)


async def test_a_file_larger_than_the_free_space_is_refused_when_accepted(
    tmp_path: Path, small_disk: Path
) -> None:
    m = FileTransferManager(download_dir=small_disk / "inbox")
    src = write_random(tmp_path / "big.bin", 4 * MiB)
    tid = (await m.create_offer(src, "a", "b", "r"))["transfer_id"]
    with pytest.raises(
        StorageError, match=r"disk full: 4194304 bytes needed, 3145728 free \(preparing big.bin"
    ):
        await m.accept_transfer(tid)
    assert (await m.get_progress(tid))["status"] == "failed"
    assert list((small_disk / "inbox").rglob("*.part*")) == []


async def test_a_read_only_download_directory_fails_the_transfer_clearly(
    tmp_path: Path, small_disk: Path
) -> None:
    (small_disk / "inbox").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    m = FileTransferManager(download_dir=small_disk / "inbox")
    src = write_random(tmp_path / "a.bin", 1000)
    tid = (await m.create_offer(src, "a", "b", "r"))["transfer_id"]
    with pytest.raises(StorageError, match="read-only file system"):
        await m.accept_transfer(tid)
    progress = await m.get_progress(tid)
    assert progress["status"] == "failed" and "read-only file system" in progress["error"]


def test_a_torn_last_record_line_is_dropped_and_the_chunk_counted_missing(tmp_path: Path) -> None:
    key = ContentKey("ab" * 32, file_size=1000, chunk_size=100)
    part = PartFile.open(tmp_path, "x.bin", key)
    for i in (0, 1, 2, 5):
        assert part.write_chunk(i, bytes([i]) * 100)
    part.close()
    record = tmp_path / ".roomdrop-parts" / "x.bin.part.jsonl"
    record.write_bytes(record.read_bytes()[:-1] + b"")  # "5\n" -> "5": torn
    again = PartFile.open(tmp_path, "renamed.bin", key)
    assert again.path == part.path  # found by content, not by name
    assert again.held.missing() == [3, 4, 5, 6, 7, 8, 9]
    assert again.write_chunk(5, b"\x05" * 100)
    again.close()
    third = PartFile.open(tmp_path, "x.bin", key)
    assert third.held.missing() == [3, 4, 6, 7, 8, 9]
    third.close()


def test_a_record_of_other_content_is_never_resumed(tmp_path: Path) -> None:
    key = ContentKey("ab" * 32, file_size=1000, chunk_size=100)
    PartFile.open(tmp_path, "x.bin", key).close()
    for other in (
        ContentKey("cd" * 32, 1000, 100),
        ContentKey("ab" * 32, 1001, 100),
        ContentKey("ab" * 32, 1000, 50),
    ):
        fresh = PartFile.open(tmp_path, "x.bin", other)
        assert fresh.path.name != "x.bin.part" and len(fresh.held) == 0
        fresh.close()
