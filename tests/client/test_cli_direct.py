"""The direct path between two CLIs: chosen when both ends can reach each other, given
up for another path when it dies mid-transfer, taken again by a restarted receiver's
new session, bound to the addresses ICE may use, and turned off by ``--no-direct`` or
the server. (Connections from the wrong peer: tests/client/test_direct_link.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Command, Room, sha256_of, write_random

from server.conftest import Server

pytestmark = pytest.mark.timeout(240)


def listening(command: Command) -> list[str]:
    """The local addresses (``host:port``) ``command``'s process listens on with TCP."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    pid = f"pid={command.process.pid},"
    return [line.split()[3] for line in out.splitlines() if pid in line]


async def relayed_bytes(server: Server) -> float:
    """The server's ``roomdrop_relayed_bytes_total``."""
    async with server.http() as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("roomdrop_relayed_bytes_total "):
            return float(line.split()[1])
    raise AssertionError(f"no roomdrop_relayed_bytes_total in /metrics:\n{text}")


async def test_two_clis_use_the_direct_path_and_the_file_arrives_verified(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 20 * MB)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source)

    assert await sender.wait(120) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        got = command.result()
        assert (got["status"], got["transport"], got["e2e"]) == ("completed", "direct", True), got
        assert got["bytes_via"] == {"direct": 20 * MB, "p2p": 0, "relay": 0}, got
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest
    notes = [n["message"] for n in sender.events("note")]
    opened = f"direct connection to {room.bob} open after "
    assert any(n.startswith(opened) for n in notes), notes
    assert {p["transport"] for p in sender.events("progress")} <= {"auto", "direct"}
    assert await relayed_bytes(server) == 0  # the server carried none of it


async def test_the_direct_path_killed_mid_transfer_goes_on_over_another_path(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """The direct connection is reset (``ss -K``) mid-transfer; no data channel can open
    (the receiver's ICE has only ::1, the sender's only 127.0.0.1, while TCP between them
    connects), so the sender goes on through the relay from the chunks still missing,
    and nothing is stored twice."""
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    size = 150 * MB
    digest = write_random(source, size)
    receiver = room.receive(tmp_path / "inbox", env={"ROOMDROP_ICE_HOSTS": "::1"})
    await room.joined(receiver)
    sender = room.send(source, env={"ROOMDROP_ICE_TIMEOUT": "2"})
    await receiver.wait_for(
        lambda line: line.get("event") == "progress" and line["bytes_transferred"] > 0
    )
    # every TCP connection but the ones to the server: the direct one
    server_port = f":{server.port}"
    killed = subprocess.run(
        [
            "ss",
            "-K",
            "-tn",
            "state",
            "established",
            f"( not sport = {server_port} and not dport = {server_port} )",
        ],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 0, killed.stderr
    assert killed.stdout.strip(), "no direct connection to kill"
    assert await sender.wait(180) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    got = receiver.result()
    assert got["status"] == "completed" and got["sha256"] == digest, got
    via = got["bytes_via"]
    assert 0 < via["direct"] < size and via["relay"] > 0 and via["p2p"] == 0, via
    assert got["moved_bytes"] == size, got  # from the missing chunks on, nothing twice
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest
    notes = [n["message"] for n in sender.events("note")]
    assert f"direct connection to {room.bob} lost" in notes, notes
    assert any(n.startswith("no peer-to-peer connection") for n in notes), notes


@pytest.mark.parametrize("who", ["sender", "receiver"])
async def test_no_direct_keeps_the_transfer_on_the_data_channel(
    start: Any, room_on: Any, tmp_path: Path, who: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 5 * MB)
    flag = ["--no-direct"]
    receiver = room.receive(tmp_path / "inbox", extra=flag if who == "receiver" else ())
    await room.joined(receiver)
    sender = room.send(source, extra=flag if who == "sender" else ())
    assert await sender.wait(120) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        got = command.result()
        assert (got["transport"], got["bytes_via"]["direct"]) == ("p2p", 0), got
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest


async def test_the_direct_path_listens_only_on_the_addresses_ice_may_use(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """The sender may use 127.0.0.2 only (ROOMDROP_ICE_HOSTS); its receiver does not
    answer (--no-direct), so the sender's listener stays up while the data channel
    carries the file: it is bound to 127.0.0.2 and nothing else."""
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 40 * MB)
    receiver = room.receive(tmp_path / "inbox", extra=["--no-direct"])
    await room.joined(receiver)
    sender = room.send(source, env={"ROOMDROP_ICE_HOSTS": "127.0.0.2"})
    await sender.wait_for(lambda line: line.get("transport") == "p2p")
    bound = listening(sender)
    assert await sender.wait(120) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    assert bound and all(address.startswith("127.0.0.2:") for address in bound), bound
    assert sender.result()["transport"] == "p2p"
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest


async def test_a_server_that_disallows_direct_refuses_hints_and_transfers_use_webrtc(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_ALLOW_DIRECT="false")
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 5 * MB)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source, transport="direct", env={"ROOMDROP_ICE_TIMEOUT": "2"})
    assert await sender.wait(60) == 1, sender.report()
    got = sender.result()
    assert (got["status"], got["error_code"]) == ("failed", "direct-unavailable"), got
    assert "does not fall back to the data channel or the relay" in got["error"], got
    receiver.kill()

    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source)
    assert await sender.wait(60) == 0, sender.report()
    assert sender.result()["transport"] == "p2p"
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest


async def test_a_receiver_killed_during_a_direct_transfer_resumes_from_its_part_file(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """SIGKILL of the receiver while the direct connection carries the file: the sender
    sees the connection die, the restarted receiver takes the transfer up from its part
    file, and only what it lacked travels again (over whichever path opens first for the
    new session)."""
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    size = 120 * MB
    digest = write_random(source, size)
    inbox = tmp_path / "inbox"
    first = room.receive(inbox)
    await room.joined(first)
    sender = room.send(source)
    await first.wait_for(
        lambda line: line.get("event") == "progress" and line["bytes_transferred"] > 0
    )
    first.kill()

    again = room.receive(inbox)
    assert await again.wait(180) == 0, again.report()
    assert await sender.wait(60) == 0, sender.report()
    got = again.result()
    assert (got["status"], got["sha256"]) == ("completed", digest), got
    assert 0 < got["resumed_bytes"] < size, got
    assert got["resumed_bytes"] + got["moved_bytes"] == size, got
    sent = sender.result()
    assert sent["transfer_id"] == got["transfer_id"]
    assert f"direct connection to {room.bob} lost" in [n["message"] for n in sender.events("note")]
    assert sha256_of(inbox / "f.bin") == digest
