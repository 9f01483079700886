"""The plan's error table against a real ``roomdrop serve``: a receiver or a sender drops
and comes back (or does not), a transfer goes idle or expires, the server shuts down, a
receiver stops reading (closed as too slow, 4408, and logged)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from roomdrop.protocol.frames import Chunk, decode_frame, encode_frames
from server.conftest import CHUNK, Client, Server, names


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # what the server does about parties that drop or stop reading is the same for sealed and
    # clear chunks: a server that allows clear transfers
    return {"ROOMDROP_REQUIRE_E2E": "false"}


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


# --- a peer that does not read ---------------------------------------------------------


async def deaf(server: Server, room: str, user: str) -> ClientConnection:
    """A participant whose socket takes almost nothing: a 4 KiB receive buffer, a queue of
    one message, no pings of its own. It reads only when the test calls ``recv``."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws = await connect(
        server.ws_url(room, server.token(user)),
        sock=sock,
        compression=None,
        max_queue=1,
        ping_interval=None,
        open_timeout=5,
    )
    assert json.loads(await ws.recv())["type"] == "room-state"
    return ws


async def logged(server: Server, text: str, timeout: float) -> str:
    """The first line of the server's log containing ``text``, waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.log().splitlines() if text in line]
        if lines:
            return lines[0]
        assert time.monotonic() < deadline, f"the server never logged {text!r} in {timeout} s"
        await asyncio.sleep(0.05)


async def read_to_the_close(ws: ClientConnection, timeout: float = 20) -> None:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()


async def deaf_receiver(
    server: Server, source: Source
) -> tuple[Client, ClientConnection, str, asyncio.Task[None]]:
    """A transfer relayed from alice (the task that sends its chunks) to a receiver that
    has stopped reading."""
    room, alice, bob = names("room", "alice", "bob")
    a = await server.connect(room, alice)
    ws = await deaf(server, room, bob)
    await a.recv("user-joined")
    tid = await a.offer(bob, size=len(source.data), sha256=source.sha256)
    while json.loads(await ws.recv())["type"] != "file-share-offer":
        pass
    await ws.send(json.dumps({"type": "file-share-accept", "payload": {"transfer_id": tid}}))
    await a.recv("file-share-accept")

    async def pump() -> None:
        for frame in source.frames(tid, range(source.total)):
            await a.send_raw(frame)

    return a, ws, tid, server.spawn(pump())


async def test_a_receiver_that_stops_reading_is_closed_with_4408_and_it_is_logged(
    start_server: Any,
) -> None:
    server = await start_server(ROOMDROP_SEND_TIMEOUT="1")
    a, ws, tid, pump = await deaf_receiver(server, Source(200))
    try:
        bob = f"user={a.user.replace('alice', 'bob')}"
        line = await logged(server, f"{bob} with 4408", timeout=15)
        pump.cancel()
        assert f"room={a.room}" in line and "it took nothing for 1 s" in line, line
        assert '"level": "warning"' in line, line
        await read_to_the_close(ws)  # it reads again: all that was on its way, then the close
        assert ws.close_code == 4408, (ws.close_code, ws.close_reason)
        assert ws.close_reason == "too slow to read its messages"
        assert (await a.recv("user-left"))["payload"]["user_id"] == a.user.replace("alice", "bob")
        pause = await a.recv("file-share-pause")
        assert pause["payload"]["transfer_id"] == tid
        assert len([x for x in server.log().splitlines() if f"{bob} with 4408" in x]) == 1
    finally:
        ws.transport.abort()
        a.drop()  # the refusals of what it sent after the pause pile up unread


async def test_a_receiver_that_never_reads_again_is_dropped_after_the_close_wait(
    start_server: Any,
) -> None:
    server = await start_server(ROOMDROP_SEND_TIMEOUT="1")
    a, ws, tid, pump = await deaf_receiver(server, Source(200))
    bob = a.user.replace("alice", "bob")
    try:
        await logged(server, f"user={bob} with 4408", timeout=15)
        pump.cancel()
        closing = time.monotonic()
        # the close frame cannot go out (nothing is read); within the close wait (5 s) the
        # server drops the connection instead of keeping it for ever
        assert (await a.recv("user-left", timeout=10))["payload"]["user_id"] == bob
        assert time.monotonic() - closing < 8
        assert (await server.transfer(a.room, a.user, tid))["status"] == "paused"
        await read_to_the_close(ws)
        assert ws.close_code == 1006  # nothing could reach it: not even the close frame
    finally:
        ws.transport.abort()
        a.drop()  # the refusals of what it sent after the pause pile up unread


async def test_a_socket_with_a_thousand_control_messages_waiting_is_closed_with_4408(
    start_server: Any,
) -> None:
    server = await start_server(ROOMDROP_CONTROL_RATE="100000", ROOMDROP_CONTROL_BURST="100000")
    room, alice, bob = names("room", "alice", "bob")
    a = await server.connect(room, alice)
    ws = await deaf(server, room, bob)
    try:
        await a.recv("user-joined")
        for i in range(2000):  # 20 MB of signalling: it fills every buffer on the way
            await a.send("ice-candidate", {"target_id": bob, "candidate": "x" * 10_000, "i": i})
        line = await logged(server, f"user={bob} with 4408", timeout=15)
        assert f"room={room}" in line and "1000 control messages wait for it" in line, line
        await read_to_the_close(ws)
        assert ws.close_code == 4408, (ws.close_code, ws.close_reason)
        assert (await a.recv("user-left"))["payload"]["user_id"] == bob
    finally:
        ws.transport.abort()
        a.drop()  # the refusals of what it sent after the pause pile up unread
