"""The receiver's files on a real file system: resume records, full and read-only disks.

The full-disk tests mount their own small tmpfs; scripts/test runs the suite in a private
mount namespace (``unshare --mount``), so nothing leaks to the host.
"""

from __future__ import annotations

import errno
import hashlib
import json
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


# --- per-chunk digests: what the record costs, and the resume's re-verification --------


def chunk_bytes(index: int, size: int = 100) -> bytes:
    return hashlib.sha256(b"%d" % index).digest()[:1] * size


def flip(part: Path, offset: int, length: int = 4) -> None:
    with part.open("r+b") as f:
        f.seek(offset)
        block = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in block))


def test_each_chunk_written_appends_one_line_of_at_most_49_bytes_to_the_record(
    tmp_path: Path,
) -> None:
    """8,000 chunks (as many as a 500 MiB file has at 64 KiB): the record grows by one
    short line per chunk, never by a rewrite."""
    key = ContentKey("ab" * 32, file_size=8000 * 16, chunk_size=16)
    part = PartFile.open(tmp_path, "big.bin", key)
    sizes = [part.record_path.stat().st_size]
    for i in range(key.total_chunks):
        assert part.write_chunk(i, chunk_bytes(i, 16))
        if i % 1000 == 999 or i < 3:
            sizes.append(part.record_path.stat().st_size)
    part.close()
    final = part.record_path.stat().st_size
    header = sizes[0]
    assert sizes[1:4] == [header + 46, header + 92, header + 138]  # "0 <43>\n", ...
    assert final - header == 10 * 46 + 90 * 47 + 900 * 48 + 7000 * 49
    assert final < 400_000
    again = PartFile.open(tmp_path, "big.bin", key)  # compacted: the same size
    assert len(again.held) == 8000 and again.dropped_on_resume == []
    assert again.record_path.stat().st_size == final
    again.close()


def test_a_resumed_part_file_drops_the_chunks_whose_data_no_longer_match(
    tmp_path: Path,
) -> None:
    key = ContentKey("ab" * 32, file_size=1000, chunk_size=100)
    part = PartFile.open(tmp_path, "x.bin", key)
    for i in (0, 1, 2, 5, 9):
        assert part.write_chunk(i, chunk_bytes(i))
    part.close()
    flip(part.path, 1 * 100 + 40)
    flip(part.path, 9 * 100 + 96)  # the last 4 bytes of the last chunk
    again = PartFile.open(tmp_path, "x.bin", key)
    assert again.dropped_on_resume == [1, 9]
    assert sorted(again.held) == [0, 2, 5] and again.resumed_chunks == 3
    assert again.damaged(undigested=True) == []
    assert again.write_chunk(1, chunk_bytes(1))
    again.close()
    # the record was rewritten without them: they are not claimed again
    third = PartFile.open(tmp_path, "x.bin", key)
    assert third.dropped_on_resume == [] and sorted(third.held) == [0, 1, 2, 5]
    third.close()


def test_a_record_of_the_previous_format_is_resumed_on_trust(tmp_path: Path) -> None:
    """Chunks a format-1 record holds have no digest: taken as they are at the resume,
    and named by damaged(undigested=True) if the whole file turns out wrong."""
    key = ContentKey("ab" * 32, file_size=1000, chunk_size=100)
    part = PartFile.open(tmp_path, "x.bin", key)
    for i in (0, 3, 4):
        assert part.write_chunk(i, chunk_bytes(i))
    part.close()
    header = json.loads(part.record_path.read_text().partition("\n")[0])
    header["roomdrop_part"] = 1
    part.record_path.write_text(json.dumps(header) + "\n0\n3\n4\n")
    flip(part.path, 3 * 100)
    again = PartFile.open(tmp_path, "x.bin", key)
    assert again.dropped_on_resume == [] and sorted(again.held) == [0, 3, 4]
    assert again.write_chunk(7, chunk_bytes(7))
    assert again.damaged(undigested=False) == []
    assert again.damaged(undigested=True) == [0, 3, 4]
    again.drop([0, 3, 4])
    assert sorted(again.held) == [7]
    assert again.write_chunk(3, chunk_bytes(3))
    again.close()
    # the rewritten record, and the line appended to it after the drop
    third = PartFile.open(tmp_path, "x.bin", key)
    assert sorted(third.held) == [3, 7] and len(third.digests) == 2
    third.close()


def test_damaged_reads_each_held_chunk_once_in_1_mib_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ContentKey("ab" * 32, file_size=40 * 65536, chunk_size=65536)
    part = PartFile.open(tmp_path, "x.bin", key)
    for i in [*range(0, 20), *range(25, 40)]:
        assert part.write_chunk(i, chunk_bytes(i, 65536))
    part._wait_for_hashing()  # the hashing thread's own reads are not counted here
    reads: list[tuple[int, int]] = []
    real_pread = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        reads.append((offset // 65536, length // 65536))
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", pread)
    assert part.damaged(undigested=True) == []
    part.close()
    assert reads == [(0, 16), (16, 4), (25, 15)]
