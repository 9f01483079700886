"""The wire models are strict about JSON types, against a real ``roomdrop serve``, over
the WebSocket and over REST: an integer field takes a JSON integer only (not ``"10"``,
``10.0`` or ``true``), a number field an integer or a float (not a string or a boolean),
a string field a string. Each wrong type is refused with the documented refusal
(``error`` ``protocol-error`` naming the field; 422 with the error body over REST) and
changes nothing."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Client, Server

CHUNK = 64 * 1024
SHA = "ef" * 32
INTEGER = "Input should be a valid integer"
NUMBER = "Input should be a valid number"
STRING = "Input should be a valid string"
LOOSE_INTEGERS = ("10", 10.0, True)


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # how a mistyped field is refused is what this module is about: its offers are in the
    # clear (the e2e part's own checks are in test_e2e_offers.py)
    return {"ROOMDROP_REQUIRE_E2E": "false"}


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


def offer(receiver: str, **fields: Any) -> dict[str, Any]:
    return {
        "transfer_id": str(uuid.uuid4()),
        "receiver_id": receiver,
        "filename": "a.bin",
        "file_size": 10,
        "mime_type": "application/octet-stream",
        "chunk_size": CHUNK,
        "total_chunks": 1,
        "sha256": SHA,
        **fields,
    }


def ws_cases(tid: str, bob: str) -> list[tuple[str, dict[str, Any], str, str]]:
    """(type, payload, field path, the message's end) for each mistyped field."""
    data = b"x" * 10
    chunk = {
        "transfer_id": tid,
        "chunk_index": 0,
        "total_chunks": 1,
        "chunk_size": CHUNK,
        "data": "eHh4eHh4eHh4eA==",
        "checksum": hashlib.sha256(data).hexdigest(),
    }
    progress = {
        "transfer_id": tid,
        "chunks_sent": 0,
        "bytes_transferred": 0,
        "progress_percent": 0.0,
    }
    cases: list[tuple[str, dict[str, Any], str, str]] = []
    for loose in LOOSE_INTEGERS:
        for field in ("file_size", "chunk_size", "total_chunks"):
            cases.append(("file-share-offer", offer(bob, **{field: loose}), field, INTEGER))
        for field in ("chunk_index", "total_chunks", "chunk_size"):
            cases.append(("file-share-chunk", {**chunk, field: loose}, field, INTEGER))
        for field in ("chunks_sent", "bytes_transferred"):
            cases.append(("file-share-progress", {**progress, field: loose}, field, INTEGER))
        cases.append(
            (
                "file-share-accept",
                {"transfer_id": tid, "missing": [[0, loose]]},
                "missing.0.1",
                INTEGER,
            )
        )
        cases.append(
            (
                "file-share-chunk-request",
                {"transfer_id": tid, "ranges": [[loose, 11]]},
                "ranges.0.0",
                INTEGER,
            )
        )
    for loose in ("50", True):
        for field in ("progress_percent", "speed_bps", "eta_seconds"):
            cases.append(("file-share-progress", {**progress, field: loose}, field, NUMBER))
    for field in ("receiver_id", "filename", "mime_type", "sha256"):
        cases.append(("file-share-offer", offer(bob, **{field: 5}), field, STRING))
    cases += [
        ("file-share-chunk", {**chunk, "data": 5}, "data", STRING),
        ("file-share-chunk", {**chunk, "checksum": 5}, "checksum", STRING),
        ("file-share-cancel", {"transfer_id": tid, "reason": 5}, "reason", STRING),
        ("file-share-complete", {"transfer_id": tid, "sha256": 5}, "sha256", STRING),
        ("file-share-error", {"transfer_id": tid, "code": 5, "message": "m"}, "code", STRING),
        ("file-share-error", {"transfer_id": tid, "code": "c", "message": 5}, "message", STRING),
        ("ice-candidate", {"target_id": 5, "candidate": "x"}, "target_id", STRING),
    ]
    return cases


async def active(server: Server) -> tuple[Client, Client, str]:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob, size=10 * CHUNK, sha256=SHA)
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    await b.recv("file-share-accept")
    return a, b, tid


async def test_a_mistyped_field_of_any_message_is_refused_naming_it(server: Server) -> None:
    a, b, tid = await active(server)
    for kind, payload, field, expected in ws_cases(tid, b.user):
        sender = b if kind in ("file-share-accept", "file-share-chunk-request") else a
        await sender.send(kind, payload)
        refusal = await sender.recv_refusal()
        assert refusal["type"] == "error", (kind, field, refusal)
        assert refusal["payload"]["code"] == "protocol-error", (kind, field, refusal)
        assert refusal["payload"]["message"] == f"{kind}: payload.{field}: {expected}", refusal
    record = await server.transfer(a.room, a.user, tid)
    assert (record["status"], record["chunks_sent"]) == ("active", 0)
    listed = await server.request(b.user, "GET", "/webrtc/file-transfers")
    assert [t["transfer_id"] for t in listed.json()] == [tid]  # no mistyped offer got in
    await b.silent(0.3, ignore=("file-share-progress",))


async def test_the_envelope_is_strict_too_and_an_integer_is_a_number(server: Server) -> None:
    a, b, tid = await active(server)
    await a.send_raw(
        json.dumps({"type": "file-share-pause", "payload": {"transfer_id": tid}, "sender_id": 5})
    )
    refusal = await a.recv_refusal()
    assert refusal["payload"]["message"] == f"envelope: sender_id: {STRING}", refusal
    # a JSON integer is a number: this report is taken (no refusal before the next one's)
    report = {"transfer_id": tid, "chunks_sent": 0, "bytes_transferred": 0}
    await b.send("file-share-progress", {**report, "progress_percent": 0, "speed_bps": 1})
    await b.send("file-share-progress", {**report, "progress_percent": False})
    refusal = await b.recv_refusal()
    assert refusal["payload"]["message"].endswith(f"progress_percent: {NUMBER}"), refusal


REST_OFFER_CASES = [
    *[(field, loose, INTEGER) for field in ("file_size", "chunk_size") for loose in LOOSE_INTEGERS],
    *[(field, 5, STRING) for field in ("receiver_id", "filename", "mime_type", "sha256")],
]


@pytest.mark.parametrize(("field", "value", "expected"), REST_OFFER_CASES)
async def test_a_mistyped_field_of_a_rest_offer_is_422_naming_it(
    server: Server, field: str, value: Any, expected: str
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    await server.pair(room, alice, bob)
    body = {"receiver_id": bob, "filename": "a.bin", "file_size": 10, "sha256": SHA}
    path = f"/webrtc/rooms/{room}/file-transfer/offer"
    response = await server.request(alice, "POST", path, json={**body, field: value})
    assert response.status_code == 422, response.text
    answer = response.json()
    assert (answer["detail"], answer["code"]) == (f"body.{field}: {expected}", "protocol-error")
    assert (await server.request(bob, "GET", "/webrtc/file-transfers")).json() == []
    accepted = await server.request(alice, "POST", path, json=body)
    assert accepted.status_code == 200, accepted.text


async def test_mistyped_accept_and_reject_bodies_are_422_and_change_nothing(
    server: Server,
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    await server.pair(room, alice, bob)
    body = {"receiver_id": bob, "filename": "a.bin", "file_size": 3 * CHUNK, "sha256": SHA}
    made = await server.request(
        alice, "POST", f"/webrtc/rooms/{room}/file-transfer/offer", json=body
    )
    assert made.status_code == 200, made.text
    tid = made.json()["transfer_id"]
    path = f"/webrtc/rooms/{room}/file-transfer/{tid}"
    for loose in LOOSE_INTEGERS:
        response = await server.request(
            bob, "POST", path + "/accept", json={"missing": [[loose, 3]]}
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == f"body.missing.0.0: {INTEGER}", response.text
    response = await server.request(bob, "POST", path + "/reject", json={"reason": 5})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"body.reason: {STRING}", response.text
    assert (await server.transfer(room, alice, tid))["status"] == "pending"
    accepted = await server.request(bob, "POST", path + "/accept", json={"missing": [[1, 3]]})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["chunks_sent"] == 1
