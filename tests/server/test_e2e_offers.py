"""End-to-end encrypted offers and chunks against a real ``roomdrop serve``
(docs/protocol.md §14.3): an offer without its sealed key is refused where the server
requires one, and one sealed to a key a party did not publish; the record keeps the
sealed key for take-up; a chunk in the clear of an encrypted transfer is refused (the
next good one goes through); a JSON chunk of ciphertext reaches the receiver as a
sealed frame it decrypts; a chunk replayed at another index does not decrypt."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from roomdrop.e2e import DeviceKey, E2EError
from roomdrop.protocol.frames import HEADER, HEADER_SIZE, decode_frame
from server.e2etools import (
    CHUNK,
    clear_chunk_of,
    frame_of,
    json_chunk_of,
    offer_fields,
    open_as_receiver,
    plaintext_of,
    rest_offer_body,
    seal,
    sealed_frame,
)

if TYPE_CHECKING:
    from conftest import Client, Server

OFFER_PATH = "/webrtc/rooms/{room}/file-transfer/offer"


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


async def accepted(
    server: Server, room: str, sender: str, receiver: str, **fields: Any
) -> tuple[Client, Client, str, dict[str, Any]]:
    """``sender`` offers ``receiver`` a sealed offer, which ``receiver`` accepts; the
    offer as the receiver got it."""
    a, b = await server.pair(room, sender, receiver)
    tid = await a.offer(receiver, **fields)
    offer = (await b.recv("file-share-offer"))["payload"]
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    await b.recv("file-share-accept")
    return a, b, tid, offer


# --- offers ----------------------------------------------------------------------------


async def test_an_offer_without_e2e_is_refused_over_websocket_and_rest(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob, e2e=False)
    refusal = await a.recv_refusal()
    assert refusal["type"] == "error"
    assert refusal["payload"]["code"] == "e2e-required"
    assert refusal["payload"]["transfer_id"] == tid
    assert "only end-to-end encrypted transfers" in refusal["payload"]["message"]
    await b.silent(0.3)

    body = {k: v for k, v in offer_fields(bob).items() if k != "total_chunks"}
    response = await server.request(alice, "POST", OFFER_PATH.format(room=room), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "e2e-required"
    assert (await server.request(alice, "GET", "/webrtc/file-transfers")).json() == []


async def test_an_offer_sealed_to_a_key_a_party_did_not_publish_is_refused(
    server: Server,
) -> None:
    room, alice, bob, carol = fresh("room", "alice", "bob", "carol")
    a, b = await server.pair(room, alice, bob)
    await server.connect(room, carol, key=None)
    await a.recv("user-joined")
    old = DeviceKey.generate()
    cases = {
        "stale receiver key": seal(alice, offer_fields(bob), receiver_key=old.public_text),
        "stale sender key": seal(alice, offer_fields(bob), sender_device=old),
        "published no device key": seal(
            alice, offer_fields(carol), receiver_key=DeviceKey.generate().public_text
        ),
    }
    for expected, payload in cases.items():
        await a.send("file-share-offer", payload)
        refusal = await a.recv_refusal()
        assert refusal["payload"]["code"] == "e2e-failed", refusal
        assert expected in refusal["payload"]["message"], refusal
        assert refusal["payload"]["transfer_id"] == payload["transfer_id"]

        body = {k: v for k, v in payload.items() if k != "total_chunks"}
        body["transfer_id"] = str(uuid.uuid4())  # a new id: the binding no longer matters
        response = await server.request(alice, "POST", OFFER_PATH.format(room=room), json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "e2e-failed"
        assert expected in response.json()["detail"]
    await b.silent(0.3, ignore=("user-joined",))
    assert (await server.request(alice, "GET", "/webrtc/file-transfers")).json() == []


async def test_a_rest_offer_with_e2e_names_its_id_and_chunk_size_and_its_record_keeps_it(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    path = OFFER_PATH.format(room=room)
    for missing in ("transfer_id", "chunk_size"):
        body = rest_offer_body(alice, bob)
        del body[missing]
        response = await server.request(alice, "POST", path, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "protocol-error"
        assert "must give transfer_id and chunk_size" in response.json()["detail"]

    body = rest_offer_body(alice, bob, size=5 * CHUNK)
    response = await server.request(alice, "POST", path, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["e2e"] == body["e2e"]
    offer = (await b.recv("file-share-offer"))["payload"]
    assert offer["e2e"] == body["e2e"]
    cipher = open_as_receiver(bob, alice, offer)  # the receiver opens what it was sent
    assert cipher.open(0, cipher.seal(0, b"x")) == b"x"
    assert (await server.transfer(room, bob, body["transfer_id"]))["e2e"] == body["e2e"]

    # a sender that restarted finds its sealed key in room-state (take-up)
    await a.close()
    again = await server.connect(room, alice, room_state=False)
    state = (await again.recv("room-state"))["payload"]
    [record] = state["transfers"]
    assert (record["transfer_id"], record["e2e"]) == (body["transfer_id"], body["e2e"])


# --- chunks ----------------------------------------------------------------------------


async def test_a_clear_chunk_of_an_encrypted_transfer_is_refused_and_the_next_goes_through(
    server: Server,
) -> None:
    data = os.urandom(2 * CHUNK + 300)
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid, _offer = await accepted(
        server, room, alice, bob, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    await a.send_raw(sealed_frame(tid, 0, 3, data[:CHUNK]))
    assert plaintext_of(await b.recv_frame()) == data[:CHUNK]

    await a.send_raw(frame_of(clear_chunk_of(tid, 1, 3, data[CHUNK : 2 * CHUNK])))
    refusal = await a.recv_refusal()
    assert refusal["payload"] == {
        "code": "protocol-error",
        "message": f"chunk 1 of {tid} is not sealed, but the transfer is end-to-end "
        "encrypted: its chunks travel as ciphertext only",
    }
    await b.silent(0.3, ignore=("file-share-progress",))

    await a.send_raw(sealed_frame(tid, 1, 3, data[CHUNK : 2 * CHUNK]))
    assert plaintext_of(await b.recv_frame()) == data[CHUNK : 2 * CHUNK]
    # a sealed chunk of the wrong length (the plaintext's, without the tag) is refused too
    short = sealed_frame(tid, 2, 3, data[2 * CHUNK :])[:-1]
    fields = list(HEADER.unpack_from(short))
    fields[7] -= 1
    await a.send_raw(HEADER.pack(*fields) + short[HEADER_SIZE:])
    refusal = await a.recv_refusal()
    assert refusal["payload"]["message"] == (
        "chunk 2 has 315 bytes, expected 316 (its plaintext and the 16-byte tag)"
    )
    await a.send_raw(sealed_frame(tid, 2, 3, data[2 * CHUNK :]))
    assert plaintext_of(await b.recv_frame()) == data[2 * CHUNK :]
    assert (await server.transfer(room, alice, tid))["status"] == "active"


async def test_a_json_chunk_of_ciphertext_reaches_the_receiver_as_a_sealed_frame(
    server: Server,
) -> None:
    data = b"json chunk, end to end " * 100
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid, offer = await accepted(
        server, room, alice, bob, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    payload = json_chunk_of(tid, 0, 1, data)
    wrong = {**payload, "checksum": hashlib.sha256(b"something else").hexdigest()}
    await a.send("file-share-chunk", wrong)
    request = await a.recv("file-share-chunk-request")
    assert request["payload"] == {"transfer_id": tid, "ranges": [[0, 1]], "reason": "bad-checksum"}

    await a.send("file-share-chunk", payload)
    frame = decode_frame(await b.recv_frame())
    assert frame.sealed and frame.checksum == "0" * 64
    assert len(frame.data) == len(data) + 16
    assert data not in bytes(frame.data)
    receiver = open_as_receiver(bob, alice, offer)  # the receiver's own key, not the test's
    assert receiver.open(0, frame.data) == data


async def test_a_chunk_replayed_at_another_index_does_not_decrypt(server: Server) -> None:
    data = os.urandom(3 * CHUNK)
    room, alice, bob = fresh("room", "alice", "bob")
    a, b, tid, offer = await accepted(
        server, room, alice, bob, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    receiver = open_as_receiver(bob, alice, offer)
    first = sealed_frame(tid, 0, 3, data[:CHUNK])
    fields = list(HEADER.unpack_from(first))
    fields[4] = 1  # chunk 0's ciphertext as chunk 1: the server cannot tell
    await a.send_raw(HEADER.pack(*fields) + first[HEADER_SIZE:])
    replayed = decode_frame(await b.recv_frame())
    assert replayed.chunk_index == 1
    with pytest.raises(E2EError, match="chunk 1 does not decrypt"):
        receiver.open(1, replayed.data)
    await a.send_raw(sealed_frame(tid, 1, 3, data[CHUNK : 2 * CHUNK]))
    assert receiver.open(1, decode_frame(await b.recv_frame()).data) == data[CHUNK : 2 * CHUNK]


async def test_a_server_that_allows_it_carries_an_offer_in_the_clear(
    start_server: Any,
) -> None:
    server: Server = await start_server(ROOMDROP_REQUIRE_E2E="0")
    data = b"in the clear " * 50
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob, e2e=False, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    offer = (await b.recv("file-share-offer"))["payload"]
    assert "e2e" not in offer
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    await a.send_raw(frame_of(clear_chunk_of(tid, 0, 1, data)))
    frame = decode_frame(await b.recv_frame())
    assert not frame.sealed and bytes(frame.data) == data
    assert (await server.transfer(room, alice, tid))["e2e"] is None
    # and an encrypted one is still checked against the published keys
    stale = seal(alice, offer_fields(bob), receiver_key=DeviceKey.generate().public_text)
    await a.send("file-share-offer", stale)
    assert (await a.recv_refusal())["payload"]["code"] == "e2e-failed"
