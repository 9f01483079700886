"""The backend contract, one set of behaviour tests run against both implementations: the
in-memory default and Redis (a real redis-server, a key prefix per test). The hub relies
on exactly this; tests/server/test_instances.py checks what only a shared backend does
(several instances at once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from redistools import RedisServer
from roomdrop.clock import ManualClock
from roomdrop.exceptions import (
    FileTooLarge,
    IntegrityError,
    InvalidTransition,
    ProtocolError,
    TooManyTransfers,
    UnknownTransfer,
)
from roomdrop.protocol.messages import Offer
from roomdrop.protocol.state import Event, Status
from roomdrop.server.backend import Backend
from roomdrop.server.memorybackend import MemoryBackend
from roomdrop.server.redisbackend import RedisBackend
from roomdrop.server.redisbackend.records import STORED_SWEEP_EVERY
from roomdrop.server.settings import Settings

CHUNK = 64 * 1024
SHA = "a" * 64


class Deliveries:
    """An Inbound that records what it is handed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def to_user(self, room_id: str, user_id: str, text: str) -> None:
        self.seen.append(("user", room_id, user_id, text))

    def to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        self.seen.append(("room", room_id, text, exclude or ""))

    def replaced(self, room_id: str, user_id: str, conn_id: str) -> None:
        self.seen.append(("replaced", room_id, user_id, conn_id))

    def relay_ready(self, room_id: str, user_id: str, transfer_id: str) -> None:
        self.seen.append(("relay", room_id, user_id, transfer_id))

    def transfer_changed(self, transfer_id: str) -> None:
        self.seen.append(("changed", transfer_id))


@pytest.fixture(params=["memory", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Backend, ManualClock]]:
    clock = ManualClock()
    settings = Settings(
        data_dir=tmp_path,
        max_file_size=100 * CHUNK,
        max_transfers_per_user=2,
        max_transfers_per_room=3,
        idle_timeout=30,
        expiry=3600,
    )
    if request.param == "memory":
        impl: Backend = MemoryBackend(settings, clock)
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        shared = settings.model_copy(
            update={"redis_url": redis.url, "redis_prefix": redis.prefix()}
        )
        impl = RedisBackend(shared, "s" * 40, clock=clock)
    await impl.start(Deliveries())
    yield impl, clock
    await impl.close()


def offer(receiver: str = "bob", size: int = 3 * CHUNK, tid: str | None = None) -> Offer:
    return Offer(
        transfer_id=uuid.UUID(tid) if tid else uuid.uuid4(),
        receiver_id=receiver,
        filename="../notes.txt",
        file_size=size,
        chunk_size=CHUNK,
        total_chunks=-(-size // CHUNK),
        sha256=SHA,
    )


async def test_a_record_is_created_pending_with_a_safe_name_and_read_back(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, _ = backend
    made = await b.create(offer(), "alice", "room")
    assert (made.status, made.filename, made.sender_id) == (Status.PENDING, "notes.txt", "alice")
    got = await b.get(made.transfer_id)
    assert got.snapshot() == made.snapshot()
    assert b.peek(made.transfer_id) is got
    with pytest.raises(UnknownTransfer):
        await b.get(str(uuid.uuid4()))
    with pytest.raises(ProtocolError, match="already known"):
        await b.create(offer(tid=made.transfer_id), "alice", "room")


async def test_the_limits_refuse_with_their_own_messages(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, _ = backend
    with pytest.raises(FileTooLarge):
        await b.create(offer(size=101 * CHUNK), "alice", "room")
    await b.create(offer("bob"), "alice", "room")
    await b.create(offer("carol"), "alice", "room")
    with pytest.raises(TooManyTransfers, match="alice already has 2 transfers under way"):
        await b.create(offer("dave"), "alice", "room")
    await b.create(offer("erin"), "dave", "room")
    with pytest.raises(TooManyTransfers, match="room room already has 3 transfers under way"):
        await b.create(offer("frank"), "gina", "room")
    first = (await b.records(user="alice"))[0]
    await b.apply(first.transfer_id, Event.CANCEL, error="no")  # an ended one frees its place
    await b.create(offer("frank"), "gina", "room")


async def test_status_changes_go_through_the_state_table(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, clock = backend
    tid = (await b.create(offer(), "alice", "room")).transfer_id
    with pytest.raises(InvalidTransition):
        await b.apply(tid, Event.PAUSE)
    clock.advance(1)
    active = await b.apply(tid, Event.ACCEPT)
    assert active.status is Status.ACTIVE and active.started_at
    assert (await b.apply(tid, Event.PAUSE)).status is Status.PAUSED
    assert (await b.apply(tid, Event.RESUME)).status is Status.ACTIVE
    with pytest.raises(IntegrityError):
        await b.apply(tid, Event.COMPLETE, sha256="b" * 64)
    done = await b.apply(tid, Event.COMPLETE, sha256=SHA)
    assert (done.status, done.bytes_transferred, done.progress_percent) == (
        Status.COMPLETED,
        3 * CHUNK,
        100.0,
    )
    assert (await b.get(tid)).completed_at
    failed = (await b.create(offer(), "alice", "room")).transfer_id
    record = await b.apply(failed, Event.FAIL, code="storage-error", error="disk full")
    assert (record.status, record.error_code, record.error) == (
        Status.FAILED,
        "storage-error",
        "disk full",
    )


async def test_progress_saved_on_one_copy_is_what_the_record_says(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, clock = backend
    tid = (await b.create(offer(), "alice", "room")).transfer_id
    record = await b.apply(tid, Event.ACCEPT)
    clock.advance(1)
    record.set_progress(2, 2 * CHUNK, mono=clock.monotonic())
    b.save_progress(record)
    # the shared record has it once the write went out (the memory one at once)
    for _ in range(100):
        if (await _stored(b, tid))["bytes_transferred"] == 2 * CHUNK:
            break
        await asyncio.sleep(0.01)
    stored = await _stored(b, tid)
    assert (stored["chunks_sent"], stored["bytes_transferred"]) == (2, 2 * CHUNK)


async def _stored(b: Backend, tid: str) -> dict[str, object]:
    """The record as a fresh reader sees it (not this instance's copy, for Redis)."""
    if isinstance(b, RedisBackend):
        b.transfers.cache.pop(tid, None)
    return (await b.get(tid)).snapshot()


async def test_the_sweep_ends_idle_and_expired_transfers_once(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, clock = backend
    idle = (await b.create(offer("bob"), "alice", "room")).transfer_id
    await b.apply(idle, Event.ACCEPT)
    old = (await b.create(offer("carol"), "dave", "room")).transfer_id
    clock.advance(31)
    [ended] = await b.sweep()
    assert (ended.transfer_id, ended.status, ended.error_code) == (
        idle,
        Status.CANCELLED,
        "inactive",
    )
    assert ended.error == "no activity for 30 s"
    clock.advance(3600)
    await _next_sweep_slot(b)
    [expired] = await b.sweep()
    assert (expired.transfer_id, expired.status, expired.error_code) == (
        old,
        Status.FAILED,
        "expired",
    )
    await _next_sweep_slot(b)
    assert await b.sweep() == []


async def _next_sweep_slot(b: Backend) -> None:
    """Redis lets one instance sweep per 0.9 s; a test does not wait for it."""
    if isinstance(b, RedisBackend):
        await b.r.delete(b.keys.k("sweep"))


async def test_records_are_found_by_party_room_and_liveness(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, _ = backend
    one = (await b.create(offer("bob"), "alice", "r1")).transfer_id
    two = (await b.create(offer("alice"), "carol", "r2")).transfer_id
    await b.apply(two, Event.REJECT, error="no thanks")
    assert {r.transfer_id for r in await b.records(user="alice")} == {one, two}
    assert [r.transfer_id for r in await b.records(user="alice", room="r2")] == [two]
    assert [r.transfer_id for r in await b.records(user="alice", live_only=True)] == [one]
    assert [r.transfer_id for r in await b.records(user="bob")] == [one]
    assert {r.transfer_id for r in await b.records()} == {one, two}
    assert (await b.get(two)).error == "no thanks"


async def test_presence_grace_windows_and_the_disconnect_mark(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, clock = backend
    assert await b.join("room", "alice", "c1") is False
    assert await b.join("room", "bob", "c2") is False
    assert await b.members("room") == ["alice", "bob"]
    assert await b.is_member("room", "bob") and not await b.is_member("room", "carol")
    assert await b.join("room", "alice", "c3") is True  # a second connection replaces c1
    assert await b.leave("room", "alice", "c1", grace=5) is False  # the old one: nothing
    assert await b.members("room") == ["alice", "bob"]
    assert await b.leave("room", "alice", "c3", grace=5) is True
    assert await b.members("room") == ["bob"]
    clock.advance(4)
    assert await b.graces_over() == []
    assert await b.join("room", "alice", "c4") is True  # back within the window
    assert await b.leave("room", "alice", "c4", grace=5) is True
    clock.advance(6)
    assert await b.graces_over() == [("room", "alice")]
    assert await b.graces_over() == []  # handed out once
    assert await b.orphans() == []

    tid = (await b.create(offer(), "alice", "room")).transfer_id
    assert await b.take_disconnect_paused(tid) is False
    await b.mark_disconnect_paused(tid)
    assert await b.take_disconnect_paused(tid) is True
    assert await b.take_disconnect_paused(tid) is False


async def test_presence_keeps_each_participants_device_key_while_they_are_in(
    backend: tuple[Backend, ManualClock],
) -> None:
    b, _clock = backend
    alice_key, bob_key, newer = "A" * 43, "B" * 42 + "A", "C" * 42 + "A"
    await b.join("room", "alice", "c1", alice_key)
    await b.join("room", "bob", "c2", bob_key)
    await b.join("room", "carol", "c3")  # no key
    assert await b.device_keys("room") == {"alice": alice_key, "bob": bob_key}
    assert await b.device_keys("elsewhere") == {}
    await b.join("room", "alice", "c4", newer)  # a second connection, another key
    assert await b.leave("room", "alice", "c1", grace=5) is False  # the old one: no change
    assert await b.device_keys("room") == {"alice": newer, "bob": bob_key}
    assert await b.leave("room", "bob", "c2", grace=5) is True
    assert await b.device_keys("room") == {"alice": newer}
    await b.join("room", "alice", "c5")  # back without a key: none is handed out
    assert await b.device_keys("room") == {}


async def test_a_kept_file_expires_after_the_store_ttl_and_redis_reads_them_once_a_minute(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The kept files can be many and their expiry is counted in days: Redis reads them
    for the sweep once a minute (at most a tenth of the TTL), not every second."""
    redis: RedisServer = request.getfixturevalue("redis_server")
    clock = ManualClock()
    settings = Settings(
        data_dir=tmp_path,
        store_ttl=86_400,
        redis_url=redis.url,
        redis_prefix=redis.prefix(),
    )
    b = RedisBackend(settings, "s" * 40, clock=clock)
    await b.start(Deliveries())
    try:
        kept = await b.create(offer().model_copy(update={"store": True}), "alice", "room")
        await b.apply(kept.transfer_id, Event.ACCEPT)
        await b.apply(kept.transfer_id, Event.STORE)
        clock.advance(86_400 - 30)
        assert await b.sweep() == []  # the kept files read: not due yet
        clock.advance(31)  # due now, but they were read 31 s ago
        await _next_sweep_slot(b)
        assert await b.sweep() == []
        clock.advance(STORED_SWEEP_EVERY - 31)
        await _next_sweep_slot(b)
        [expired] = await b.sweep()
        assert (expired.transfer_id, expired.status, expired.error_code) == (
            kept.transfer_id,
            Status.FAILED,
            "expired",
        )
    finally:
        await b.close()


async def test_the_room_a_user_was_seen_in_is_forgotten_after_the_store_ttl(
    backend: tuple[Backend, ManualClock],
) -> None:
    """Whom a file may be kept for: those seen in the room within ROOMDROP_STORE_TTL
    (7 days here). In Redis the room's hash also expires that long after its last
    write, so that the rooms nobody visits again leave nothing behind."""
    b, clock = backend
    await b.join("room", "bob", "c1", "B" * 42 + "A")
    assert await b.leave("room", "bob", "c1", grace=5) is True
    week = 7 * 86_400
    assert set(await b.seen("room", clock.time() - week)) == {"bob"}
    if isinstance(b, RedisBackend):
        left = await b.r.ttl(b.keys.k("seen", "room"))
        assert week < left <= week + 60, left
    clock.advance(week + 1)
    assert await b.seen("room", clock.time() - week) == {}
