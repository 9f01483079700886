"""Policy and flow details: MIME lists judged on content, refusals that change nothing,
the relay's bandwidth limit, progress that never loses its last word, pauses that free
the relay, and a receiver that returns late."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest

from roomdrop.protocol.frames import Chunk, decode_frame, encode_frames
from server.conftest import CHUNK, Server, names

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # the policy checks that need plaintext at the server (its MIME sniffing of the first chunk)
    # exist only on the clear path: a server that allows clear transfers
    return {"ROOMDROP_REQUIRE_E2E": "false"}


def frame(tid: str, index: int, total: int, data: bytes) -> bytes:
    (only,) = encode_frames(Chunk(tid, index, total, CHUNK, data, hashlib.sha256(data).hexdigest()))
    return only


async def accepted(server: Server, **offer: Any) -> tuple[Any, Any, str, str]:
    room, alice, bob = names("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob, **offer)
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    return a, b, tid, room


async def test_a_deny_list_ignores_letter_case(start_server: Any) -> None:
    server = await start_server(ROOMDROP_MIME_DENY='["application/x-*"]')
    room, alice, bob = names("room", "alice", "bob")
    a, _b = await server.pair(room, alice, bob)
    await a.offer(bob, mime_type="Application/X-MSDownload")
    refusal = await a.recv("error")
    assert refusal["payload"]["code"] == "mime-type-not-allowed"
    assert refusal["payload"]["message"] == (
        "files of type application/x-msdownload are not allowed here"
    )


async def test_the_deny_list_judges_what_the_first_relayed_chunk_really_is(
    start_server: Any,
) -> None:
    server = await start_server(ROOMDROP_MIME_DENY='["image/*"]')
    a, b, tid, room = await accepted(server, size=len(PNG), mime_type="application/pdf")
    await a.send_raw(frame(tid, 0, 1, PNG))
    told = await b.recv("file-share-error")
    assert told["payload"]["message"] == (
        "declared application/pdf, but the content is image/png, which is not allowed here"
    )
    record = await server.transfer(room, b.user, tid)
    assert (record["status"], record["error_code"]) == ("failed", "mime-type-not-allowed")


async def test_a_generic_declaration_or_an_alias_is_not_a_contradiction(server: Server) -> None:
    for declared in ("application/octet-stream", "image/x-png"):
        a, b, tid, _room = await accepted(server, size=len(PNG), mime_type=declared)
        await a.send_raw(frame(tid, 0, 1, PNG))
        assert hashlib.sha256(await _payload(b)).hexdigest() == hashlib.sha256(PNG).hexdigest()


async def _payload(client: Any) -> bytes:
    return bytes(decode_frame(await client.recv_frame()).data)


async def test_a_refusal_is_an_error_naming_the_transfer_and_changes_nothing(
    server: Server,
) -> None:
    a, b, tid, room = await accepted(server)
    await b.send("file-share-complete", {"transfer_id": tid, "sha256": "1" * 64})
    refusal = await b.recv("error")
    assert refusal["payload"]["code"] == "integrity-error"
    assert refusal["payload"]["transfer_id"] == tid
    assert (await server.transfer(room, a.user, tid))["status"] == "active"
    await a.silent(0.3, ignore=("file-share-progress",))


async def test_rest_accept_with_unsorted_ranges_is_422_and_leaves_the_offer_pending(
    server: Server,
) -> None:
    room, alice, bob = names("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob)
    await b.recv("file-share-offer")
    path = f"/webrtc/rooms/{room}/file-transfer/{tid}/accept"
    response = await server.request(bob, "POST", path, json={"missing": [[1, 2], [0, 1]]})
    assert response.status_code == 422, response.text
    assert "sorted" in response.json()["detail"]
    assert (await server.transfer(room, alice, tid))["status"] == "pending"


async def test_the_last_progress_change_is_always_broadcast(start_server: Any) -> None:
    server = await start_server(ROOMDROP_PROGRESS_INTERVAL="0.5")
    data = bytes(range(256)) * 1024  # 4 chunks, the last one short
    data = data[: 3 * CHUNK + 100]
    a, _b, tid, _room = await accepted(server, size=len(data))
    for i in range(4):
        await a.send_raw(frame(tid, i, 4, data[i * CHUNK : (i + 1) * CHUNK]))
    last = None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        last = await a.recv("file-share-progress")
        if last["payload"]["chunks_sent"] == 4:
            break
    assert last is not None and last["payload"]["chunks_sent"] == 4
    assert last["payload"]["progress_percent"] == 100.0


async def test_the_room_bandwidth_limit_paces_relayed_chunks(start_server: Any) -> None:
    server = await start_server(ROOMDROP_ROOM_BANDWIDTH=str(4 * CHUNK))  # 256 KiB/s
    data = b"\x01" * (16 * CHUNK)  # 1 MiB: a burst of 256 KiB, then 3 s of pacing
    a, b, tid, _room = await accepted(server, size=len(data))
    started = time.monotonic()
    for i in range(16):
        await a.send_raw(frame(tid, i, 16, data[i * CHUNK : (i + 1) * CHUNK]))
    for _ in range(16):
        await b.recv_frame(timeout=10)
    assert time.monotonic() - started >= 2.5


async def test_a_receiver_back_after_the_grace_window_still_gets_its_transfer_resumed(
    start_server: Any,
) -> None:
    server = await start_server(ROOMDROP_RECONNECT_GRACE="0.2")
    a, b, tid, room = await accepted(server)
    await b.close()
    pause = await a.recv("file-share-pause")
    assert pause["sender_id"] is None  # the server speaks, not the one who left
    await asyncio.sleep(0.5)
    b2 = await server.connect(room, b.user)
    await b2.recv("file-share-resume")
    assert (await server.transfer(room, a.user, tid))["status"] == "active"
