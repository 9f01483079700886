"""The direct link's connections over real TCP on loopback, with real device keys: two
peers find each other and carry frames both ways in order; a stranger who got hold of
the hints (the LAN, or a server that leaks or forges them) cannot pose as either peer,
in either direction, and does not stop the real peers from connecting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from roomdrop.client.direct import DirectLink
from roomdrop.client.errors import LinkDown
from roomdrop.e2e import DeviceKey
from roomdrop.protocol.messages import DirectHints

pytestmark = pytest.mark.timeout(60)


@dataclass
class End:
    """One participant's side of the attempt with one peer."""

    user: str
    device: DeviceKey = field(default_factory=DeviceKey.generate)
    sent: list[dict[str, Any]] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    downs: int = 0
    link: DirectLink | None = None

    def open(self, peer: str, peer_key: str, *, room: str = "r") -> DirectLink:
        async def signal(payload: dict[str, Any]) -> None:
            self.sent.append(payload)

        async def on_frame(remote: str, frame: bytes) -> None:
            assert remote == peer
            self.frames.append(frame)

        def on_down(link: DirectLink) -> None:
            self.downs += 1

        self.link = DirectLink(
            peer,
            me=self.user,
            room=room,
            device=self.device,
            peer_key=peer_key,
            addresses=["127.0.0.1"],
            signal=signal,
            on_frame=on_frame,
            on_down=on_down,
        )
        return self.link

    def hints(self) -> DirectHints:
        return DirectHints.model_validate(self.sent[-1])


async def pair(alice: End, bob: End) -> tuple[DirectLink, DirectLink]:
    """What the server does for a real pair: alice's hints to bob, bob's answer back."""
    a = alice.open(bob.user, bob.device.public_text)
    b = bob.open(alice.user, alice.device.public_text)
    await a.start()
    b.on_hints(alice.hints())
    await b.start(answers=alice.hints().token)
    a.on_hints(bob.hints())
    return a, b


async def test_two_peers_connect_and_carry_frames_in_order_both_ways() -> None:
    alice, bob = End("alice"), End("bob")
    a, b = await pair(alice, bob)
    assert await a.wait_open(5) and await b.wait_open(5)
    frames = [bytes([i]) * (70_000 + i) for i in range(50)]
    await a.send(frames)
    await b.send([b"back"])
    for _ in range(200):
        if len(bob.frames) == 50 and alice.frames:
            break
        await asyncio.sleep(0.01)
    assert bob.frames == frames and alice.frames == [b"back"]
    assert a.refused == b.refused == 0
    await a.close()
    for _ in range(200):
        if b.down.is_set():
            break
        await asyncio.sleep(0.01)
    assert b.down.is_set() and bob.downs == 1  # the peer's close takes bob's side down
    with pytest.raises(LinkDown):
        await b.send([b"late"])
    await b.close()


async def test_a_stranger_with_the_hints_cannot_pose_as_the_sender() -> None:
    """Mallory read alice's and bob's hints and dials bob first, saying she is alice
    (with her own device key: she does not hold alice's). Bob refuses her; alice's own
    connection is the one that opens, and frames arrive from alice only."""
    alice, bob, mallory = End("alice"), End("bob"), End("alice")
    a = alice.open(bob.user, bob.device.public_text)
    b = bob.open(alice.user, alice.device.public_text)
    m = mallory.open(bob.user, bob.device.public_text)
    await a.start()
    b.on_hints(alice.hints())
    await b.start(answers=alice.hints().token)
    # mallory uses alice's token (from the hints she saw) and dials bob's candidates
    m.token = alice.hints().token
    m.on_hints(bob.hints())
    for _ in range(300):
        if b.refused:
            break
        await asyncio.sleep(0.01)
    assert b.refused >= 1 and not b.is_open and not m.is_open
    a.on_hints(bob.hints())
    assert await a.wait_open(5) and await b.wait_open(5)
    await a.send([b"from alice"])
    for _ in range(200):
        if bob.frames:
            break
        await asyncio.sleep(0.01)
    assert bob.frames == [b"from alice"]
    for link in (a, b, m):
        await link.close()


async def test_forged_hints_pointing_at_a_stranger_are_refused_by_the_one_who_dials() -> None:
    """A server that forges alice's answer, pointing bob at mallory's listener: bob
    dials her, she cannot prove she holds alice's key, and bob refuses the connection."""
    bob, mallory = End("bob"), End("alice")
    alice_key = DeviceKey.generate()  # alice exists, mallory does not hold her key
    b = bob.open("alice", alice_key.public_text)
    m = mallory.open("bob", bob.device.public_text)
    await b.start()
    m.on_hints(bob.hints())
    await m.start(answers=bob.hints().token)
    b.on_hints(mallory.hints())  # "alice's" answer, made by mallory
    for _ in range(300):
        if b.refused and m.refused:
            break
        await asyncio.sleep(0.01)
    assert b.refused >= 1, "bob took a connection from someone without alice's key"
    assert not b.is_open
    for link in (b, m):
        await link.close()


async def test_garbage_and_silence_on_the_port_are_refused_and_the_peers_still_connect() -> None:
    alice, bob = End("alice"), End("bob")
    a = alice.open(bob.user, bob.device.public_text)
    b = bob.open(alice.user, alice.device.public_text)
    await a.start()
    b.on_hints(alice.hints())
    port = alice.hints().candidates[0].port
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(100))
    await writer.drain()
    await b.start(answers=alice.hints().token)
    a.on_hints(bob.hints())
    assert await a.wait_open(5) and await b.wait_open(5)
    for _ in range(300):
        if a.refused:
            break
        await asyncio.sleep(0.01)
    assert a.refused == 1
    writer.close()
    await writer.wait_closed()
    for link in (a, b):
        await link.close()
