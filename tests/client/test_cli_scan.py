"""``roomdrop receive --scan URL``: every file is scanned by a real clamd (the test's own
signatures, :mod:`clamdtools`) before it is put in place. An infected file is never
placed and both parties learn what was found; a clean one arrives; a scanner that is
down fails closed and keeps the part file, which the same command scans and completes
once clamd is back, with nothing sent again; a room that requires scanning refuses a
receiver that does not scan. (A file kept for a later delivery is scanned when its
receiver takes it: tests/client/test_cli_store.py.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Room, sha256_of, write_random

from clamdtools import EICAR, EICAR_SIGNATURE, PATTERN, PATTERN_SIGNATURE, Clamd, start_clamd

pytestmark = pytest.mark.timeout(180)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def parts_of(inbox: Path) -> list[str]:
    parts = inbox / ".roomdrop-parts"
    return sorted(p.name for p in parts.iterdir()) if parts.is_dir() else []


def notes(command: Any) -> list[str]:
    return [n["message"] for n in command.events("note")]


@pytest.mark.parametrize("scheme", ["unix", "tcp"])
async def test_eicar_is_never_placed_and_both_parties_are_told_what_was_found(
    start: Any, room_on: Any, tmp_path: Path, clamd: Clamd, scheme: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "eicar.com"
    source.write_bytes(EICAR)
    inbox = tmp_path / "inbox"
    url = clamd.unix_url if scheme == "unix" else clamd.tcp_url
    receiver = room.receive(inbox, extra=["--scan", url])
    await room.joined(receiver)
    sender = room.send(source)

    assert await receiver.wait(60) == 1, receiver.report()
    assert await sender.wait(60) == 1, sender.report()
    result = receiver.result()
    assert (result["status"], result["error_code"]) == ("failed", "infected")
    assert EICAR_SIGNATURE in result["error"]
    assert result["saved_path"] is None
    last = last_line(receiver.err())
    assert last.startswith("roomdrop: eicar.com: failed: eicar.com is infected: "), last
    assert EICAR_SIGNATURE in last and "not saved" in last
    told = sender.result()
    assert (told["status"], told["error_code"]) == ("failed", "infected")
    assert EICAR_SIGNATURE in told["error"]
    assert EICAR_SIGNATURE in last_line(sender.err())
    # not placed, and nothing of it kept
    assert not (inbox / "eicar.com").exists()
    assert sorted(p.name for p in inbox.iterdir()) == [".roomdrop-parts"]
    assert parts_of(inbox) == []
    record = await server.transfer(room.name, room.alice, told["transfer_id"])
    assert (record["status"], record["error_code"]) == ("failed", "infected")
    assert EICAR_SIGNATURE in record["error"]
    assert any(
        n.startswith("received files are scanned for malware by ClamAV ") for n in notes(receiver)
    )


async def test_a_byte_pattern_deep_in_a_large_file_is_caught_and_kept_in_quarantine(
    start: Any, room_on: Any, tmp_path: Path, clamd: Clamd
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "big.bin"
    body = bytearray(os.urandom(5 * MB))
    body[3 * MB : 3 * MB + len(PATTERN)] = PATTERN
    source.write_bytes(body)
    inbox, quarantine = tmp_path / "inbox", tmp_path / "quarantine"
    receiver = room.receive(
        inbox,
        env={"ROOMDROP_SCAN_URL": clamd.tcp_url},
        extra=["--quarantine", str(quarantine)],
    )
    await room.joined(receiver)
    sender = room.send(source)

    assert await receiver.wait(60) == 1, receiver.report()
    assert await sender.wait(60) == 1, sender.report()
    for command in (receiver, sender):
        result = command.result()
        assert (result["status"], result["error_code"]) == ("failed", "infected")
        assert PATTERN_SIGNATURE in result["error"]
    assert not (inbox / "big.bin").exists()
    assert parts_of(inbox) == []
    kept = quarantine / "big.bin.infected"
    assert sorted(p.name for p in quarantine.iterdir()) == ["big.bin.infected"]
    assert sha256_of(kept) == sha256_of(source)
    assert f"big.bin is infected: kept in quarantine as {kept}" in notes(receiver)


@pytest.mark.parametrize("how", ["--scan unix", "ROOMDROP_SCAN_URL tcp"])
async def test_a_clean_file_is_scanned_and_placed(
    start: Any, room_on: Any, tmp_path: Path, clamd: Clamd, how: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "clean.bin"
    digest = write_random(source, 3 * MB)
    inbox, quarantine = tmp_path / "inbox", tmp_path / "quarantine"
    if how.startswith("--scan"):
        receiver = room.receive(inbox, extra=["--scan", clamd.unix_url])
    else:
        env = {"ROOMDROP_SCAN_URL": clamd.tcp_url, "ROOMDROP_QUARANTINE_DIR": str(quarantine)}
        receiver = room.receive(inbox, env=env)
    await room.joined(receiver)
    sender = room.send(source)

    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    assert receiver.result()["status"] == "completed"
    assert sha256_of(inbox / "clean.bin") == digest
    assert "scanned clean.bin: no malware found" in notes(receiver)
    assert not quarantine.exists() or not list(quarantine.iterdir())


async def test_a_scanner_that_is_down_fails_closed_and_the_same_command_rescans_later(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    down = start_clamd(tmp_path / "clamd", start=False)  # its socket names nothing yet
    source = tmp_path / "f.bin"
    size = 4 * MB
    digest = write_random(source, size)
    inbox = tmp_path / "inbox"
    receiver = room.receive(inbox, extra=["--scan", down.unix_url])
    await room.joined(receiver)
    assert any("the malware scanner does not answer now" in n for n in notes(receiver))
    sender = room.send(source)

    assert await receiver.wait(60) == 1, receiver.report()
    result = receiver.result()
    assert (result["status"], result["error_code"]) == ("failed", "scan-unavailable")
    last = last_line(receiver.err())
    assert last.startswith("roomdrop: f.bin: failed: f.bin could not be scanned for malware: "), (
        last
    )
    assert f"cannot reach clamd at {down.unix_url}: No such file or directory" in last
    assert "its part file is kept: run the same command again" in last
    # fail closed: nothing placed; the whole part file and its record wait for a scan
    assert not (inbox / "f.bin").exists()
    assert parts_of(inbox) == ["f.bin.part", "f.bin.part.jsonl"]
    assert sha256_of(inbox / ".roomdrop-parts" / "f.bin.part") == digest
    # the transfer was not failed on the server, and the sender waits
    tid = result["transfer_id"]
    record = await server.transfer(room.name, room.alice, tid)
    assert record["status"] in ("active", "paused"), record
    assert record["error_code"] is None
    assert sender.process.poll() is None
    assert not sender.events("result")

    try:
        down.start()
        again = room.receive(inbox, extra=["--scan", down.unix_url])
        assert await again.wait(60) == 0, again.report()
        assert await sender.wait(60) == 0, sender.report()
    finally:
        down.stop()
    taken = again.result()
    assert (taken["status"], taken["transfer_id"]) == ("completed", tid)
    assert (taken["resumed_bytes"], taken["moved_bytes"]) == (size, 0)  # nothing sent again
    sent = sender.result()
    assert (sent["status"], sent["transfer_id"]) == ("completed", tid)
    assert sent["moved_bytes"] == size  # every byte once
    assert sha256_of(inbox / "f.bin") == digest
    assert parts_of(inbox) == []
    assert "scanned f.bin: no malware found" in notes(again)


async def test_a_room_that_requires_scanning_refuses_a_receiver_that_does_not_scan(
    start: Any, room_on: Any, tmp_path: Path, clamd: Clamd
) -> None:
    server = await start(ROOMDROP_REQUIRE_SCAN="1")
    room: Room = room_on(server)
    inbox = tmp_path / "inbox"
    refused = room.receive(inbox)
    assert await refused.wait(30) == 1, refused.report()
    last = last_line(refused.err())
    assert last.startswith(f"roomdrop: scan-required: room {room.name} takes only receivers "), last
    assert "roomdrop receive --scan unix:///PATH/TO/clamd.sock" in last

    source = tmp_path / "f.bin"
    digest = write_random(source, 1 * MB)
    receiver = room.receive(inbox, extra=["--scan", clamd.unix_url])
    await room.joined(receiver)
    sender = room.send(source)
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    assert sha256_of(inbox / "f.bin") == digest


async def test_scan_options_are_checked_before_anything_starts(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    inbox = tmp_path / "inbox"
    bad = room.receive(inbox, extra=["--scan", "http://127.0.0.1:3310"])
    assert await bad.wait(30) == 2
    assert last_line(bad.err()) == (
        "roomdrop: --scan: 'http://127.0.0.1:3310' is no clamd address: "
        "unix:///PATH/TO/clamd.sock or tcp://HOST:PORT"
    )
    lone = room.receive(inbox, extra=["--quarantine", str(tmp_path / "q")])
    assert await lone.wait(30) == 2
    assert "--quarantine keeps what --scan URL finds infected: pass --scan too" in lone.err()
