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
import types
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from roomdrop.clock import ManualClock
from roomdrop.protocol.frames import HEADER, HEADER_SIZE, decode_frame
from roomdrop.protocol.messages import Offer
from roomdrop.server import relay as relay_module
from roomdrop.server.auth import TokenAuthority
from roomdrop.server.hub import Hub
from roomdrop.server.participant import Participant
from roomdrop.server.settings import Settings
from server.e2etools import clear_chunk_of, frame_of, offer_fields, public, seal, sealed_frame

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


@pytest.fixture(params=["sealed", "clear"])
def mode(request: pytest.FixtureRequest) -> str:
    """``sealed``: an end-to-end encrypted transfer (the default); ``clear``: one in the
    clear, on a hub that allows it (ROOMDROP_REQUIRE_E2E=0)."""
    return str(request.param)


@pytest.fixture
async def room(tmp_path: Path, mode: str) -> AsyncIterator[Room]:
    """alice offers bob a four-chunk file, bob accepts; the frames of its chunks (sealed
    under the transfer's content key, or in the clear)."""
    clock = ManualClock()
    settings = Settings(data_dir=tmp_path, require_e2e=mode == "sealed")
    hub = Hub(settings, TokenAuthority("k" * 40), clock=clock)
    alice = await hub.join("room", "alice", Socket(), public("alice"))
    bob = await hub.join("room", "bob", Socket(), public("bob"))
    content = b"plain text, no magic\n" + os.urandom(SIZE - 21)
    payload = offer_fields(
        "bob", size=SIZE, sha256=hashlib.sha256(content).hexdigest(), filename="f.bin"
    )
    if mode == "sealed":
        payload = seal("alice", payload)
    tid = payload["transfer_id"]
    await hub.transfers.offer("room", "alice", Offer.model_validate(payload))
    await hub.transfers.accept("room", "bob", tid)
    frames = []
    for i in range(TOTAL):
        data = content[i * CHUNK : (i + 1) * CHUNK]
        if mode == "sealed":
            frames.append(sealed_frame(tid, i, TOTAL, data))
        else:
            frames.append(frame_of(clear_chunk_of(tid, i, TOTAL, data)))
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


def length_of(frame: bytes) -> int:
    return int(HEADER.unpack_from(frame)[7])


MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "short data (a fragment)": lambda f: f[:-1],
    "data past its length": lambda f: with_header(f, length=length_of(f) - 1),
    "other total_chunks": lambda f: with_header(f, total=TOTAL + 1),
    "other chunk_size": lambda f: with_header(f, size=CHUNK * 2),
    "index past the end": lambda f: with_header(f, index=TOTAL),
    "length of the last chunk": lambda f: with_header(f[: HEADER_SIZE + 1000], length=1000),
    "bad magic": lambda f: with_header(f, magic=b"XX"),
    "version 2": lambda f: with_header(f, version=2),
    "sealed flag flipped": lambda f: with_header(f, flags=f[3] ^ 1),
    "reserved flag set": lambda f: with_header(f, flags=f[3] | 2),
    "a byte of data flipped": lambda f: flip(f, HEADER_SIZE + 5),
    "checksum changed": lambda f: with_header(f, checksum=b"\x01" * 32),
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


async def test_the_general_path_refusals_are_the_expected_ones(room: Room, mode: str) -> None:
    hub, _clock, alice, bob, tid, frames = room
    await answers(hub, alice, frames[0])
    [long] = await answers(hub, alice, with_header(frames[1], length=length_of(frames[1]) - 1))
    assert long["payload"]["code"] == "protocol-error"
    [short] = await answers(hub, alice, with_header(frames[1][: HEADER_SIZE + 20], length=20))
    assert short["payload"]["code"] == "protocol-error"
    assert short["payload"]["message"] == (
        "chunk 1 has 20 bytes, expected 65552 (its plaintext and the 16-byte tag)"
        if mode == "sealed"
        else "chunk 1 has 20 bytes, expected 65536"
    )
    flipped = await answers(hub, alice, flip(frames[1], HEADER_SIZE + 5))
    if mode == "clear":
        [request] = flipped
        assert request["type"] == "file-share-chunk-request"
        assert request["payload"]["ranges"] == [[1, 2]]
        assert request["payload"]["reason"] == "bad-checksum"
    else:  # ciphertext: the server cannot tell; the receiver's GCM check will
        assert flipped == []
    [forbidden] = await answers(hub, bob, frames[1])
    assert forbidden["payload"]["code"] == "forbidden"
    assert await answers(hub, alice, frames[1]) == []
    await drain(bob)
    relayed = [decode_frame(f).chunk_index for f in socket_of(bob).frames]
    assert relayed == ([0, 1] if mode == "clear" else [0, 1, 1])
    assert (await hub.backend.get(tid)).chunks_sent == len(relayed)


@pytest.mark.parametrize("path", ["fast", "general"])
async def test_a_clear_frame_of_an_encrypted_transfer_is_refused_and_the_next_goes_through(
    tmp_path: Path, path: str
) -> None:
    hub, _clock, alice, bob, tid, frames = await _sealed_room(tmp_path)
    if path == "fast":
        assert await answers(hub, alice, frames[0]) == []
        assert alice.routes
    clear = frame_of(clear_chunk_of(tid, 1, TOTAL, b"x" * CHUNK))
    [refusal] = await answers(hub, alice, clear)
    assert refusal["payload"] == {
        "code": "protocol-error",
        "message": f"chunk 1 of {tid} is not sealed, but the transfer is end-to-end "
        "encrypted: its chunks travel as ciphertext only",
    }
    assert await answers(hub, alice, frames[1]) == []
    await drain(bob)
    relayed = [decode_frame(f) for f in socket_of(bob).frames]
    assert [f.chunk_index for f in relayed] == ([0, 1] if path == "fast" else [1])
    assert all(f.sealed for f in relayed)
    await hub.relay.close(tid)


async def test_a_sealed_frame_of_a_transfer_in_the_clear_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, require_e2e=False)
    hub = Hub(settings, TokenAuthority("k" * 40), clock=ManualClock())
    alice = await hub.join("room", "alice", Socket(), public("alice"))
    bob = await hub.join("room", "bob", Socket(), public("bob"))
    payload = offer_fields("bob", size=SIZE)
    tid = payload["transfer_id"]
    await hub.transfers.offer("room", "alice", Offer.model_validate(payload))
    await hub.transfers.accept("room", "bob", tid)
    seal("alice", payload)  # a content key nobody announced
    [refusal] = await answers(hub, alice, sealed_frame(tid, 0, TOTAL, b"x" * CHUNK))
    assert refusal["payload"] == {
        "code": "protocol-error",
        "message": f"chunk 0 of {tid} is sealed, but the transfer is not end-to-end encrypted",
    }
    await drain(bob)
    assert socket_of(bob).frames == []


async def test_sealed_chunks_are_not_hashed_on_their_way_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's busiest work is per chunk: an encrypted chunk costs it no sha256 pass
    (the receiver checks its GCM tag), on the fast path or the general one."""
    hub, _clock, alice, bob, _tid, frames = await _sealed_room(tmp_path)
    hashed: list[int] = []

    def counting(data: Any = b"") -> Any:
        hashed.append(len(data))
        return hashlib.sha256(data)

    monkeypatch.setattr(relay_module, "hashlib", types.SimpleNamespace(sha256=counting))
    for frame in [*frames, *frames]:  # the general path first, then the fast one
        assert await answers(hub, alice, frame) == []
    assert hashed == []
    await drain(bob)
    assert len(socket_of(bob).frames) == 2 * TOTAL


async def _sealed_room(tmp_path: Path) -> Room:
    hub = Hub(Settings(data_dir=tmp_path), TokenAuthority("k" * 40), clock=ManualClock())
    alice = await hub.join("room", "alice", Socket(), public("alice"))
    bob = await hub.join("room", "bob", Socket(), public("bob"))
    payload = seal("alice", offer_fields("bob", size=SIZE))
    tid = payload["transfer_id"]
    await hub.transfers.offer("room", "alice", Offer.model_validate(payload))
    await hub.transfers.accept("room", "bob", tid)
    content = os.urandom(SIZE)
    frames = [
        sealed_frame(tid, i, TOTAL, content[i * CHUNK : (i + 1) * CHUNK]) for i in range(TOTAL)
    ]
    return hub, ManualClock(), alice, bob, tid, frames


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
    """In the clear, the JSON chunk's data is the chunk; end to end, its ciphertext
    (checksum: the ciphertext's sha256), forwarded as the sealed frame."""
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


async def test_a_json_chunk_of_ciphertext_with_a_wrong_checksum_is_requested_again(
    tmp_path: Path,
) -> None:
    hub, _clock, alice, bob, tid, frames = await _sealed_room(tmp_path)
    data = frames[0][HEADER_SIZE:]
    chunk = {
        "transfer_id": tid,
        "chunk_index": 0,
        "total_chunks": TOTAL,
        "chunk_size": CHUNK,
        "data": base64.b64encode(data).decode(),
        "checksum": hashlib.sha256(data + b"x").hexdigest(),
    }
    await hub.handle_text(alice, json.dumps({"type": "file-share-chunk", "payload": chunk}))
    [request] = [
        json.loads(m)
        for m in alice.outbox._control
        if json.loads(m)["type"] == "file-share-chunk-request"
    ]
    assert request["payload"] == {"transfer_id": tid, "ranges": [[0, 1]], "reason": "bad-checksum"}
    await drain(bob)
    assert socket_of(bob).frames == []


def test_the_header_layout_is_the_one_the_fast_path_unpacks() -> None:
    assert HEADER.size == HEADER_SIZE == 72
    assert struct.calcsize(HEADER.format) == 72
