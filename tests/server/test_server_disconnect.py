"""The plan's error table against a real ``roomdrop serve``: a receiver or a sender drops
and comes back (or does not), a transfer goes idle or expires, the server shuts down."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from typing import Any

from roomdrop.protocol.frames import Chunk, decode_frame, encode_frames
from server.conftest import CHUNK, Client, Server, names


class Source:
    """A random file of ``chunks`` chunks, kept in memory (it is small)."""

    def __init__(self, chunks: int) -> None:
        self.data = os.urandom(chunks * CHUNK)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.total = chunks

    def frames(self, tid: str, indexes: range) -> list[bytes]:
        out: list[bytes] = []
        for i in indexes:
            piece = self.data[i * CHUNK : (i + 1) * CHUNK]
            chunk = Chunk(tid, i, self.total, CHUNK, piece, hashlib.sha256(piece).hexdigest())
            out.extend(encode_frames(chunk))
        return out


async def start(server: Server, source: Source) -> tuple[Client, Client, str, str]:
    room, alice, bob = names("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob, size=len(source.data), sha256=source.sha256)
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    return a, b, tid, room


async def receive(client: Client, n: int, into: dict[int, bytes]) -> None:
    while len(into) < n:
        frame = decode_frame(await client.recv_frame())
        into[frame.chunk_index] = bytes(frame.data)


async def test_a_receiver_that_drops_pauses_its_transfer_and_resumes_on_return(
    server: Server,
) -> None:
    source = Source(20)
    a, b, tid, room = await start(server, source)
    got: dict[int, bytes] = {}
    for frame in source.frames(tid, range(8)):
        await a.send_raw(frame)
    await receive(b, 8, got)
    await b.close()
    pause = await a.recv("file-share-pause")
    assert pause["payload"] == {"transfer_id": tid, "reason": f"{b.user} disconnected"}
    assert (await server.transfer(room, a.user, tid))["status"] == "paused"

    back = await server.connect(room, b.user, room_state=False)
    state = await back.recv("room-state")
    [record] = state["payload"]["transfers"]
    assert (record["transfer_id"], record["status"]) == (tid, "paused")
    assert (await back.recv("file-share-resume"))["payload"]["reason"] == "reconnected"
    await a.recv("file-share-resume")
    missing = [[8, 20]]
    request = {"transfer_id": tid, "ranges": missing, "reason": "resume"}
    await back.send("file-share-chunk-request", request)
    assert (await a.recv("file-share-chunk-request"))["payload"]["ranges"] == missing
    for frame in source.frames(tid, range(8, 20)):
        await a.send_raw(frame)
    await receive(back, 20, got)
    assert hashlib.sha256(b"".join(got[i] for i in range(20))).hexdigest() == source.sha256
    await back.send("file-share-complete", {"transfer_id": tid, "sha256": source.sha256})
    await a.recv("file-share-complete")
    assert (await server.transfer(room, a.user, tid))["status"] == "completed"


async def test_a_sender_that_does_not_come_back_within_the_grace_window_is_cancelled(
    start_server: Any,
) -> None:
    server = await start_server(ROOMDROP_RECONNECT_GRACE="1")
    source = Source(10)
    a, b, tid, room = await start(server, source)
    for frame in source.frames(tid, range(3)):
        await a.send_raw(frame)
    await receive(b, 3, {})
    await a.close()
    assert (await b.recv("file-share-pause"))["payload"]["reason"] == f"{a.user} disconnected"
    cancel = await b.recv("file-share-cancel")
    assert cancel["payload"]["reason"] == f"sender {a.user} did not come back"
    assert (await server.transfer(room, b.user, tid))["status"] == "cancelled"
    assert not (server.data_dir / "relay" / tid).exists()


async def test_a_sender_back_within_the_grace_window_finds_its_transfer_resumed(
    server: Server,
) -> None:
    a, b, tid, room = await start(server, Source(4))
    await a.close()
    await b.recv("file-share-pause")
    back = await server.connect(room, a.user, room_state=False)
    state = await back.recv("room-state")
    assert state["payload"]["transfers"][0]["status"] == "paused"
    await back.recv("file-share-resume")
    await b.recv("file-share-resume")
    assert (await server.transfer(room, a.user, tid))["status"] == "active"


async def test_an_idle_transfer_is_cancelled_and_an_old_one_expires(start_server: Any) -> None:
    server = await start_server(ROOMDROP_IDLE_TIMEOUT="1", ROOMDROP_EXPIRY="3")
    source = Source(2)
    a, b, idle, room = await start(server, source)
    cancel = await b.recv("file-share-cancel")
    assert cancel["payload"] == {"transfer_id": idle, "reason": "no activity for 1 s"}
    pending = await a.offer(b.user, size=len(source.data), sha256=source.sha256)
    await b.recv("file-share-offer")
    expired = await a.recv("file-share-error", timeout=8)
    assert expired["payload"]["transfer_id"] == pending
    assert expired["payload"]["code"] == "expired"
    assert (await server.transfer(room, a.user, pending))["status"] == "failed"


async def test_shutting_down_pauses_active_transfers_and_tells_both_parties(
    start_server: Any,
) -> None:
    server = await start_server()
    a, b, tid, _room = await start(server, Source(4))
    server.stopped_by_test = True
    server.process.send_signal(signal.SIGTERM)
    for client in (a, b):
        pause = await client.recv("file-share-pause")
        assert pause["payload"] == {"transfer_id": tid, "reason": "server shutting down"}
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught
    assert await asyncio.to_thread(server.process.wait, 10) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()
