"""Control messages against a real ``roomdrop serve``: joining and leaving, signalling,
the file-share flow over WebSocket and its REST twin, bad input, the control-message rate
limit and policy refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from roomdrop.protocol.frames import Chunk, decode_frame, encode_frames
from roomdrop.protocol.names import sanitize_filename
from server.e2etools import public

if TYPE_CHECKING:
    from conftest import Client, Server

CHUNK = 64 * 1024
DATA = (b"roomdrop test data, nothing magic about it. " * 4500)[: 3 * CHUNK - 100]
DATA_SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # the clear path: the seed's messages as they were, the server checking each chunk's sha256:
    # a server that allows clear transfers
    return {"ROOMDROP_REQUIRE_E2E": "false"}


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


def chunks_of(tid: str, data: bytes, chunk_size: int = CHUNK) -> list[Chunk]:
    total = -(-len(data) // chunk_size)
    out = []
    for index in range(total):
        piece = data[index * chunk_size : (index + 1) * chunk_size]
        out.append(Chunk(tid, index, total, chunk_size, piece, hashlib.sha256(piece).hexdigest()))
    return out


def frame_of(chunk: Chunk) -> bytes:
    (frame,) = encode_frames(chunk)
    return frame


async def start_transfer(
    server: Server, room: str, sender: str, receiver: str, data: bytes = DATA
) -> tuple[Client, Client, str]:
    """Two participants and an accepted (active) transfer of ``data`` between them."""
    a, b = await server.pair(room, sender, receiver)
    tid = await a.offer(receiver, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    await b.recv("file-share-accept")
    return a, b, tid


async def relay_whole_file(server: Server, room: str, data: bytes) -> dict[str, Any]:
    """A relayed transfer from start to ``file-share-complete``; its final record."""
    sender, receiver = fresh("sender", "receiver")
    a, b, tid = await start_transfer(server, room, sender, receiver, data)
    chunks = chunks_of(tid, data)
    received = bytearray(len(data))

    async def receive() -> None:
        for _ in chunks:
            frame = decode_frame(await b.recv_frame())
            assert frame.is_whole
            assert hashlib.sha256(frame.data).hexdigest() == frame.checksum
            start = frame.chunk_index * CHUNK
            received[start : start + len(frame.data)] = frame.data

    receiving = server.spawn(receive())
    for chunk in chunks:
        await a.send_raw(frame_of(chunk))
    await asyncio.wait_for(receiving, 10)
    assert bytes(received) == data
    await b.send(
        "file-share-complete", {"transfer_id": tid, "sha256": hashlib.sha256(data).hexdigest()}
    )
    await a.recv("file-share-complete")
    return await server.transfer(room, sender, tid)


# --- rooms -----------------------------------------------------------------------------


async def test_joining_gives_the_newcomer_room_state_and_the_others_user_joined(
    server: Server,
) -> None:
    room, elsewhere, alice, bob, carol = fresh("room", "elsewhere", "alice", "bob", "carol")
    a = await server.connect(room, alice, room_state=False)
    state = await a.recv("room-state")
    assert state["payload"]["participants"] == [alice]
    assert state["room_id"] == room
    c = await server.connect(elsewhere, carol)

    b = await server.connect(room, bob, room_state=False)
    state = await b.recv("room-state")
    assert sorted(state["payload"]["participants"]) == sorted([alice, bob])
    joined = await a.recv("user-joined")
    assert joined["payload"] == {"user_id": bob, "key": public(bob)}
    assert joined["room_id"] == room
    await b.silent(0.2)  # no user-joined about itself

    await b.close()
    left = await a.recv("user-left")
    assert left["payload"] == {"user_id": bob}
    assert left["room_id"] == room
    await c.silent(0.3)  # nothing of another room


# --- signalling ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["offer", "answer", "ice-candidate"])
async def test_signalling_reaches_only_its_target_stamped_by_the_server(
    server: Server, kind: str
) -> None:
    room, alice, bob, carol = fresh("room", "alice", "bob", "carol")
    a, b = await server.pair(room, alice, bob)
    c = await server.connect(room, carol)
    await a.recv("user-joined")
    await b.recv("user-joined")
    payload = {"target_id": bob, "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1", "n": [1, {"k": 2}]}
    await a.send(kind, payload, sender_id=carol, room_id="another-room", timestamp="forged")

    got = await b.recv(kind)
    assert got["payload"] == payload
    assert got["sender_id"] == alice
    assert got["room_id"] == room
    assert got["timestamp"] != "forged"
    await asyncio.gather(c.silent(0.5), a.silent(0.5))


async def test_signalling_passes_its_payload_through_untouched_nulls_included(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    # the end-of-candidates signal of WebRTC: onicecandidate with candidate null
    payload = {"target_id": bob, "candidate": None, "sdpMid": "0", "usernameFragment": None}
    await a.send("ice-candidate", payload)
    got = await b.recv("ice-candidate")
    assert got["payload"] == payload


async def test_signalling_to_someone_not_in_the_room_is_refused_naming_them(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, _ = await server.pair(room, alice, bob)
    await a.send("ice-candidate", {"target_id": "zed", "candidate": "x"})
    refusal = await a.recv("error")
    assert refusal["payload"]["code"] == "forbidden"
    assert "'zed'" in refusal["payload"]["message"], refusal
    assert "you are" not in refusal["payload"]["message"], refusal


# --- the file-share flow ---------------------------------------------------------------


def normalise(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A message without its timestamp, with ids replaced by their roles."""
    text = json.dumps({k: v for k, v in message.items() if k != "timestamp"}, sort_keys=True)
    for value, role in names.items():
        text = text.replace(value, role)
    return dict(json.loads(text))


async def run_flow(server: Server, via: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """offer, accept, pause, resume, cancel (and offer, reject) over ``via`` ("ws" or
    "rest"); per step: the status after it, and what each party received (normalised)."""
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    base = f"/webrtc/rooms/{room}/file-transfer"
    steps: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    ids = {room: "ROOM", alice: "ALICE", bob: "BOB"}

    async def step(
        actor: Client, kind: str, payload: dict[str, Any], rest: Callable[[], Any], status: str
    ) -> None:
        if via == "ws":
            await actor.send(kind, payload)
        else:
            response = await rest()
            assert response.status_code == 200, f"{kind}: {response.text}"
            assert response.json()["status"] == status, f"{kind}: {response.text}"
        got_a, got_b = await a.recv(kind), await b.recv(kind)
        record = await server.transfer(room, alice, str(payload["transfer_id"]))
        assert record["status"] == status, (kind, record)
        steps.append((status, normalise(got_a, ids), normalise(got_b, ids)))

    for tid, ending in [(str(uuid.uuid4()), "cancel"), (str(uuid.uuid4()), "reject")]:
        ids[tid] = f"TRANSFER-{ending}"
        offer = a.offer_payload(bob, size=len(DATA), sha256=DATA_SHA, transfer_id=tid)
        rest_offer = {k: v for k, v in offer.items() if k != "total_chunks"}
        ref = {"transfer_id": tid}

        def post(user: str, action: str, tid: str = tid, **kw: Any) -> Callable[[], Any]:
            path = f"{base}/offer" if action == "offer" else f"{base}/{tid}/{action}"
            return lambda: server.request(user, "POST", path, **kw)

        await step(a, "file-share-offer", offer, post(alice, "offer", json=rest_offer), "pending")
        if ending == "reject":
            why = {"reason": "no thanks"}
            await step(b, "file-share-reject", ref | why, post(bob, "reject", json=why), "rejected")
            continue
        await step(b, "file-share-accept", ref, post(bob, "accept"), "active")
        await step(a, "file-share-pause", ref, post(alice, "pause"), "paused")
        await step(b, "file-share-resume", ref, post(bob, "resume"), "active")

        def delete(tid: str = tid) -> Any:
            return server.request(alice, "DELETE", f"{base}/{tid}", params={"reason": "done"})

        await step(a, "file-share-cancel", ref | {"reason": "done"}, delete, "cancelled")
        record = await server.transfer(room, alice, tid)
        assert record["error"] == "done"
    return steps


async def test_offer_accept_pause_resume_cancel_over_websocket_reach_both_parties(
    server: Server,
) -> None:
    observed = await run_flow(server, "ws")
    expected_senders = ["ALICE", "BOB", "ALICE", "BOB", "ALICE", "ALICE", "BOB"]
    expected_types = [
        "file-share-offer",
        "file-share-accept",
        "file-share-pause",
        "file-share-resume",
        "file-share-cancel",
        "file-share-offer",
        "file-share-reject",
    ]
    assert [s[0] for s in observed] == [
        "pending",
        "active",
        "paused",
        "active",
        "cancelled",
        "pending",
        "rejected",
    ]
    for (_, to_alice, to_bob), sender, kind in zip(
        observed, expected_senders, expected_types, strict=True
    ):
        assert to_alice == to_bob, "both parties get the same message"
        assert to_alice["type"] == kind
        assert to_alice["sender_id"] == sender
        assert to_alice["room_id"] == "ROOM"
    offer = observed[0][1]["payload"]
    assert offer["receiver_id"] == "BOB" and offer["sha256"] == DATA_SHA
    assert offer["total_chunks"] == 3 and offer["file_size"] == len(DATA)
    assert observed[4][1]["payload"] == {"transfer_id": "TRANSFER-cancel", "reason": "done"}
    assert observed[6][1]["payload"] == {"transfer_id": "TRANSFER-reject", "reason": "no thanks"}


async def test_each_rest_action_sends_the_same_messages_as_its_websocket_twin(
    server: Server,
) -> None:
    over_ws = await run_flow(server, "ws")
    over_rest = await run_flow(server, "rest")
    assert over_rest == over_ws


# --- bad input -------------------------------------------------------------------------


def _json(obj: Any) -> Callable[[str, str], str]:
    return lambda tid, bob: json.dumps(obj).replace("BOB", bob).replace("TID", tid)


def _frame(index: int, total: int, data: bytes, tid: str | None = None) -> Callable[..., bytes]:
    def make(active: str, bob: str) -> bytes:
        chunk = Chunk(tid or active, index, total, CHUNK, data, hashlib.sha256(data).hexdigest())
        return frame_of(chunk)

    return make


UNKNOWN = str(uuid.uuid4())
BAD_INPUT: dict[str, tuple[Callable[[str, str], str | bytes], str, str]] = {
    # (what alice sends, made from the active transfer's id and bob's name; the code of
    # the refusal; a regular expression its message must match)
    "invalid json": (lambda tid, bob: '{"type": "offer", ', "protocol-error", "invalid JSON"),
    "not an object": (_json(["offer"]), "protocol-error", "a message is a JSON object, not list"),
    "unknown type": (
        _json({"type": "file-share-teleport", "payload": {}}),
        "protocol-error",
        "unknown message type 'file-share-teleport'",
    ),
    "no type": (_json({"payload": {}}), "protocol-error", "type: Field required"),
    "missing fields": (
        _json({"type": "file-share-offer", "payload": {"receiver_id": "BOB"}}),
        "protocol-error",
        "file-share-offer: payload.transfer_id: Field required",
    ),
    "no target": (
        _json({"type": "ice-candidate", "payload": {"candidate": "x"}}),
        "protocol-error",
        "ice-candidate: payload.target_id: Field required",
    ),
    "server-only room-state": (
        _json({"type": "room-state", "payload": {"participants": ["BOB"]}}),
        "protocol-error",
        "room-state is sent by the server",
    ),
    "server-only user-left": (
        _json({"type": "user-left", "payload": {"user_id": "BOB"}}),
        "protocol-error",
        "user-left is sent by the server",
    ),
    "binary garbage": (lambda tid, bob: b"\x00\xffgarbage" * 20, "protocol-error", "frame magic"),
    "short frame": (lambda tid, bob: b"RD\x01", "protocol-error", "shorter than the 72-byte"),
    "frame for an unknown transfer": (
        _frame(0, 3, b"x" * CHUNK, UNKNOWN),
        "unknown-transfer",
        UNKNOWN,
    ),
    "frame index out of range": (
        _frame(3, 3, b"x" * 100),
        "protocol-error",
        "chunk_index 3 is not below total_chunks 3",
    ),
    "json chunk index out of range": (
        _json(
            {
                "type": "file-share-chunk",
                "payload": {
                    "transfer_id": "TID",
                    "chunk_index": 7,
                    "total_chunks": 3,
                    "chunk_size": CHUNK,
                    "data": "eHh4",
                    "checksum": hashlib.sha256(b"xxx").hexdigest(),
                },
            }
        ),
        "protocol-error",
        "chunk_index 7 is not below total_chunks 3",
    ),
    "frame of the wrong length": (
        _frame(0, 3, b"short"),
        "protocol-error",
        "chunk 0 has 5 bytes, expected 65536",
    ),
    "offer reusing a transfer id": (
        _json(
            {
                "type": "file-share-offer",
                "payload": {
                    "transfer_id": "TID",
                    "receiver_id": "BOB",
                    "filename": "again.bin",
                    "file_size": 10,
                    "chunk_size": CHUNK,
                    "total_chunks": 1,
                    "sha256": "0" * 64,
                },
            }
        ),
        "protocol-error",
        "is already known here",
    ),
    "resume of an active transfer": (
        _json({"type": "file-share-resume", "payload": {"transfer_id": "TID"}}),
        "invalid-transition",
        "is active: cannot resume",
    ),
    "JSON nested 5000 deep": (
        lambda tid, bob: "[" * 5000 + "]" * 5000,
        "protocol-error",
        r"(?i)nest|deep|depth|recursion|invalid JSON",
    ),
    "over 256 KiB": (
        _json({"type": "ice-candidate", "payload": {"target_id": "BOB", "pad": "x" * 300_000}}),
        "protocol-error",
        "exceeds the 262144-byte limit",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
async def test_bad_input_is_refused_precisely_and_harms_nothing_else(
    server: Server, case: str
) -> None:
    make, code, fragment = BAD_INPUT[case]
    room, other, alice, bob = fresh("room", "other", "alice", "bob")
    a, b, tid = await start_transfer(server, room, alice, bob)
    other_pair = server.spawn(relay_whole_file(server, other, DATA * 5))

    await a.send_raw(make(tid, bob))
    refusal = await a.recv_refusal()
    assert refusal["payload"]["code"] == code, refusal
    assert re.search(fragment, refusal["payload"]["message"]), refusal
    assert refusal["room_id"] == room

    # the same socket still works: signalling, then a relayed chunk
    await a.send("ice-candidate", {"target_id": bob, "candidate": "after"})
    assert (await b.recv("ice-candidate"))["payload"]["candidate"] == "after"
    first = chunks_of(tid, DATA)[0]
    await a.send_raw(frame_of(first))
    relayed = decode_frame(await b.recv_frame())
    assert (relayed.transfer_id, relayed.chunk_index) == (tid, 0)
    assert bytes(relayed.data) == first.data
    assert (await server.transfer(room, alice, tid))["status"] == "active"
    # and a transfer in another room went through
    record = await asyncio.wait_for(other_pair, 15)
    assert record["status"] == "completed"


async def test_a_hostile_filename_is_sanitised_in_the_transfer_object(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    hostile = "../../.ssh/\x00evil\u202egpj.exe"
    tid = await a.offer(bob, filename=hostile)
    await b.recv("file-share-offer")
    record = await server.transfer(room, bob, tid)
    assert record["filename"] == sanitize_filename(hostile) == "evilgpj.exe"
    listed = await server.request(bob, "GET", "/webrtc/file-transfers")
    assert [t["filename"] for t in listed.json()] == ["evilgpj.exe"]
    # the socket carries on
    await a.send("ice-candidate", {"target_id": bob, "candidate": "after"})
    assert (await b.recv("ice-candidate"))["payload"]["candidate"] == "after"


async def test_control_messages_past_the_rate_limit_are_answered_rate_limited(
    start_server: Callable[..., Any],
) -> None:
    server: Server = await start_server(ROOMDROP_CONTROL_RATE="2", ROOMDROP_CONTROL_BURST="5")
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    sent = 12
    for i in range(sent):
        await a.send("ice-candidate", {"target_id": bob, "candidate": str(i)})
    refusals = 0
    delivered = 0
    while delivered + refusals < sent:
        refusal = await a.recv_refusal(timeout=2)
        assert refusal["payload"] == {
            "code": "rate-limited",
            "message": "more than 2 messages per second",
        }
        refusals += 1
        while True:  # count what reached bob so far
            try:
                await b.recv("ice-candidate", timeout=0.05)
            except AssertionError:
                break
            delivered += 1
    assert 5 <= delivered <= 7, (delivered, refusals)
    await asyncio.sleep(1.0)  # two tokens back
    await a.send("ice-candidate", {"target_id": bob, "candidate": "later"})
    assert (await b.recv("ice-candidate"))["payload"]["candidate"] == "later"


# --- policy ----------------------------------------------------------------------------

LIMIT = 1_000_000
DENIED = "application/x-msdownload"


@pytest.fixture
async def policy_server(start_server: Callable[..., Any]) -> Server:
    server: Server = await start_server(
        ROOMDROP_MAX_FILE_SIZE=str(LIMIT), ROOMDROP_MIME_DENY=json.dumps([DENIED])
    )
    return server


POLICY = {
    "file too large": (
        {"size": LIMIT + 1},
        413,
        "file-too-large",
        f"file of {LIMIT + 1} bytes exceeds the {LIMIT}-byte limit",
    ),
    "denied mime type": (
        {"mime_type": DENIED},
        422,
        "mime-type-not-allowed",
        f"files of type {DENIED} are not allowed here",
    ),
}


@pytest.mark.parametrize("case", list(POLICY))
async def test_an_offer_policy_refuses_is_refused_over_websocket_and_rest(
    policy_server: Server, case: str
) -> None:
    fields, status, code, message = POLICY[case]
    server = policy_server
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob, **fields)
    refusal = await a.recv_refusal()
    assert refusal["payload"]["code"] == code
    assert refusal["payload"]["message"] == message
    await b.silent(0.3)

    body = {k: v for k, v in a.offer_payload(bob, **fields).items() if k != "total_chunks"}
    response = await server.request(
        alice, "POST", f"/webrtc/rooms/{room}/file-transfer/offer", json=body
    )
    assert response.status_code == status, response.text
    assert response.json() == {"detail": message, "code": code}
    listed = await server.request(alice, "GET", "/webrtc/file-transfers")
    assert listed.json() == []
    missing = await server.request(
        alice, "GET", f"/webrtc/rooms/{room}/file-transfer/{tid}/progress"
    )
    assert missing.status_code == 404

    allowed = await a.offer(bob)  # the socket carries on; an ordinary offer goes through
    assert (await b.recv("file-share-offer"))["payload"]["transfer_id"] == allowed


async def test_a_sixth_concurrent_transfer_of_one_user_is_refused(server: Server) -> None:
    room, alice, bob, carol = fresh("room", "alice", "bob", "carol")
    a, b = await server.pair(room, alice, bob)
    c = await server.connect(room, carol)
    offered = [await a.offer(bob) for _ in range(5)]
    for tid in offered:
        assert (await b.recv("file-share-offer"))["payload"]["transfer_id"] == tid

    sixth = await a.offer(carol)
    refusal = await a.recv_refusal()
    assert refusal["payload"] == {
        "code": "too-many-transfers",
        "message": f"{alice} already has 5 transfers under way",
        "transfer_id": sixth,
    }
    body = {k: v for k, v in a.offer_payload(carol).items() if k != "total_chunks"}
    path = f"/webrtc/rooms/{room}/file-transfer/offer"
    response = await server.request(alice, "POST", path, json=body)
    assert response.status_code == 429, response.text
    assert response.json() == {
        "detail": f"{alice} already has 5 transfers under way",
        "code": "too-many-transfers",
    }
    await c.silent(0.3, ignore=("user-joined",))

    # one ends: there is room for one more
    await b.send("file-share-reject", {"transfer_id": offered[0]})
    await a.recv("file-share-reject")
    response = await server.request(alice, "POST", path, json=body)
    assert response.status_code == 200, response.text
    assert (await c.recv("file-share-offer"))["payload"]["transfer_id"] == body["transfer_id"]


async def test_accepting_over_websocket_with_missing_ranges_past_the_end_is_refused(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob)  # 3 chunks
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": tid, "missing": [[0, 1000]]})
    refusal = await b.recv_refusal()
    assert refusal["payload"]["code"] == "protocol-error", refusal
    assert "total_chunks 3" in refusal["payload"]["message"], refusal
    record = await server.transfer(room, alice, tid)
    assert record["status"] == "pending", record
    assert (record["chunks_sent"], record["progress_percent"]) == (0, 0.0), record
    await b.send("file-share-accept", {"transfer_id": tid, "missing": [[1, 3]]})
    assert (await a.recv("file-share-accept"))["payload"]["missing"] == [[1, 3]]


async def test_accepting_over_rest_with_missing_ranges_past_the_end_is_422(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob)  # 3 chunks
    await b.recv("file-share-offer")
    path = f"/webrtc/rooms/{room}/file-transfer/{tid}/accept"
    response = await server.request(bob, "POST", path, json={"missing": [[0, 1000]]})
    assert response.status_code == 422, response.text
    assert "total_chunks 3" in response.json()["detail"], response.text
    record = await server.transfer(room, alice, tid)
    assert record["status"] == "pending", record
    assert (record["chunks_sent"], record["progress_percent"]) == (0, 0.0), record


async def test_a_signalling_payload_nested_300_deep_does_not_break_the_socket(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    nested: Any = []
    for _ in range(300):
        nested = [nested]
    await a.send("ice-candidate", {"target_id": bob, "candidate": nested})
    # forwarded intact, or refused: either way nothing else breaks
    try:
        got = await b.recv("ice-candidate", timeout=1)
        assert got["payload"]["candidate"] == nested
    except AssertionError:
        refusal = await a.recv_refusal(timeout=1)
        assert refusal["payload"]["code"] == "protocol-error", refusal
    await a.send("ice-candidate", {"target_id": bob, "candidate": "after"})
    assert (await b.recv("ice-candidate"))["payload"]["candidate"] == "after"


async def test_an_eleventh_live_transfer_in_a_room_is_refused(server: Server) -> None:
    room, alice, bob, carol, dave, erin, frank = fresh(
        "room", "alice", "bob", "carol", "dave", "erin", "frank"
    )
    a, _ = await server.pair(room, alice, bob)
    c = await server.connect(room, carol)
    await server.connect(room, dave)
    e = await server.connect(room, erin)
    await server.connect(room, frank)
    for _ in range(5):
        await a.offer(bob)
        await a.recv("file-share-offer")
        await c.offer(dave)
        await c.recv("file-share-offer")
    eleventh = await e.offer(frank)
    refusal = await e.recv_refusal()
    assert refusal["payload"] == {
        "code": "too-many-transfers",
        "message": f"room {room} already has 10 transfers under way",
        "transfer_id": eleventh,
    }
