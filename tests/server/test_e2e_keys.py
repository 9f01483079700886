"""Device keys against a real ``roomdrop serve`` (docs/protocol.md §14.1): published with
``?key=`` at join, handed out in ``room-state`` (with the MIME lists and whether the
server requires end-to-end encryption) and ``user-joined``, on one instance and across
instances sharing Redis; a malformed key closes the socket with a precise reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import ConnectionClosed

from roomdrop.e2e import DeviceKey
from server.e2etools import public

if TYPE_CHECKING:
    from conftest import Deployment, Server


def fresh(*roles: str) -> list[str]:
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


async def test_room_state_and_user_joined_carry_the_published_keys(server: Server) -> None:
    room, alice, bob, carol = fresh("room", "alice", "bob", "carol")
    a = await server.connect(room, alice, room_state=False)
    state = (await a.recv("room-state"))["payload"]
    assert state["keys"] == {alice: public(alice)}
    assert state["mime"] == {"allow": [], "deny": []}
    assert state["require_e2e"] is True

    b = await server.connect(room, bob, room_state=False)
    state = (await b.recv("room-state"))["payload"]
    assert state["keys"] == {alice: public(alice), bob: public(bob)}
    joined = await a.recv("user-joined")
    assert joined["payload"] == {"user_id": bob, "key": public(bob)}

    # a participant without a key is in the room, not in the keys
    await server.connect(room, carol, key=None)
    joined = await a.recv("user-joined")
    assert joined["payload"] == {"user_id": carol}
    c2 = await server.connect(room, f"{carol}-2", room_state=False, key=None)
    state = (await c2.recv("room-state"))["payload"]
    assert carol in state["participants"] and carol not in state["keys"]

    # who leaves takes their key along; who comes back with another key shows that one
    await b.close()
    await a.recv("user-left")
    newer = DeviceKey.generate().public_text
    b = await server.connect(room, bob, key=newer)
    assert (await a.recv("user-joined"))["payload"] == {"user_id": bob, "key": newer}
    d = await server.connect(room, f"{alice}-late", room_state=False)
    state = (await d.recv("room-state"))["payload"]
    assert state["keys"][bob] == newer


@pytest.mark.parametrize(
    "key",
    [
        "too-short",
        "A" * 44,  # 33 bytes
        "A" * 42 + "B",  # 32 bytes, but not the canonical encoding of them
        "A" * 42 + "=",  # padded
        "+" * 43,  # standard base64, not base64url
    ],
)
async def test_a_malformed_key_closes_the_socket_with_4400(server: Server, key: str) -> None:
    (room,) = fresh("room")
    ws = await server.open_ws(room, server.token("mallory"), key)
    try:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    finally:
        await ws.close()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400
    assert closed.value.rcvd.reason.startswith("invalid device key"), closed.value.rcvd.reason
    assert "32 bytes in unpadded base64url" in closed.value.rcvd.reason


async def test_the_server_says_what_it_requires_in_room_state(
    start_server: Callable[..., Any],
) -> None:
    server: Server = await start_server(
        ROOMDROP_REQUIRE_E2E="0",
        ROOMDROP_MIME_DENY='["application/x-msdownload"]',
        ROOMDROP_MIME_ALLOW='["text/*", "image/png"]',
    )
    room, alice = fresh("room", "alice")
    a = await server.connect(room, alice, room_state=False)
    state = (await a.recv("room-state"))["payload"]
    assert state["require_e2e"] is False
    assert state["mime"] == {"allow": ["text/*", "image/png"], "deny": ["application/x-msdownload"]}


async def test_keys_published_on_one_instance_are_handed_out_by_another(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(2)
    room, alice, bob, carol = fresh("room", "alice", "bob", "carol")
    a = await one.connect(room, alice)
    b = await two.connect(room, bob, room_state=False)
    state = (await b.recv("room-state"))["payload"]
    assert state["keys"] == {alice: public(alice), bob: public(bob)}
    assert (await a.recv("user-joined"))["payload"] == {"user_id": bob, "key": public(bob)}
    c = await one.connect(room, carol, room_state=False)
    state = (await c.recv("room-state"))["payload"]
    assert state["keys"] == {alice: public(alice), bob: public(bob), carol: public(carol)}
    assert (await b.recv("user-joined"))["payload"] == {"user_id": carol, "key": public(carol)}

    # bob's key leaves with him, on every instance
    await b.close()
    await a.recv("user-left")
    late = await one.connect(room, f"{alice}-late", room_state=False)
    state = (await late.recv("room-state"))["payload"]
    assert bob not in state["keys"] and alice in state["keys"]
    stored = deployment.redis.client().hgetall(deployment.key("k", room))
    assert {k.decode(): v.decode() for k, v in stored.items()} == {
        alice: public(alice),
        carol: public(carol),
        f"{alice}-late": public(f"{alice}-late"),
    }
