"""The hub's timers on a clock the test moves: an idle transfer is cancelled after 30 s,
a transfer older than an hour expires, and both parties are told. (The same timers run
against a real server, with short settings, in test_server_disconnect.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roomdrop.clock import ManualClock
from roomdrop.protocol.messages import Offer
from roomdrop.server.auth import TokenAuthority
from roomdrop.server.hub import Hub
from roomdrop.server.participant import Participant
from roomdrop.server.settings import Settings


class Socket:
    """Records what the hub sends; nothing else."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_text(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def send_bytes(self, data: bytes) -> None:
        raise AssertionError("no frames expected")

    async def close(self, code: int, reason: str) -> None:
        pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]


def sent(p: Participant, kind: str) -> list[dict[str, Any]]:
    socket = p.outbox.socket
    assert isinstance(socket, Socket)
    return socket.of_type(kind)


@pytest.fixture
async def timed_room(
    tmp_path: Path,
) -> AsyncIterator[tuple[Hub, ManualClock, Participant, Participant]]:
    """A hub on a manual clock with alice and bob joined, their writers running."""
    clock = ManualClock()
    # the timers are what these tests are about: clear offers, no device keys needed
    settings = Settings(data_dir=tmp_path, require_e2e=False)
    hub = Hub(settings, TokenAuthority("k" * 40), clock=clock)
    alice = await hub.join("room", "alice", Socket())
    bob = await hub.join("room", "bob", Socket())
    writers = [asyncio.create_task(p.outbox.run()) for p in (alice, bob)]
    yield hub, clock, alice, bob
    for writer in writers:
        writer.cancel()
    await asyncio.gather(*writers, return_exceptions=True)


async def offer(hub: Hub) -> str:
    tid = str(uuid.uuid4())
    body = Offer(
        transfer_id=uuid.UUID(tid),
        receiver_id="bob",
        filename="f.bin",
        file_size=1000,
        chunk_size=65_536,
        total_chunks=1,
        sha256="0" * 64,
    )
    await hub.transfers.offer("room", "alice", body)
    return tid


async def test_an_active_transfer_idle_for_30_seconds_is_cancelled_and_both_are_told(
    timed_room: tuple[Hub, ManualClock, Participant, Participant],
) -> None:
    hub, clock, alice, bob = timed_room
    tid = await offer(hub)
    await hub.transfers.accept("room", "bob", tid)
    clock.advance(29)
    await hub.sweep()
    assert (await hub.backend.get(tid)).status.value == "active"
    clock.advance(2)
    await hub.sweep()
    assert (await hub.backend.get(tid)).status.value == "cancelled"
    await asyncio.sleep(0.05)  # the writers hand the messages to the sockets
    for p in (alice, bob):
        [cancel] = sent(p, "file-share-cancel")
        assert cancel["payload"] == {"transfer_id": tid, "reason": "no activity for 30 s"}


async def test_a_transfer_older_than_an_hour_expires_and_both_are_told(
    timed_room: tuple[Hub, ManualClock, Participant, Participant],
) -> None:
    hub, clock, alice, bob = timed_room
    tid = await offer(hub)  # pending: waiting for bob, who is thinking it over
    clock.advance(3599)
    await hub.sweep()
    assert (await hub.backend.get(tid)).status.value == "pending"
    clock.advance(2)
    await hub.sweep()
    record = await hub.backend.get(tid)
    assert (record.status.value, record.error_code) == ("failed", "expired")
    await asyncio.sleep(0.05)
    for p in (alice, bob):
        [error] = sent(p, "file-share-error")
        assert error["payload"] == {
            "transfer_id": tid,
            "code": "expired",
            "message": "expired after 3600 s",
        }


async def test_a_participant_back_before_its_disconnect_pause_settled_is_resumed(
    timed_room: tuple[Hub, ManualClock, Participant, Participant],
) -> None:
    """The pause a disconnect causes runs as a task; a reconnect that comes before that
    task ran must still end with the transfer active again (seen with dropped sockets)."""
    hub, _, alice, bob = timed_room
    tid = await offer(hub)
    await hub.transfers.accept("room", "bob", tid)
    await hub.leave(alice)
    back = await hub.join("room", "alice", Socket())  # before the pause task had a chance to run
    writer = asyncio.create_task(back.outbox.run())
    try:
        await asyncio.sleep(0.05)
        assert (await hub.backend.get(tid)).status.value == "active"
        reasons = [m["payload"].get("reason") for m in sent(bob, "file-share-pause")]
        assert reasons == ["alice disconnected"]
        assert [m["payload"]["reason"] for m in sent(bob, "file-share-resume")] == ["reconnected"]
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
