"""``ROOMDROP_REQUIRE_SCAN`` against a real ``roomdrop serve`` (each backend): the server
says so in ``room-state``, and takes an accept, over the WebSocket or REST, only from a
receiver that says it scans files for malware (``scan: true``, a claim it cannot check);
any other accept is refused with ``scan-required``, naming the transfer and saying how
to scan, and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Server


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ROOMDROP_REQUIRE_SCAN": "true"}


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


async def test_room_state_says_whether_receivers_must_scan(
    server: Server, start_server: Callable[..., Any]
) -> None:
    room, alice = fresh("room", "alice")
    a = await server.connect(room, alice, room_state=False)
    assert (await a.recv("room-state"))["payload"]["require_scan"] is True
    default = await start_server()
    b = await default.connect(room, alice, room_state=False)
    assert (await b.recv("room-state"))["payload"]["require_scan"] is False


@pytest.mark.parametrize("scan", [None, False])
async def test_an_accept_that_does_not_say_it_scans_is_refused_and_changes_nothing(
    server: Server, scan: bool | None
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob)
    await b.recv("file-share-offer")
    payload: dict[str, Any] = {"transfer_id": tid, "missing": [[0, 1]]}
    if scan is not None:
        payload["scan"] = scan
    await b.send("file-share-accept", payload)
    refusal = (await b.recv_refusal())["payload"]
    assert (refusal["code"], refusal["transfer_id"]) == ("scan-required", tid), refusal
    assert f"room {room} takes only receivers that scan" in refusal["message"]
    assert "roomdrop receive --scan URL" in refusal["message"]
    assert "the room page cannot scan" in refusal["message"]
    await a.silent(0.5, ignore=("file-share-offer",))
    assert (await server.transfer(room, alice, tid))["status"] == "pending"

    await b.send("file-share-accept", {"transfer_id": tid, "scan": True})
    for who in (a, b):
        accepted = await who.recv("file-share-accept")
        assert accepted["payload"] == {"transfer_id": tid, "scan": True}
    assert (await server.transfer(room, alice, tid))["status"] == "active"


async def test_the_rest_accept_requires_the_same(server: Server) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    tid = await a.offer(bob)
    await b.recv("file-share-offer")
    path = f"/webrtc/rooms/{room}/file-transfer/{tid}/accept"
    refused = await server.request(bob, "POST", path)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "scan-required"
    assert "roomdrop receive --scan URL" in refused.json()["detail"]
    strict = await server.request(bob, "POST", path, json={"scan": "yes"})
    assert (strict.status_code, strict.json()["code"]) == (422, "protocol-error")
    assert (await server.transfer(room, alice, tid))["status"] == "pending"
    accepted = await server.request(bob, "POST", path, json={"scan": True})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "active"
    assert (await a.recv("file-share-accept"))["payload"]["scan"] is True


async def test_without_the_setting_any_accept_is_taken_and_scan_is_passed_on(
    start_server: Callable[..., Any],
) -> None:
    server = await start_server()
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    first = await a.offer(bob)
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": first})
    assert (await a.recv("file-share-accept"))["payload"] == {"transfer_id": first}
    second = await a.offer(bob)
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": second, "scan": True})
    got = await a.recv("file-share-accept")
    assert got["payload"] == {"transfer_id": second, "scan": True}
