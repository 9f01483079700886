"""The hub's relay in-process: whole frames of a transfer a connection already relays take
a fast path (header unpacked once, the transfer looked up once per connection), and
everything that path does not take falls back to the general one. Both must behave the
same: the same refusals, in the same order, and frames that reach the receiver exactly
as the sender sent them, straight or through the encrypted staging (§11.7)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from roomdrop.clock import ManualClock
from roomdrop.protocol.frames import HEADER, HEADER_SIZE, Chunk, decode_frame, encode_frames
from roomdrop.protocol.messages import Offer
from roomdrop.server.auth import TokenAuthority
from roomdrop.server.hub import Hub
from roomdrop.server.participant import Participant
from roomdrop.server.settings import Settings

CHUNK = 64 * 1024
SIZE = 3 * CHUNK + 1000  # four chunks, the last one short
TOTAL = 4


class Socket:
    """Records what the hub sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.frames: list[bytes] = []

    async def send_text(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(data)

    async def close(self, code: int, reason: str) -> None:
        pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]


def socket_of(p: Participant) -> Socket:
    socket = p.outbox.socket
    assert isinstance(socket, Socket)
    return socket


Room = tuple[Hub, ManualClock, Participant, Participant, str, list[bytes]]


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    """alice offers bob a four-chunk file, bob accepts; the frames of its chunks."""
    clock = ManualClock()
    hub = Hub(Settings(data_dir=tmp_path), TokenAuthority("k" * 40), clock=clock)
    alice = await hub.join("room", "alice", Socket())
    bob = await hub.join("room", "bob", Socket())
    content = b"plain text, no magic\n" + os.urandom(SIZE - 21)
    tid = str(uuid.uuid4())
    await hub.transfers.offer(
        "room",
        "alice",
        Offer(
            transfer_id=uuid.UUID(tid),
            receiver_id="bob",
            filename="f.bin",
            file_size=SIZE,
            chunk_size=CHUNK,
            total_chunks=TOTAL,
            sha256=hashlib.sha256(content).hexdigest(),
        ),
    )
    await hub.transfers.accept("room", "bob", tid)
    frames = []
    for i in range(TOTAL):
        data = content[i * CHUNK : (i + 1) * CHUNK]
        (frame,) = encode_frames(
            Chunk(tid, i, TOTAL, CHUNK, data, hashlib.sha256(data).hexdigest())
        )
        frames.append(frame)
    yield hub, clock, alice, bob, tid, frames
    for transfer in list(hub.relay.links):
        await hub.relay.close(transfer)


async def drain(*ps: Participant) -> None:
    """Run the writers until everything queued has gone out."""
    writers = [asyncio.create_task(p.outbox.run()) for p in ps]
    await asyncio.sleep(0.05)
    for writer in writers:
        writer.cancel()
    await asyncio.gather(*writers, return_exceptions=True)


async def answers(hub: Hub, p: Participant, frame: bytes) -> list[dict[str, Any]]:
    """What ``p`` is told in answer to ``frame``: progress broadcasts and the envelope's
    timestamp left out."""
    before = len(p.outbox._control)
    await hub.relay.handle_bytes(p, frame)
    told = [json.loads(m) for m in list(p.outbox._control)[before:]]
    for message in told:
        message.pop("timestamp", None)
    return [m for m in told if m["type"] != "file-share-progress"]


def with_header(frame: bytes, **fields: Any) -> bytes:
    """``frame`` with some header fields replaced."""
    names = ["magic", "version", "flags", "tid", "index", "total", "size", "length", "offset"]
    values = dict(zip([*names, "checksum"], HEADER.unpack_from(frame), strict=True))
    values.update(fields)
    return HEADER.pack(*values.values()) + frame[HEADER_SIZE:]


def flip(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 1]) + frame[at + 1 :]


async def test_whole_frames_reach_the_receiver_as_sent_and_count_as_progress(room: Room) -> None:
    hub, _clock, alice, bob, tid, frames = room
    for frame in frames:
        assert await answers(hub, alice, frame) == []
    assert hub.metrics.staged._value.get() == 0
    await drain(alice, bob)
    received = socket_of(bob).frames
    assert len(received) == TOTAL
    assert all(got is sent for got, sent in zip(received, frames, strict=True))
    record = await hub.backend.get(tid)
    assert (record.chunks_sent, record.bytes_transferred) == (TOTAL, SIZE)
    assert alice.routes, "the transfer's route is cached after its first whole frame"


MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "short data (a fragment)": lambda f: f[:-1],
    "data past its length": lambda f: with_header(f, length=CHUNK - 1),
    "other total_chunks": lambda f: with_header(f, total=TOTAL + 1),
    "other chunk_size": lambda f: with_header(f, size=CHUNK * 2, length=CHUNK),
    "index past the end": lambda f: with_header(f, index=TOTAL),
    "length of the last chunk": lambda f: with_header(f[: HEADER_SIZE + 1000], length=1000),
    "bad magic": lambda f: with_header(f, magic=b"XX"),
    "version 2": lambda f: with_header(f, version=2),
    "flags set": lambda f: with_header(f, flags=1),
    "bad checksum": lambda f: flip(f, HEADER_SIZE + 5),
    "header only": lambda f: f[:HEADER_SIZE],
    "a fragment": lambda f: with_header(f[: HEADER_SIZE + 100], offset=0),
    "another transfer": lambda f: with_header(f, tid=uuid.uuid4().bytes),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
async def test_after_the_first_frame_a_bad_frame_is_refused_as_on_the_general_path(
    room: Room, mutation: str
) -> None:
    hub, _clock, alice, _bob, _tid, frames = room
    bad = MUTATIONS[mutation](frames[1])
    assert not alice.routes
    general = await answers(hub, alice, bad)  # no route cached yet: the general path
    alice.routes.clear()
    assert await answers(hub, alice, frames[0]) == []
    assert alice.routes
    assert await answers(hub, alice, bad) == general


async def test_the_general_path_refusals_are_the_expected_ones(room: Room) -> None:
    hub, _clock, alice, bob, tid, frames = room
    await answers(hub, alice, frames[0])
    [long] = await answers(hub, alice, with_header(frames[1], length=CHUNK - 1))
    assert long["payload"]["code"] == "protocol-error"
    [short] = await answers(hub, alice, with_header(frames[1][: HEADER_SIZE + 10], length=10))
    assert short["payload"]["code"] == "protocol-error"
    assert short["payload"]["message"] == "chunk 1 has 10 bytes, expected 65536"
    [request] = await answers(hub, alice, flip(frames[1], HEADER_SIZE + 5))
    assert request["type"] == "file-share-chunk-request"
    assert request["payload"]["ranges"] == [[1, 2]]
    assert request["payload"]["reason"] == "bad-checksum"
    [forbidden] = await answers(hub, bob, frames[1])
    assert forbidden["payload"]["code"] == "forbidden"
    assert await answers(hub, alice, frames[1]) == []
    await drain(bob)
    assert [decode_frame(f).chunk_index for f in socket_of(bob).frames] == [0, 1]
    assert (await hub.backend.get(tid)).chunks_sent == 2


async def test_a_frame_of_a_paused_transfer_is_refused_and_not_relayed(room: Room) -> None:
    hub, _clock, alice, bob, tid, frames = room
    await answers(hub, alice, frames[0])
    await hub.transfers.act("room", "bob", tid, "pause")
    [error] = await answers(hub, alice, frames[1])
    assert error["payload"]["code"] == "transfer-not-active"
    assert error["payload"]["transfer_id"] == tid
    assert "chunk 1 of" in error["payload"]["message"]
    await drain(bob)
    assert [decode_frame(f).chunk_index for f in socket_of(bob).frames] == [0]


async def test_a_frame_of_a_forgotten_transfer_is_an_unknown_transfer(room: Room) -> None:
    hub, clock, alice, _bob, tid, frames = room
    await answers(hub, alice, frames[0])
    await hub.transfers.act("room", "alice", tid, "cancel")
    clock.advance(3 * 3600)
    await hub.sweep()
    with pytest.raises(Exception, match=tid):
        await hub.backend.get(tid)
    [error] = await answers(hub, alice, frames[1])
    assert error["payload"]["code"] == "unknown-transfer"
    assert not alice.routes, "a forgotten transfer's route is dropped"


async def test_when_the_receiver_is_behind_frames_are_staged_and_forwarded_in_order(
    room: Room,
) -> None:
    """No writer runs at first, so bob's socket queue fills (16 frames); what comes next
    is staged encrypted and forwarded, byte for byte, once bob's socket drains."""
    hub, _clock, alice, bob, tid, frames = room
    first = frames[0]
    sent = [first] * 16 + frames[1:]  # the receiver may get a chunk twice; it drops copies
    for frame in sent:
        assert await answers(hub, alice, frame) == []
    assert len(bob.outbox._frames) == 16
    link = hub.relay.links[tid]
    assert link.staging.staged() == TOTAL - 1  # the forwarder has not run yet
    writer = asyncio.create_task(bob.outbox.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(socket_of(bob).frames) == len(sent):
            break
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert socket_of(bob).frames == sent
    assert (await hub.backend.get(tid)).chunks_sent == TOTAL
    assert hub.metrics.staged._value.get() == TOTAL - 1


async def test_a_chunk_does_not_overtake_one_the_forwarder_holds(room: Room) -> None:
    """The forwarder has taken chunk 1 out of the staging and waits for room on bob's
    socket; when room appears, chunk 2 from alice must not slip in ahead of it."""
    hub, _clock, alice, bob, tid, frames = room
    for _ in range(16):
        await answers(hub, alice, frames[0])
    await answers(hub, alice, frames[1])  # bob's socket is full: staged
    for _ in range(5):
        await asyncio.sleep(0)  # the forwarder takes it and waits for room
    link = hub.relay.links[tid]
    assert (link.staging.staged(), link.holding) == (0, True)
    bob.outbox._frames.popleft()  # room on bob's socket, the forwarder not yet woken
    await answers(hub, alice, frames[2])
    writer = asyncio.create_task(bob.outbox.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(socket_of(bob).frames) == 17:
            break
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert [decode_frame(f).chunk_index for f in socket_of(bob).frames] == [0] * 15 + [1, 2]


async def test_a_json_chunk_is_staged_and_forwarded_as_one_whole_frame(room: Room) -> None:
    hub, _clock, alice, bob, tid, frames = room
    for _ in range(16):
        await answers(hub, alice, frames[0])
    data = frames[1][HEADER_SIZE:]
    chunk = {
        "transfer_id": tid,
        "chunk_index": 1,
        "total_chunks": TOTAL,
        "chunk_size": CHUNK,
        "data": base64.b64encode(data).decode(),
        "checksum": hashlib.sha256(data).hexdigest(),
    }
    await hub.handle_text(alice, json.dumps({"type": "file-share-chunk", "payload": chunk}))
    assert hub.relay.links[tid].staging.staged() == 1
    writer = asyncio.create_task(bob.outbox.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(socket_of(bob).frames) == 17:
            break
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert socket_of(bob).frames[-1] == frames[1]


def test_the_header_layout_is_the_one_the_fast_path_unpacks() -> None:
    assert HEADER.size == HEADER_SIZE == 72
    assert struct.calcsize(HEADER.format) == 72
