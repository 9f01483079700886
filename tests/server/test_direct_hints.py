"""``direct-hints`` against a real ``roomdrop serve``: forwarded to its target only,
stamped by the server; hints that are not addresses a peer can dial are refused with the
field at fault; a server with ``ROOMDROP_ALLOW_DIRECT=false`` says so in ``room-state``
and refuses them with ``direct-disabled``, the connection carrying on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Server

TOKEN = "A" * 21 + "Q"


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


def hints(target: str, **fields: Any) -> dict[str, Any]:
    return {
        "target_id": target,
        "token": TOKEN,
        "candidates": [{"host": "127.0.0.1", "port": 40000}, {"host": "::1", "port": 40001}],
        **fields,
    }


async def test_hints_reach_only_their_target_stamped_by_the_server(server: Server) -> None:
    room, alice, bob, carol = fresh("room", "alice", "bob", "carol")
    a, b = await server.pair(room, alice, bob)
    c = await server.connect(room, carol)
    await a.recv("user-joined")
    await b.recv("user-joined")
    await a.send("direct-hints", hints(bob), sender_id=carol)
    got = await b.recv("direct-hints")
    assert got["payload"] == hints(bob)
    answer = hints(alice, answers="B" * 21 + "w")
    await b.send("direct-hints", answer)
    assert (await a.recv("direct-hints"))["payload"] == answer
    assert (got["sender_id"], got["room_id"]) == (alice, room)
    await asyncio.gather(c.silent(0.5), a.silent(0.5))


async def test_room_state_says_the_server_forwards_hints(server: Server) -> None:
    room, alice = fresh("room", "alice")
    a = await server.connect(room, alice, room_state=False)
    assert (await a.recv("room-state"))["payload"]["direct"] is True


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"candidates": [{"host": "printer.local", "port": 1}]}, "is not an IP address"),
        ({"candidates": [{"host": "0.0.0.0", "port": 1}]}, "cannot be connected to"),
        ({"candidates": [{"host": "224.0.0.1", "port": 1}]}, "cannot be connected to"),
        ({"candidates": [{"host": "127.0.0.1", "port": 0}]}, "port"),
        ({"candidates": [{"host": "127.0.0.1", "port": "80"}]}, "port"),
        ({"candidates": [{"host": "127.0.0.1", "port": 1}] * 17}, "candidates"),
        ({"token": "short"}, "token"),
        ({"answers": "x" * 22}, "answers"),
        ({"extra": 1}, "extra"),
    ],
    ids=[
        "name",
        "wildcard",
        "multicast",
        "port-0",
        "port-string",
        "too-many",
        "token",
        "answers",
        "extra-field",
    ],
)
async def test_hints_a_peer_could_not_dial_are_refused_naming_the_field(
    server: Server, fields: dict[str, Any], said: str
) -> None:
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await server.pair(room, alice, bob)
    await a.send("direct-hints", hints(bob, **fields))
    refusal = (await a.recv_refusal())["payload"]
    assert refusal["code"] == "protocol-error", refusal
    assert said in refusal["message"], refusal
    await b.silent(0.3, ignore=("user-joined",))
    await a.send("direct-hints", hints(bob))  # the connection carries on
    assert (await b.recv("direct-hints"))["payload"]["token"] == TOKEN


async def test_a_server_that_disallows_direct_says_so_and_refuses_hints(
    start_server: Callable[..., Any],
) -> None:
    server = await start_server(ROOMDROP_ALLOW_DIRECT="false")
    room, alice, bob = fresh("room", "alice", "bob")
    a = await server.connect(room, alice, room_state=False)
    assert (await a.recv("room-state"))["payload"]["direct"] is False
    b = await server.connect(room, bob)
    await a.recv("user-joined")
    await a.send("direct-hints", hints(bob))
    refusal = (await a.recv_refusal())["payload"]
    assert refusal["code"] == "direct-disabled", refusal
    assert "ROOMDROP_ALLOW_DIRECT=false" in refusal["message"], refusal
    await b.silent(0.5)
    await a.send("offer", {"target_id": bob, "type": "offer", "sdp": "v=0"})
    assert (await b.recv("offer"))["payload"]["sdp"] == "v=0"  # WebRTC signalling goes on
