"""A TURN server that the server hands out but that does not answer must not hold up
peer to peer: the host candidates connect without waiting for a TURN allocation.

Two dead TURN servers, both on 127.0.0.1: ``silent``, a UDP socket that is bound but
reads nothing and answers nothing (a firewall that drops packets, a host that is down),
and ``closed``, a port nothing listens on (the kernel answers ICMP port unreachable).
Each test measures, beside the runs with the dead TURN server, the same transfer with no
TURN server handed out, so the comparison does not depend on how loaded the machine is.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Room, sha256_of, write_random

from server.conftest import Server

pytestmark = pytest.mark.timeout(180)

#: How much longer than without a TURN server the data channel may take to open.
MARGIN_S = 1.5


@pytest.fixture(params=["silent", "closed"])
def dead_turn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``turn:`` URL on 127.0.0.1 where no TURN server answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if request.param == "silent":
            yield f"turn:127.0.0.1:{port}?transport=udp"
            return
    yield f"turn:127.0.0.1:{port}?transport=udp"  # closed: nothing is bound there now


async def p2p_connect(server: Server, room_on: Any, base: Path, name: str) -> float:
    """Send a 1 MB file peer to peer (``--transport p2p``: no relay) and return the
    seconds the sender's data channel took to open, as it says (from its offer, whose
    gathering is part of it, to the open channel)."""
    room: Room = room_on(server)
    source = base / f"{name}.bin"
    digest = write_random(source, 1 * MB)
    env = {"ROOMDROP_ICE_TIMEOUT": "30"}  # long enough to see how long it takes
    receiver = room.receive(base / f"inbox-{name}", env=env)
    await room.joined(receiver)
    sender = room.send(source, transport="p2p", env=env)
    assert await sender.wait(90) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        got = command.result()
        assert got["status"] == "completed" and got["transport"] == "p2p", got
        assert got["bytes_via"]["relay"] == 0, got
    assert sha256_of(base / f"inbox-{name}" / source.name) == digest
    prefix = f"data channel to {room.bob} open after "
    (took,) = [n["message"] for n in sender.events("note") if n["message"].startswith(prefix)]
    return float(took.removeprefix(prefix).removesuffix(" s"))


async def test_a_dead_turn_server_does_not_delay_peer_to_peer(
    start: Any, room_on: Any, tmp_path: Path, dead_turn: str
) -> None:
    plain = await start(name="plain")
    with_turn = await start(
        name="turn", ROOMDROP_TURN_URLS=dead_turn, ROOMDROP_TURN_SECRET="not-checked"
    )
    async with with_turn.http() as http:
        answer = await http.get("/webrtc/config", headers=with_turn.headers("alice"))
    assert answer.json()["ice_servers"][0]["urls"] == [dead_turn]

    # twice each, in turn: the quicker of each pair is compared, as a run now and then
    # loses a packet and waits for its retransmission on a loaded machine
    plain_runs, dead_runs = [], []
    for n in range(2):
        plain_runs.append(await p2p_connect(plain, room_on, tmp_path, f"plain{n}"))
        dead_runs.append(await p2p_connect(with_turn, room_on, tmp_path, f"dead{n}"))
    print(f"data channel open after {plain_runs} s without TURN, {dead_runs} s with {dead_turn}")
    assert min(dead_runs) <= min(plain_runs) + MARGIN_S, (plain_runs, dead_runs)
