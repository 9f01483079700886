"""``roomdrop send`` and ``roomdrop receive`` move whole files, verified, peer to peer or
through the relay, and fall back to the relay when no data channel opens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Room, sha256_of, write_random

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("transport", ["p2p", "relay"])
async def test_a_100_mb_file_arrives_byte_for_byte_over_the_chosen_transport(
    start: Any, room_on: Any, tmp_path: Path, transport: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "big.bin"
    digest = write_random(source, 100 * MB)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source, transport=transport)

    assert await sender.wait(180) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        result = command.result()
        assert result["status"] == "completed"
        assert result["transport"] == transport
        assert result["sha256"] == digest
        assert result["bytes_transferred"] == 100 * MB
        assert result["resumed_bytes"] == 0
        assert result["elapsed_s"] > 0
    saved = Path(receiver.result()["saved_path"])
    assert saved == tmp_path / "inbox" / "big.bin"
    assert sha256_of(saved) == digest
    assert not list((tmp_path / "inbox" / ".roomdrop-parts").iterdir())
    progress = sender.events("progress")
    assert progress and {p["transport"] for p in progress} == {transport}
    assert {"transfer_id", "chunks_sent", "progress_percent", "speed_bps"} <= set(progress[-1])


async def test_auto_falls_back_to_the_relay_when_no_data_channel_opens(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 3 * MB)
    # the receiver gathers ICE candidates only on ::1 and the sender only on 127.0.0.1:
    # no candidate pair can form, so ICE never connects
    receiver = room.receive(tmp_path / "inbox", env={"ROOMDROP_ICE_HOSTS": "::1"})
    await room.joined(receiver)
    # --no-direct: TCP between ::1 and 127.0.0.1 would connect; this is about ICE
    sender = room.send(source, env={"ROOMDROP_ICE_TIMEOUT": "2"}, extra=["--no-direct"])

    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    assert sender.result()["transport"] == "relay"
    assert receiver.result()["transport"] == "relay"
    notes = [n["message"] for n in sender.events("note")]
    assert any("no peer-to-peer connection" in n and "relay" in n for n in notes), notes
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest


async def test_p2p_only_fails_clearly_when_no_data_channel_opens(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 1 * MB)
    receiver = room.receive(tmp_path / "inbox", env={"ROOMDROP_ICE_HOSTS": "::1"})
    await room.joined(receiver)
    sender = room.send(source, transport="p2p", env={"ROOMDROP_ICE_TIMEOUT": "2"})

    assert await sender.wait(60) == 1, sender.report()
    result = sender.result()
    assert result["status"] == "failed"
    assert result["error_code"] == "p2p-unavailable"
    last = sender.err().strip().splitlines()[-1]
    assert last.startswith("roomdrop: f.bin: failed: no peer-to-peer connection to"), last
    assert "does not fall back" in last
    # nothing travelled through the relay
    assert not (tmp_path / "inbox" / "f.bin").exists()


async def test_several_files_go_one_after_another(start: Any, room_on: Any, tmp_path: Path) -> None:
    server = await start()
    room: Room = room_on(server)
    files = []
    for name, size in (("a.bin", 200_000), ("b.txt", 0), ("c.bin", 1 * MB + 1)):
        path = tmp_path / name
        files.append((path, write_random(path, size)))
    receiver = room.receive(tmp_path / "inbox", count=3)
    await room.joined(receiver)
    sender = room.send(*(path for path, _ in files), transport="relay")

    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    assert [r["filename"] for r in sender.events("result")] == ["a.bin", "b.txt", "c.bin"]
    for path, digest in files:
        assert sha256_of(tmp_path / "inbox" / path.name) == digest


async def test_without_json_a_person_sees_a_bar_and_a_closing_line(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "holiday.jpg"
    write_random(source, 2 * MB)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source, transport="relay", json=False)

    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    shown = sender.err()
    assert "holiday.jpg [relay]" in shown  # the bar names the file and the path
    assert "offered holiday.jpg (2,000,000 bytes) to " in shown
    assert "done: holiday.jpg (2.0 MB) via relay in " in shown
    assert sender.stdout.read_text() == ""  # nothing on stdout without --json


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]
