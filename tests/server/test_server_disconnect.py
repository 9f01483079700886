"""The plan's error table against a real ``roomdrop serve``: a receiver or a sender drops
and comes back (or does not), a transfer goes idle or expires, the server shuts down."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from roomdrop.protocol.frames import Chunk, decode_frame, encode_frames
from roomdrop.server.auth import TokenAuthority

CHUNK = 64 * 1024


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    authority: TokenAuthority

    def ws_url(self, room: str, user: str) -> str:
        token = self.authority.issue(user, 600)
        return self.url.replace("http", "ws") + f"/webrtc/ws/{room}?token={token}"

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.authority.issue(user, 600)}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(**env: str) -> Server:
        secret = secrets.token_urlsafe(32)
        port = free_port()
        data_dir = tmp_path / f"data{len(started)}"
        with (tmp_path / f"server{len(started)}.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "roomdrop.cli",
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                ],
                env={**os.environ, "ROOMDROP_SECRET": secret, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(f"http://127.0.0.1:{port}", data_dir, process, TokenAuthority(secret))
        started.append(server)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("server did not start")

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=10) is not None


@asynccontextmanager
async def joined(server: Server, room: str, user: str) -> AsyncIterator[ClientConnection]:
    async with connect(server.ws_url(room, user), compression=None, max_size=None) as ws:
        assert (await next_json(ws, "room-state"))["type"] == "room-state"
        yield ws


async def next_json(ws: ClientConnection, wanted: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next text message of type ``wanted``; binary frames and other types are skipped."""
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            if isinstance(raw, str):
                message: dict[str, Any] = json.loads(raw)
                if message["type"] == wanted:
                    return message


def make_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def offer_message(tid: str, receiver: str, size: int, sha: str) -> str:
    payload = {
        "transfer_id": tid,
        "receiver_id": receiver,
        "filename": "f.bin",
        "file_size": size,
        "mime_type": "application/octet-stream",
        "chunk_size": CHUNK,
        "total_chunks": -(-size // CHUNK),
        "sha256": sha,
    }
    return json.dumps({"type": "file-share-offer", "payload": payload})


def frames_of(path: Path, tid: str, indexes: range | list[int]) -> list[bytes]:
    data = path.read_bytes()
    total = -(-len(data) // CHUNK)
    out = []
    for i in indexes:
        piece = data[i * CHUNK : (i + 1) * CHUNK]
        chunk = Chunk(tid, i, total, CHUNK, piece, hashlib.sha256(piece).hexdigest())
        out.extend(encode_frames(chunk))
    return out


async def receive_chunks(ws: ClientConnection, n: int, into: dict[int, bytes]) -> None:
    while len(into) < n:
        raw = await ws.recv()
        if isinstance(raw, bytes):
            frame = decode_frame(raw)
            assert frame.is_whole
            into[frame.chunk_index] = bytes(frame.data)


async def start_transfer(
    server: Server, alice: ClientConnection, bob: ClientConnection, src: Path, sha: str
) -> str:
    tid = str(uuid.uuid4())
    await alice.send(offer_message(tid, "bob", src.stat().st_size, sha))
    await next_json(bob, "file-share-offer")
    await bob.send(json.dumps({"type": "file-share-accept", "payload": {"transfer_id": tid}}))
    await next_json(alice, "file-share-accept")
    return tid


def status_of(server: Server, room: str, tid: str, user: str = "alice") -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/webrtc/rooms/{room}/file-transfer/{tid}/progress",
        headers=server.headers(user),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_receiver_that_drops_pauses_its_transfer_and_resumes_on_return(
    start_server: Any, tmp_path: Path
) -> None:
    server = start_server()
    src = tmp_path / "src.bin"
    sha = make_file(src, 20 * CHUNK)
    got: dict[int, bytes] = {}
    async with joined(server, "r", "alice") as alice:
        async with joined(server, "r", "bob") as bob:
            tid = await start_transfer(server, alice, bob, src, sha)
            for frame in frames_of(src, tid, range(8)):
                await alice.send(frame)
            await receive_chunks(bob, 8, got)
        pause = await next_json(alice, "file-share-pause")
        assert pause["payload"] == {"transfer_id": tid, "reason": "bob disconnected"}
        assert status_of(server, "r", tid)["status"] == "paused"

        async with connect(server.ws_url("r", "bob"), compression=None) as bob:
            state = await next_json(bob, "room-state")
            [record] = state["payload"]["transfers"]
            assert (record["transfer_id"], record["status"]) == (tid, "paused")
            resumed = await next_json(bob, "file-share-resume")
            assert resumed["payload"]["reason"] == "reconnected"
            await next_json(alice, "file-share-resume")
            missing = [[8, 20]]
            await bob.send(
                json.dumps(
                    {
                        "type": "file-share-chunk-request",
                        "payload": {"transfer_id": tid, "ranges": missing, "reason": "resume"},
                    }
                )
            )
            request = await next_json(alice, "file-share-chunk-request")
            assert request["payload"]["ranges"] == missing
            for frame in frames_of(src, tid, range(8, 20)):
                await alice.send(frame)
            await receive_chunks(bob, 20, got)
            whole = b"".join(got[i] for i in range(20))
            assert hashlib.sha256(whole).hexdigest() == sha
            await bob.send(
                json.dumps(
                    {"type": "file-share-complete", "payload": {"transfer_id": tid, "sha256": sha}}
                )
            )
            await next_json(alice, "file-share-complete")
    assert status_of(server, "r", tid)["status"] == "completed"


async def test_a_sender_that_does_not_come_back_within_the_grace_window_is_cancelled(
    start_server: Any, tmp_path: Path
) -> None:
    server = start_server(ROOMDROP_RECONNECT_GRACE="1")
    src = tmp_path / "src.bin"
    sha = make_file(src, 10 * CHUNK)
    async with joined(server, "r", "bob") as bob:
        async with joined(server, "r", "alice") as alice:
            tid = await start_transfer(server, alice, bob, src, sha)
            for frame in frames_of(src, tid, range(3)):
                await alice.send(frame)
            await receive_chunks(bob, 3, {})
        pause = await next_json(bob, "file-share-pause")
        assert pause["payload"]["reason"] == "alice disconnected"
        cancel = await next_json(bob, "file-share-cancel", timeout=5)
        assert cancel["payload"]["reason"] == "sender alice did not come back"
        assert status_of(server, "r", tid, "bob")["status"] == "cancelled"
        await asyncio.sleep(0.5)
        assert not (server.data_dir / "relay" / tid).exists()


async def test_a_sender_back_within_the_grace_window_finds_its_transfer_resumed(
    start_server: Any, tmp_path: Path
) -> None:
    server = start_server(ROOMDROP_RECONNECT_GRACE="30")
    src = tmp_path / "src.bin"
    sha = make_file(src, 4 * CHUNK)
    async with joined(server, "r", "bob") as bob:
        async with joined(server, "r", "alice") as alice:
            tid = await start_transfer(server, alice, bob, src, sha)
        await next_json(bob, "file-share-pause")
        async with connect(server.ws_url("r", "alice"), compression=None) as alice:
            state = await next_json(alice, "room-state")
            assert state["payload"]["transfers"][0]["status"] == "paused"
            await next_json(alice, "file-share-resume")
            await next_json(bob, "file-share-resume")
            assert status_of(server, "r", tid)["status"] == "active"


async def test_an_idle_transfer_is_cancelled_and_an_old_one_expires(
    start_server: Any, tmp_path: Path
) -> None:
    server = start_server(ROOMDROP_IDLE_TIMEOUT="1", ROOMDROP_EXPIRY="3")
    src = tmp_path / "src.bin"
    sha = make_file(src, 2 * CHUNK)
    async with joined(server, "r", "alice") as alice, joined(server, "r", "bob") as bob:
        idle = await start_transfer(server, alice, bob, src, sha)
        cancel = await next_json(bob, "file-share-cancel", timeout=5)
        assert cancel["payload"] == {"transfer_id": idle, "reason": "no activity for 1 s"}
        pending = str(uuid.uuid4())
        await alice.send(offer_message(pending, "bob", 2 * CHUNK, sha))
        await next_json(bob, "file-share-offer")
        expired = await next_json(alice, "file-share-error", timeout=8)
        assert expired["payload"]["transfer_id"] == pending
        assert expired["payload"]["code"] == "expired"
        assert status_of(server, "r", pending)["status"] == "failed"


async def test_shutting_down_pauses_active_transfers_and_tells_both_parties(
    start_server: Any, tmp_path: Path
) -> None:
    server = start_server()
    src = tmp_path / "src.bin"
    sha = make_file(src, 4 * CHUNK)
    async with joined(server, "r", "alice") as alice, joined(server, "r", "bob") as bob:
        tid = await start_transfer(server, alice, bob, src, sha)
        server.process.send_signal(signal.SIGTERM)
        for ws in (alice, bob):
            pause = await next_json(ws, "file-share-pause")
            assert pause["payload"] == {"transfer_id": tid, "reason": "server shutting down"}
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught
    assert server.process.wait(timeout=10) in (0, -signal.SIGTERM)
    log = (tmp_path / "server0.log").read_text()
    assert "Application shutdown complete" in log
