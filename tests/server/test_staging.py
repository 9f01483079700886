"""Relay staging: encrypted at rest, FIFO, bounded by its window, cleaned up promptly."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
import tracemalloc
from pathlib import Path

import pytest

from roomdrop.exceptions import RoomdropError, StorageError
from roomdrop.server.staging import NONCE_SIZE, RelayClosed, RelayStaging

TID = "6f1c2d3e-4a5b-4c6d-8e7f-901234567890"
CHUNK = 64 * 1024
BLOCKED = 0.05  # seconds: long enough to see that something does not complete


def chunk(index: int, size: int = CHUNK) -> bytes:
    """A recognisable chunk: its index, then a repeating pattern."""
    head = f"chunk {index:08d} ".encode()
    body = bytes(range(256)) * (size // 256 + 1)
    return (head + body)[:size]


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "relay"


async def test_many_chunks_come_back_byte_for_byte(root: Path) -> None:
    staging = RelayStaging(root, TID, window=8)
    sent = {i: os.urandom(CHUNK if i % 7 else 1000) for i in range(100)}

    async def produce() -> None:
        for i, data in sent.items():
            assert await staging.put(i, data)

    producer = asyncio.create_task(produce())
    received = dict([await staging.take() for _ in sent])
    await producer
    assert received == sent
    assert staging.staged() == 0
    await staging.close()


async def test_chunks_come_out_oldest_first_whatever_their_index(root: Path) -> None:
    staging = RelayStaging(root, TID)
    order = [5, 0, 9, 3, 1]
    for i in order:
        await staging.put(i, chunk(i, 100))
    assert staging.staged() == len(order)
    assert [(await staging.take())[0] for _ in order] == order
    await staging.close()


async def test_putting_a_chunk_that_is_already_staged_does_nothing(root: Path) -> None:
    staging = RelayStaging(root, TID, window=2)
    assert await staging.put(4, b"first")
    assert not await staging.put(4, b"second")
    assert staging.staged() == 1
    assert await staging.take() == (4, b"first")
    assert await staging.put(4, b"again")  # taken, so it may be staged again
    assert await staging.take() == (4, b"again")
    await staging.close()


async def test_a_duplicate_put_returns_at_once_even_when_the_window_is_full(root: Path) -> None:
    staging = RelayStaging(root, TID, window=1)
    await staging.put(0, b"x")
    assert not await asyncio.wait_for(staging.put(0, b"x"), BLOCKED)
    await staging.close()


async def test_a_put_beyond_the_window_waits_until_a_take_frees_a_slot(root: Path) -> None:
    staging = RelayStaging(root, TID, window=2)
    assert await asyncio.wait_for(staging.put(0, chunk(0)), BLOCKED)
    assert await asyncio.wait_for(staging.put(1, chunk(1)), BLOCKED)
    third = asyncio.create_task(staging.put(2, chunk(2)))
    done, _ = await asyncio.wait({third}, timeout=BLOCKED)
    assert not done, "the third put completed with the window full"
    assert staging.staged() == 2

    assert await staging.take() == (0, chunk(0))
    assert await asyncio.wait_for(third, BLOCKED)
    assert staging.staged() == 2
    assert [(await staging.take())[0] for _ in range(2)] == [1, 2]
    await staging.close()


async def test_a_take_waits_until_a_chunk_is_staged(root: Path) -> None:
    staging = RelayStaging(root, TID)
    taker = asyncio.create_task(staging.take())
    done, _ = await asyncio.wait({taker}, timeout=BLOCKED)
    assert not done
    await staging.put(7, b"late")
    assert await asyncio.wait_for(taker, BLOCKED) == (7, b"late")
    await staging.close()


async def test_the_staging_directory_is_private_to_the_server(root: Path) -> None:
    staging = RelayStaging(root, TID)
    assert staging.directory == root / TID
    assert stat.S_IMODE(staging.directory.stat().st_mode) == 0o700
    await staging.close()


async def test_what_is_on_disk_is_neither_the_plaintext_nor_the_key(root: Path) -> None:
    staging = RelayStaging(root, TID, window=4)
    key = staging._key
    assert len(key) == 32
    plain = [chunk(i) for i in range(4)]
    for i, data in enumerate(plain):
        await staging.put(i, data)
    assert files_under(root) == [staging.ring]
    ring = staging.ring.read_bytes()
    assert key not in ring
    for data in plain:
        assert data[:64] not in ring
        assert data[-64:] not in ring
    nonces = {ring[staging.slot_offset(i) :][:NONCE_SIZE] for i in range(4)}
    assert len(nonces) == 4, "every chunk has its own nonce"
    await staging.close()


async def test_the_same_chunk_twice_is_stored_as_different_ciphertext(root: Path) -> None:
    staging = RelayStaging(root, TID)
    await staging.put(0, chunk(0))
    first = files_under(root)[0].read_bytes()
    await staging.take()
    await staging.put(0, chunk(0))
    assert files_under(root)[0].read_bytes() != first
    await staging.close()


async def test_each_transfer_has_its_own_key(root: Path) -> None:
    a = RelayStaging(root, TID)
    b = RelayStaging(root, "another-transfer")
    assert a._key != b._key
    await a.close()
    await b.close()


async def test_a_taken_chunk_leaves_nothing_on_disk(root: Path) -> None:
    staging = RelayStaging(root, TID)
    await staging.put(0, chunk(0))
    assert staging.ring.stat().st_size > CHUNK
    await staging.take()
    assert [path.stat().st_size for path in files_under(root)] == [0]
    await staging.close()


async def test_with_trim_after_a_drained_ring_is_truncated_once_it_stayed_empty(
    root: Path,
) -> None:
    staging = RelayStaging(root, TID, trim_after=0.1)
    await staging.put(0, chunk(0))
    await staging.take()
    assert staging.ring.stat().st_size > CHUNK, "not at once: the next chunk may come soon"
    await asyncio.sleep(0.05)
    await staging.put(1, chunk(1))  # came soon: the trim is off
    await asyncio.sleep(0.1)
    assert staging.ring.stat().st_size > CHUNK
    await staging.take()
    await asyncio.sleep(0.15)
    assert [path.stat().st_size for path in files_under(root)] == [0]
    await staging.close()


async def test_closing_cancels_a_pending_trim(root: Path) -> None:
    staging = RelayStaging(root, TID, trim_after=0.05)
    await staging.put(0, chunk(0))
    await staging.take()
    await staging.close()
    await asyncio.sleep(0.1)  # the trim must not touch the closed descriptor
    assert not staging.directory.exists()


async def test_a_tampered_staged_chunk_fails_with_a_storage_error_naming_the_transfer(
    root: Path,
) -> None:
    staging = RelayStaging(root, TID)
    await staging.put(0, chunk(0))
    await staging.put(1, chunk(1))
    flip_byte(staging.ring, staging.slot_offset(0) + NONCE_SIZE + 1000)

    with pytest.raises(StorageError) as caught:
        await staging.take()
    assert caught.value.transfer_id == TID
    assert TID in str(caught.value) and "chunk 0" in str(caught.value)
    assert await staging.take() == (1, chunk(1)), "the next chunk is still fine"
    await staging.close()


@pytest.mark.parametrize("keep", [0, NONCE_SIZE + 10, NONCE_SIZE + CHUNK])
async def test_a_truncated_staged_chunk_fails_with_a_storage_error(root: Path, keep: int) -> None:
    staging = RelayStaging(root, TID)
    await staging.put(0, chunk(0))
    os.truncate(staging.ring, staging.slot_offset(0) + keep)
    with pytest.raises(StorageError, match=TID):
        await staging.take()
    assert staging.staged() == 0
    await staging.close()


async def test_a_chunk_copied_into_another_index_slot_does_not_decrypt(root: Path) -> None:
    staging = RelayStaging(root, TID)
    await staging.put(0, chunk(0))
    await staging.put(1, chunk(1))
    sealed = staging.ring.read_bytes()[staging.slot_offset(0) :][: NONCE_SIZE + CHUNK + 16]
    with staging.ring.open("r+b") as ring:
        ring.seek(staging.slot_offset(1))
        ring.write(sealed)
    assert await staging.take() == (0, chunk(0))
    with pytest.raises(StorageError, match="chunk 1"):
        await staging.take()
    await staging.close()


async def test_a_failed_take_frees_its_slot_so_the_sender_may_send_it_again(root: Path) -> None:
    staging = RelayStaging(root, TID, window=1)
    await staging.put(0, chunk(0))
    with staging.ring.open("r+b") as ring:
        ring.write(b"garbage" * 10)
    with pytest.raises(StorageError):
        await staging.take()
    assert await asyncio.wait_for(staging.put(0, chunk(0)), BLOCKED)
    assert await staging.take() == (0, chunk(0))
    await staging.close()


async def test_close_removes_every_staged_file_and_the_directory(root: Path) -> None:
    staging = RelayStaging(root, TID, window=8)
    for i in range(5):
        await staging.put(i, chunk(i))
    await staging.close()
    assert not staging.directory.exists()
    assert list(root.iterdir()) == []
    assert staging.staged() == 0
    await staging.close()  # twice is fine


async def test_close_wakes_a_waiting_put_and_a_waiting_take_with_relay_closed(
    root: Path,
) -> None:
    full = RelayStaging(root, TID, window=1)
    await full.put(0, b"x")
    waiting_put = asyncio.create_task(full.put(1, b"y"))
    empty = RelayStaging(root, "empty-transfer")
    waiting_take = asyncio.create_task(empty.take())
    done, _ = await asyncio.wait({waiting_put, waiting_take}, timeout=BLOCKED)
    assert not done

    await full.close()
    await empty.close()
    with pytest.raises(RelayClosed) as put_error:
        await asyncio.wait_for(waiting_put, BLOCKED)
    with pytest.raises(RelayClosed):
        await asyncio.wait_for(waiting_take, BLOCKED)
    assert put_error.value.transfer_id == TID
    assert isinstance(put_error.value, RoomdropError)
    assert "closed" in str(put_error.value)


async def test_close_wakes_every_waiter_not_just_one(root: Path) -> None:
    staging = RelayStaging(root, TID)
    takers = [asyncio.create_task(staging.take()) for _ in range(3)]
    await asyncio.sleep(0)
    await staging.close()
    results = await asyncio.wait_for(asyncio.gather(*takers, return_exceptions=True), BLOCKED)
    assert all(isinstance(r, RelayClosed) for r in results)


async def test_put_and_take_after_close_raise_relay_closed(root: Path) -> None:
    staging = RelayStaging(root, TID)
    await staging.put(0, b"x")
    await staging.close()
    with pytest.raises(RelayClosed):
        await staging.put(1, b"y")
    with pytest.raises(RelayClosed):
        await staging.take()


async def test_close_is_fine_when_the_directory_was_already_purged(root: Path) -> None:
    staging = RelayStaging(root, TID)
    await staging.put(0, b"x")
    assert RelayStaging.purge(root) == 1
    await staging.close()
    assert not staging.directory.exists()


async def test_a_staging_purged_under_its_feet_works_until_closed_and_leaves_nothing(
    root: Path,
) -> None:
    staging = RelayStaging(root, TID)
    RelayStaging.purge(root)
    assert await staging.put(0, b"x")
    assert await staging.take() == (0, b"x")
    await staging.close()
    assert files_under(root) == []


async def test_purge_removes_every_staging_directory_left_by_a_previous_process(
    root: Path,
) -> None:
    for n in range(3):
        staging = RelayStaging(root, f"transfer-{n}")
        await staging.put(0, chunk(0))  # never closed: the process "died"
    (root / "not-a-directory").write_bytes(b"")
    assert RelayStaging.purge(root) == 3
    assert [p.name for p in root.iterdir()] == ["not-a-directory"]
    assert RelayStaging.purge(root) == 0


def test_purge_of_a_missing_root_removes_nothing(tmp_path: Path) -> None:
    assert RelayStaging.purge(tmp_path / "nowhere") == 0
    assert RelayStaging.purge_older_than(tmp_path / "nowhere", time.time()) == 0


async def test_purge_never_follows_a_symlink_out_of_the_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep me")
    root.mkdir(parents=True)
    (root / "link").symlink_to(outside)
    RelayStaging(root, TID)
    assert RelayStaging.purge(root) == 1
    assert (outside / "precious").read_bytes() == b"keep me"


async def test_purge_older_than_removes_only_staging_untouched_since_then(root: Path) -> None:
    old = RelayStaging(root, "old-transfer")
    await old.put(0, chunk(0))
    fresh = RelayStaging(root, "fresh-transfer")
    await fresh.put(0, chunk(0))
    an_hour_ago = time.time() - 3600
    os.utime(old.directory, (an_hour_ago - 60, an_hour_ago - 60))

    assert RelayStaging.purge_older_than(root, an_hour_ago) == 1
    assert not old.directory.exists()
    assert fresh.directory.exists()
    assert await fresh.take() == (0, chunk(0))
    await old.close()
    await fresh.close()


async def test_a_put_or_take_counts_as_activity_for_the_one_hour_limit(root: Path) -> None:
    staging = RelayStaging(root, TID)
    an_hour_ago = time.time() - 3600
    os.utime(staging.directory, (an_hour_ago - 60, an_hour_ago - 60))
    await staging.put(0, b"x")
    assert RelayStaging.purge_older_than(root, an_hour_ago) == 0
    os.utime(staging.directory, (an_hour_ago - 60, an_hour_ago - 60))
    staging._touched = 0.0  # activity is marked at most every 5 s: pretend 5 s went by
    await staging.take()
    assert RelayStaging.purge_older_than(root, an_hour_ago) == 0
    await staging.close()


async def test_a_new_staging_of_the_same_transfer_starts_empty(root: Path) -> None:
    leftover = RelayStaging(root, TID)
    await leftover.put(0, b"undecryptable now")
    staging = RelayStaging(root, TID)
    assert [path.stat().st_size for path in files_under(root)] == [0]
    assert staging.staged() == 0
    await staging.close()


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "../x", ".hidden", "x\0y", "a" * 200])
def test_a_transfer_id_that_is_not_a_plain_name_is_refused(root: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="transfer id"):
        RelayStaging(root, bad)
    assert not root.exists() or list(root.iterdir()) == []


async def test_memory_stays_under_2_mb_while_100_mb_pass_through(root: Path) -> None:
    total = 100 * 1024 * 1024 // CHUNK
    pattern = bytes(range(256)) * (CHUNK // 256)
    staging = RelayStaging(root, TID)
    sent = hashlib.sha256()
    received = hashlib.sha256()

    async def consume() -> int:
        count = 0
        for expected in range(total):
            index, data = await staging.take()
            assert index == expected
            received.update(data)
            count += len(data)
        return count

    tracemalloc.start()
    try:
        consumer = asyncio.create_task(consume())
        for i in range(total):
            data = i.to_bytes(8, "big") + pattern[8:]
            sent.update(data)
            await staging.put(i, data)
            assert staging.staged() <= staging.window
        count = await consumer
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await staging.close()

    assert count == total * CHUNK
    assert received.digest() == sent.digest()
    assert peak < 2 * 1024 * 1024, f"peak {peak / 1024:.0f} KiB"
    print(f"relay staging: 100 MiB through put/take, tracemalloc peak {peak / 1024:.0f} KiB")
