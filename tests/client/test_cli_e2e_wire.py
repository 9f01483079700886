"""End-to-end encryption as seen on the wire (docs/protocol.md §14): the real ``roomdrop
send`` and ``receive`` through the relay of a real ``roomdrop serve``, with a recording
and tampering proxy (:mod:`proxytools`) between the server and the receiver.

* Whatever the server holds of a relayed file (the bytes it sends the receiver, what it
  stages on disk while the receiver is stopped, its log; across instances, everything
  that passes through Redis) carries no trace of the plaintext.
* A chunk changed on its way from the server, or an earlier chunk's ciphertext presented
  at a later index, does not decrypt: the receiver says so, asks for that chunk again
  (``file-share-chunk-request``, ``bad-checksum``), gets the same ciphertext again and
  completes the file.

The file of the first two is one known marker over and over: had any party on the way
seen the plaintext, the marker, or any 16-byte slice of it, would be in what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from clitools import MB, Command, Room, sha256_of, write_random
from proxytools import DOWN, OP_BINARY, OP_TEXT, UP, Proxy

from redistools import RedisServer
from roomdrop.protocol.frames import FLAG_SEALED, HEADER_SIZE, TAG_SIZE, decode_frame
from server.conftest import Server

pytestmark = pytest.mark.timeout(120)

MARKER = b"ROOMDROP-PLAINTEXT-MARKER:0123456789abcdef/"
SLICES = sorted({(MARKER * 2)[i : i + 16] for i in range(len(MARKER))})
"""Every 16-byte slice of the file (it is MARKER over and over): the plaintext of any
16 bytes of it, wherever they fall."""
CHUNK = 64 * 1024
SIZE = 8 * MB
"""Large enough that a receiver that stopped reading leaves chunks staged on the server:
before the server stages, the kernel takes some 3.8 MB into its socket's send buffer
(a loopback socket's starts at ~3.9 MB, ``ss -tm``, whatever its peer's window) and the
socket's outbox 16 frames."""
SIZE_ACROSS = 11 * MB
"""The same across instances, where the relay queue in Redis takes 16 frames more and
the receiver's instance holds a batch of 16 it took from there."""
HOLD_AFTER = 4
"""Binary frames the receiver gets before it stops reading."""


def write_marker(path: Path, size: int) -> str:
    data = (MARKER * (size // len(MARKER) + 1))[:size]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def leaks(data: bytes | bytearray) -> list[bytes]:
    """The marker and those of its slices found in ``data``."""
    return [s for s in (MARKER, *SLICES) if s in data]


def files_under(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` and its bytes, as they are now."""
    found: dict[Path, bytes] = {}
    for path in sorted(root.rglob("*")):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if path.is_file():
                found[path] = path.read_bytes()
    return found


def assert_clean(what: str, data: bytes | bytearray) -> None:
    found = leaks(data)
    assert not found, f"{what} holds plaintext: {found[:3]} ({len(data)} bytes searched)"


async def staged_chunks(server: Server) -> float:
    """The server's ``roomdrop_relay_staged_chunks_total``."""
    async with server.http() as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("roomdrop_relay_staged_chunks_total "):
            return float(line.split()[1])
    raise AssertionError(f"no roomdrop_relay_staged_chunks_total in /metrics:\n{text}")


async def wait_staged(server: Server, timeout: float = 20.0) -> dict[Path, bytes]:
    """Wait until ``server`` has chunks staged on disk (a non-empty ring file under its
    data directory, and its metric says so); every file of its data directory then."""
    deadline = time.monotonic() + timeout
    while True:
        rings = []
        for ring in (server.data_dir / "relay").glob("*/ring"):
            with contextlib.suppress(FileNotFoundError):
                if ring.stat().st_size:
                    rings.append(ring)
        if rings and await staged_chunks(server) >= 1:
            snapshot = files_under(server.data_dir)
            assert any(p in snapshot and snapshot[p] for p in rings), snapshot.keys()
            return snapshot
        if time.monotonic() > deadline:
            listing = sorted(str(p) for p in server.data_dir.rglob("*"))
            raise AssertionError(f"nothing was staged on {server.url} in {timeout} s: {listing}")
        await asyncio.sleep(0.02)


def assert_log_clean(server: Server) -> None:
    log = server.log()
    assert_clean(f"the log of {server.url}", log.encode())
    errors = [line for line in log.splitlines() if '"level": "error"' in line]
    assert not errors, errors


def sealed_frames(proxy: Proxy) -> list[Any]:
    """The chunk frames the server sent the receiver (through ``proxy``), decoded."""
    return [decode_frame(m.payload) for m in proxy.frames(DOWN, OP_BINARY)]


def assert_wire_clean(proxy: Proxy, total_chunks: int) -> None:
    """Nothing of the plaintext crossed the proxy, which did carry every chunk, sealed."""
    assert not proxy.errors, proxy.errors
    frames = sealed_frames(proxy)
    assert {f.chunk_index for f in frames} == set(range(total_chunks))
    assert all(f.sealed for f in frames)
    assert proxy.upgraded >= 1
    assert_clean("what the server sent the receiver", proxy.raw[DOWN])
    assert_clean("what the receiver sent the server", proxy.raw[UP])
    unmasked = b"".join(m.payload for m in proxy.frames(UP))
    assert_clean("the receiver's WebSocket messages (unmasked)", unmasked)


def chunk_requests(proxy: Proxy) -> list[dict[str, Any]]:
    """The ``file-share-chunk-request`` payloads the receiver sent (through ``proxy``)."""
    found = []
    for m in proxy.frames(UP, OP_TEXT):
        message = json.loads(m.payload)
        if message.get("type") == "file-share-chunk-request":
            found.append(message["payload"])
    return found


def notes(command: Command) -> list[str]:
    return [n["message"] for n in command.events("note")]


def assert_completed(receiver: Command, sender: Command, digest: str) -> dict[str, Any]:
    got, sent = receiver.result(), sender.result()
    for result in (got, sent):
        assert (result["status"], result["transport"], result["e2e"]) == (
            "completed",
            "relay",
            True,
        ), result
    assert got["sha256"] == digest
    return got


# --- what the server sees ----------------------------------------------------------


async def test_the_server_its_staging_and_its_log_never_see_the_plaintext(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    proxy = await Proxy(server.port, hold_after=HOLD_AFTER).start()
    try:
        room: Room = room_on(server)
        source = tmp_path / "marker.bin"
        digest = write_marker(source, SIZE)
        receiver = room.receive(tmp_path / "inbox", server_args=["--server", proxy.url])
        await room.joined(receiver)
        sender = room.send(source, transport="relay")

        await asyncio.wait_for(proxy.held.wait(), 30)
        receiver.signal(signal.SIGSTOP)  # the receiver stops; the server stages
        try:
            staged = await wait_staged(server)
        finally:
            receiver.signal(signal.SIGCONT)
            proxy.release()
        assert await sender.wait(60) == 0, sender.report()
        assert await receiver.wait(30) == 0, receiver.report()
    finally:
        await proxy.close()

    assert_completed(receiver, sender, digest)
    assert sha256_of(tmp_path / "inbox" / "marker.bin") == digest
    assert await staged_chunks(server) >= 1
    for path, data in [*staged.items(), *files_under(server.data_dir).items()]:
        assert_clean(str(path), data)
    assert_log_clean(server)
    assert_wire_clean(proxy, -(-SIZE // CHUNK))


class RedisWatch:
    """Everything Redis is told while it runs (MONITOR, on a socket of its own: every
    command with its arguments, as Redis quotes them, printable bytes as they are), and
    every key under ``prefix`` read back every 20 ms, whatever its type. What it finds
    of the plaintext is kept in :attr:`found`."""

    def __init__(self, redis_server: RedisServer, prefix: str) -> None:
        self.port, self.prefix = redis_server.port, prefix
        self.monitor = bytearray()
        self.found: list[str] = []
        self.samples = 0
        self.frames_sampled = 0
        """Values that were sealed chunk frames (``RD``, version 1, SEALED)."""
        self.sampled_bytes = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._monitor, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]
        self._ready = threading.Event()

    def __enter__(self) -> RedisWatch:
        for thread in self._threads:
            thread.start()
        assert self._ready.wait(5), "MONITOR did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # what is on its way still arrives
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _monitor(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
            sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
            ok = b""
            while not ok.endswith(b"\r\n"):
                ok += sock.recv(1)
            assert ok == b"+OK\r\n", ok
            self._ready.set()
            while not self._stop.is_set():
                try:
                    data = sock.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    break
                self.monitor += data

    def _sample(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            while not self._stop.is_set():
                for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                    for value in self._values(client, key):
                        self.sampled_bytes += len(value)
                        if value[:4] == b"RD\x01" + bytes([FLAG_SEALED]):
                            self.frames_sampled += 1
                        if found := leaks(value):
                            self.found.append(f"{key!r}: {found[:3]}")
                self.samples += 1
                time.sleep(0.02)
        finally:
            client.close()

    @staticmethod
    def _values(client: Any, key: bytes) -> list[bytes]:
        kind = client.type(key)
        reads: dict[bytes, Callable[[], Any]] = {
            b"string": lambda: [client.get(key)],
            b"list": lambda: client.lrange(key, 0, -1),
            b"hash": lambda: [b for kv in client.hgetall(key).items() for b in kv],
            b"set": lambda: list(client.smembers(key)),
            b"zset": lambda: [m for m, _ in client.zrange(key, 0, -1, withscores=True)],
            b"stream": lambda: [
                b for _, fields in client.xrange(key) for kv in fields.items() for b in kv
            ],
        }
        read = reads.get(kind)
        values = read() if read is not None else []
        return [v if isinstance(v, bytes) else str(v).encode() for v in values if v is not None]


async def test_across_instances_redis_never_sees_the_plaintext_either(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = redis_server.prefix()
    shared = {"ROOMDROP_REDIS_URL": redis_server.url, "ROOMDROP_REDIS_PREFIX": prefix}
    one = await start(name="i0", **shared)
    two = await start(name="i1", secret=one.secret, **shared)
    proxy = await Proxy(two.port, hold_after=HOLD_AFTER).start()
    try:
        room: Room = room_on(one)
        source = tmp_path / "marker.bin"
        digest = write_marker(source, SIZE_ACROSS)
        with RedisWatch(redis_server, prefix) as watch:
            receiver = room.receive(tmp_path / "inbox", server_args=["--server", proxy.url])
            await room.joined(receiver)
            sender = room.send(source, transport="relay", server_args=["--server", one.url])

            await asyncio.wait_for(proxy.held.wait(), 30)
            receiver.signal(signal.SIGSTOP)
            try:
                # the queue between the instances fills, then the sender's instance stages
                staged = await wait_staged(one)
                sampled, deadline = watch.frames_sampled, time.monotonic() + 10
                while watch.frames_sampled < sampled + 16:  # a sample of the full queue
                    assert time.monotonic() < deadline, "the full relay queue was not sampled"
                    await asyncio.sleep(0.02)
            finally:
                receiver.signal(signal.SIGCONT)
                proxy.release()
            assert await sender.wait(60) == 0, sender.report()
            assert await receiver.wait(30) == 0, receiver.report()
    finally:
        await proxy.close()

    assert_completed(receiver, sender, digest)
    assert sha256_of(tmp_path / "inbox" / "marker.bin") == digest
    total = -(-SIZE_ACROSS // CHUNK)
    # the chunks crossed through Redis, and MONITOR saw them go in
    pushes = watch.monitor.count(f'"rpush" "{prefix}:q:'.encode()) + watch.monitor.count(
        f'"RPUSH" "{prefix}:q:'.encode()
    )
    assert pushes >= total, pushes
    assert watch.samples >= 10
    assert_clean("what Redis was told (MONITOR)", watch.monitor)
    assert not watch.found, watch.found
    for server in (one, two):
        for path, data in [*staged.items(), *files_under(server.data_dir).items()]:
            assert_clean(str(path), data)
        assert_log_clean(server)
    assert_wire_clean(proxy, total)


# --- what the receiver refuses -----------------------------------------------------


async def relay_through(
    room: Room, proxy: Proxy, source: Path, inbox: Path
) -> tuple[Command, Command]:
    receiver = room.receive(inbox, server_args=["--server", proxy.url])
    await room.joined(receiver)
    sender = room.send(source, transport="relay")
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    return sender, receiver


def assert_asked_again(
    proxy: Proxy, receiver: Command, index: int, genuine: bytes, tid: str
) -> None:
    """The receiver refused chunk ``index``, asked for it again as ``bad-checksum``, and
    got it again: the same ciphertext as the first time (``genuine``)."""
    assert f"chunk {index} did not decrypt; asking for it again" in notes(receiver), notes(receiver)
    asked = [(r["ranges"], r["reason"]) for r in chunk_requests(proxy) if r["transfer_id"] == tid]
    assert ([[index, index + 1]], "bad-checksum") in asked, asked
    again = [
        m for m in proxy.frames(DOWN, OP_BINARY) if decode_frame(m.payload).chunk_index == index
    ]
    assert len(again) == 2, [m.number for m in again]
    assert again[0].forwarded != genuine == again[1].forwarded == again[1].payload
    assert again[0].payload == genuine  # the server sent it right; the proxy changed it


async def test_a_chunk_tampered_with_on_the_way_is_asked_for_again_and_the_file_completes(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    changed: dict[str, Any] = {}

    def tamper(number: int, payload: bytes) -> bytes | None:
        if number != 7:
            return None
        frame = decode_frame(payload)
        assert frame.sealed and frame.is_whole
        at = HEADER_SIZE + len(frame.data) // 2  # well inside the ciphertext
        changed.update(index=frame.chunk_index, genuine=payload)
        return payload[:at] + bytes([payload[at] ^ 0x01]) + payload[at + 1 :]

    proxy = await Proxy(server.port, tamper=tamper).start()
    try:
        room: Room = room_on(server)
        source = tmp_path / "data.bin"
        digest = write_random(source, 2 * MB)
        sender, receiver = await relay_through(room, proxy, source, tmp_path / "inbox")
    finally:
        await proxy.close()

    got = assert_completed(receiver, sender, digest)
    assert sha256_of(tmp_path / "inbox" / "data.bin") == digest
    assert not proxy.errors, proxy.errors
    assert changed, "no frame was tampered with"
    assert_asked_again(proxy, receiver, changed["index"], changed["genuine"], got["transfer_id"])
    assert_log_clean(server)


async def test_a_chunk_replayed_at_another_index_is_refused_and_the_file_completes(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """The server (or anyone between) puts chunk i's genuine ciphertext in the frame of
    a later chunk j, of the same length: it does not decrypt as chunk j."""
    server = await start()
    kept: dict[int, bytes] = {}
    replayed: dict[str, Any] = {}

    def replay(number: int, payload: bytes) -> bytes | None:
        if number == 3:
            kept[decode_frame(payload).chunk_index] = payload
        if number != 9:
            return None
        ((earlier, source),) = kept.items()
        frame = decode_frame(payload)
        assert frame.chunk_index != earlier and len(payload) == len(source)
        assert len(frame.data) == CHUNK + TAG_SIZE
        replayed.update(index=frame.chunk_index, earlier=earlier, genuine=payload)
        return payload[:HEADER_SIZE] + source[HEADER_SIZE:]

    proxy = await Proxy(server.port, tamper=replay).start()
    try:
        room: Room = room_on(server)
        source = tmp_path / "data.bin"
        digest = write_random(source, 2 * MB)
        sender, receiver = await relay_through(room, proxy, source, tmp_path / "inbox")
    finally:
        await proxy.close()

    got = assert_completed(receiver, sender, digest)
    assert sha256_of(tmp_path / "inbox" / "data.bin") == digest
    assert not proxy.errors, proxy.errors
    assert replayed, "no frame was replayed"
    index, earlier = replayed["index"], replayed["earlier"]
    assert_asked_again(proxy, receiver, index, replayed["genuine"], got["transfer_id"])
    # chunk i itself decrypted where it belongs: it was never asked for again
    assert f"chunk {earlier} did not decrypt; asking for it again" not in notes(receiver)
    assert_log_clean(server)
