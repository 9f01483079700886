"""The server relay against a real ``roomdrop serve``: a 100 MB file through the sender's
WebSocket to the receiver's, byte for byte, in bounded server memory, with its encrypted
staging gone after completion; corrupted chunks re-requested; disguised executables
refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from roomdrop.protocol.frames import Chunk, decode_frame, encode_frames, encode_json_chunk
from server.e2etools import plaintext_of, sealed_frame

if TYPE_CHECKING:
    from conftest import Client, Server

CHUNK = 64 * 1024
MiB = 1024 * 1024
BIG = 100 * MiB
RSS_MARGIN = 50 * MiB


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # the clear relay: the server checks each chunk's sha256 and sniffs the first one (the
    # sealed relay is test_relay.py's, and the 100 MB test's sealed case): a server that
    # allows clear transfers
    return {"ROOMDROP_REQUIRE_E2E": "false"}


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


def make_chunk(tid: str, index: int, total: int, data: bytes) -> Chunk:
    return Chunk(tid, index, total, CHUNK, data, hashlib.sha256(data).hexdigest())


def frame_of(chunk: Chunk) -> bytes:
    (frame,) = encode_frames(chunk)  # over the WebSocket relay, one frame per chunk
    return frame


def write_random_file(path: Path, size: int) -> str:
    """``size`` random bytes in 1 MiB blocks; their sha256, computed as they are written.
    The file starts with a fixed text so that no content sniffer sees a file type in it."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for offset in range(0, size, MiB):
            block = os.urandom(min(MiB, size - offset))
            if offset == 0:
                block = b"roomdrop relay test data\n" + block[25:]
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


async def receive_file(
    b: Client,
    target: Path,
    tid: str,
    total: int,
    progress: list[dict[str, Any]],
    sealed: bool = False,
) -> None:
    """Every chunk of ``tid`` as ``b`` gets it, verified (``sealed``: opened) and written
    at its offset in ``target``, each exactly once; the progress ``b`` is told on the way,
    into ``progress`` (any other message fails)."""
    held: set[int] = set()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while len(held) < total:
            message = await asyncio.wait_for(b.ws.recv(), 10)
            if isinstance(message, str):
                parsed = json.loads(message)
                assert parsed["type"] == "file-share-progress", parsed
                progress.append(parsed["payload"])
                continue
            frame = decode_frame(message)
            assert frame.transfer_id == tid and frame.is_whole
            assert frame.total_chunks == total and frame.chunk_size == CHUNK
            assert frame.sealed == sealed, frame
            if sealed:
                data = plaintext_of(frame)  # E2EError unless it is the sender's chunk
            else:
                assert hashlib.sha256(frame.data).hexdigest() == frame.checksum
                data = frame.data
            assert frame.chunk_index not in held, f"chunk {frame.chunk_index} twice"
            os.pwrite(fd, data, frame.chunk_index * CHUNK)
            held.add(frame.chunk_index)
    finally:
        os.close(fd)


async def accepted(
    server: Server, room: str, sender: str, receiver: str, **offer: Any
) -> tuple[Client, Client, str]:
    a, b = await server.pair(room, sender, receiver)
    tid = await a.offer(receiver, **offer)
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    await b.recv("file-share-accept")
    return a, b, tid


@pytest.mark.parametrize("mode", ["clear", "sealed"])
async def test_a_100_mb_file_is_relayed_byte_for_byte_in_bounded_server_memory(
    server: Server, tmp_path: Path, mode: str
) -> None:
    sealed = mode == "sealed"
    source, target = tmp_path / "source.bin", tmp_path / "received.bin"
    sha = await asyncio.to_thread(write_random_file, source, BIG)
    total = BIG // CHUNK
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid = await accepted(server, room, alice, bob, size=BIG, sha256=sha, e2e=sealed)
    staging = server.data_dir / "relay" / tid
    idle_rss = server.rss_bytes()
    peak_rss = idle_rss
    staging_seen = False
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak_rss, staging_seen
        while not done.is_set():
            peak_rss = max(peak_rss, server.rss_bytes())
            staging_seen = staging_seen or staging.is_dir()
            await asyncio.sleep(0.02)

    async def send() -> None:
        with source.open("rb") as f:
            for index in range(total):
                data = f.read(CHUNK)
                await a.send_raw(
                    sealed_frame(tid, index, total, data)
                    if sealed
                    else frame_of(make_chunk(tid, index, total, data))
                )

    progress: list[dict[str, Any]] = []
    watcher = server.spawn(watch())
    receiver = server.spawn(receive_file(b, target, tid, total, progress, sealed))
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(send(), receiver), 60)
    finally:
        done.set()
        await watcher
        receiver.cancel()
    elapsed = time.monotonic() - started

    assert await asyncio.to_thread(sha256_of, target) == sha
    assert staging_seen, "relayed chunks were never staged under <data-dir>/relay/<id>"
    assert peak_rss < idle_rss + RSS_MARGIN, (
        f"server RSS rose from {idle_rss / MiB:.1f} MiB to {peak_rss / MiB:.1f} MiB "
        f"while relaying {BIG / MiB:.0f} MiB in {elapsed:.1f} s"
    )
    assert progress, "the receiver saw no file-share-progress while the file was relayed"
    assert all(p["transfer_id"] == tid for p in progress)
    assert [p["chunks_sent"] for p in progress] == sorted(p["chunks_sent"] for p in progress)

    await b.send("file-share-complete", {"transfer_id": tid, "sha256": sha})
    completed = await a.recv("file-share-complete")
    assert completed["payload"] == {"transfer_id": tid, "sha256": sha}
    assert completed["sender_id"] == bob
    finished = time.monotonic()
    record = await server.transfer(room, alice, tid)
    assert record["status"] == "completed"
    assert (record["bytes_transferred"], record["progress_percent"]) == (BIG, 100.0)
    assert record["chunks_sent"] == total and record["completed_at"]
    while staging.exists():
        assert time.monotonic() - finished < 1.0, f"{staging} still there 1 s after completion"
        await asyncio.sleep(0.02)


async def test_a_corrupted_chunk_is_requested_again_and_not_forwarded(server: Server) -> None:
    data = (b"corruption test " * 12_288)[: 2 * CHUNK + 500]
    pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid = await accepted(
        server, room, alice, bob, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    good = make_chunk(tid, 1, 3, pieces[1])
    flipped = bytearray(pieces[1])
    flipped[1000] ^= 0x01
    bad = Chunk(tid, 1, 3, CHUNK, bytes(flipped), good.checksum)  # the header's checksum kept

    await a.send_raw(frame_of(bad))
    request = await a.recv("file-share-chunk-request")
    assert request["payload"] == {"transfer_id": tid, "ranges": [[1, 2]], "reason": "bad-checksum"}
    assert request["room_id"] == room
    await b.silent(0.5)  # nothing forwarded

    await a.send_raw(frame_of(good))
    frame = decode_frame(await b.recv_frame())
    assert (frame.chunk_index, bytes(frame.data)) == (1, pieces[1])
    assert frame.checksum == good.checksum
    assert (await server.transfer(room, alice, tid))["status"] == "active"


async def test_a_seed_json_chunk_reaches_the_receiver_as_a_frame(server: Server) -> None:
    data = b"json chunk " * 100
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid = await accepted(
        server, room, alice, bob, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    payload = encode_json_chunk(make_chunk(tid, 0, 1, data))
    assert base64.b64decode(payload["data"]) == data
    await a.send("file-share-chunk", payload)
    frame = decode_frame(await b.recv_frame())
    assert (frame.transfer_id, frame.chunk_index, bytes(frame.data)) == (tid, 0, data)


async def test_an_executable_declared_as_text_fails_with_mime_type_not_allowed(
    server: Server,
) -> None:
    # a DOS/PE header: "MZ", then the usual stub fields
    head = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    data = (head + b"\x00" * 48 + b"This program cannot be run in DOS mode.\r\n" * 4000)[
        : CHUNK + 1000
    ]
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid = await accepted(
        server,
        room,
        alice,
        bob,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        filename="notes.txt",
        mime_type="text/plain",
    )
    await a.send_raw(frame_of(make_chunk(tid, 0, 2, data[:CHUNK])))
    expected = "declared text/plain, but the content is application/x-msdownload"
    refusal = await a.recv_refusal()
    assert refusal["payload"]["code"] == "mime-type-not-allowed", refusal
    assert refusal["payload"]["message"] == expected
    told = await b.recv("file-share-error")
    assert told["payload"] == {
        "transfer_id": tid,
        "code": "mime-type-not-allowed",
        "message": expected,
    }
    record = await server.transfer(room, bob, tid)
    assert (record["status"], record["error_code"]) == ("failed", "mime-type-not-allowed")

    # nothing was forwarded or staged, and the rest of the file is refused too
    await a.send_raw(frame_of(make_chunk(tid, 1, 2, data[CHUNK:])))
    later = await a.recv_refusal()
    while later["payload"]["message"] == expected:  # chunk 0's refusal, told twice or not
        later = await a.recv_refusal()
    assert later["payload"] == {
        "code": "transfer-not-active",
        "message": f"chunk 1 of {tid} rejected: transfer is failed",
        "transfer_id": tid,
    }, later
    await b.silent(0.5)
    assert not (server.data_dir / "relay" / tid).exists()


async def test_chunks_sent_while_paused_are_refused_and_relayed_after_resume(
    server: Server,
) -> None:
    data = b"pause and resume " * 8000
    total = -(-len(data) // CHUNK)
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid = await accepted(
        server, room, alice, bob, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    await b.send("file-share-pause", {"transfer_id": tid})
    await a.recv("file-share-pause")
    await a.send_raw(frame_of(make_chunk(tid, 0, total, data[:CHUNK])))
    refusal = await a.recv_refusal()
    assert "paused" in refusal["payload"]["message"], refusal
    await b.silent(0.5, ignore=("file-share-pause",))

    await b.send("file-share-resume", {"transfer_id": tid})
    await a.recv("file-share-resume")
    await a.send_raw(frame_of(make_chunk(tid, 0, total, data[:CHUNK])))
    frame = decode_frame(await b.recv_frame())
    assert (frame.chunk_index, bytes(frame.data)) == (0, data[:CHUNK])
    assert (await server.transfer(room, alice, tid))["status"] == "active"


async def test_cancelling_a_relayed_transfer_removes_its_staging_within_a_second(
    server: Server,
) -> None:
    # a receiver that reads nothing: once its socket and its outbox are full, the relay
    # stages what comes next
    total = 2000  # 125 MiB declared; far fewer are sent
    piece = b"cancel me " * (CHUNK // 10) + b"cancel"
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid = await accepted(server, room, alice, bob, size=total * CHUNK, sha256="0" * 64)
    staging = server.data_dir / "relay" / tid
    sent = 0
    while not staging.is_dir():
        assert sent < total, "nothing was ever staged"
        await a.send_raw(frame_of(make_chunk(tid, sent, total, piece)))
        sent += 1
    await a.send("file-share-cancel", {"transfer_id": tid, "reason": "changed my mind"})
    cancelled = await b.recv("file-share-cancel")
    assert cancelled["payload"] == {"transfer_id": tid, "reason": "changed my mind"}
    since = time.monotonic()
    while staging.exists():
        assert time.monotonic() - since < 1.0, f"{staging} still there 1 s after cancelling"
        await asyncio.sleep(0.02)
    record = await server.transfer(room, bob, tid)
    assert (record["status"], record["error"]) == ("cancelled", "changed my mind")
