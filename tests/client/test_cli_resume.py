"""Nothing that arrived is lost: a receiver killed mid-transfer, a sender interrupted
with Ctrl-C, and a server restarted mid-transfer all end with the whole file, verified,
and only the missing chunks sent again."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Command, Room, sha256_of, write_random

pytestmark = pytest.mark.timeout(240)

#: large enough that "40 %" is a moment a test can catch: the data channel moved 30 MB in
#: 1.5 s here, less than three of the receiver's progress reports (0.5 s apart), and one
#: run caught nothing before the end
SIZE = 60 * MB
CHUNK = 65536
#: relayed chunks are held to this many bytes per second, for the same reason
BANDWIDTH = "10000000"
#: chunks in flight when a party stops are lost and sent again: the relay's window (32
#: chunks) and socket queue (16), the kernel's loopback socket buffers (a few MB each
#: way), the data channel's 1 MiB; this bounds how much that may be
IN_FLIGHT = 12 * MB


@pytest.mark.parametrize("transport", ["relay", "p2p"])
async def test_a_receiver_killed_at_40_percent_resumes_from_its_part_file(
    start: Any, room_on: Any, tmp_path: Path, transport: str
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    inbox = tmp_path / "inbox"
    first = room.receive(inbox)
    await room.joined(first)
    sender = room.send(source, transport=transport)
    await first.progress_at_least(40)
    first.kill()  # SIGKILL: no goodbye, no pause

    again = room.receive(inbox)
    assert await again.wait(180) == 0, again.report()
    assert await sender.wait(60) == 0, sender.report()

    result = again.result()
    assert result["status"] == "completed"
    assert result["sha256"] == digest
    assert 0 < result["resumed_bytes"] < SIZE
    # every chunk was stored once: what was there plus what this run stored
    assert result["resumed_bytes"] + result["moved_bytes"] == SIZE
    assert sha256_of(inbox / "movie.bin") == digest
    # the restarted receiver asked once, for no more than its part file lacked (chunks
    # still arriving meanwhile make it less) ...
    missing = SIZE - result["resumed_bytes"]
    asked = [n["message"] for n in sender.events("note") if " asks for " in n["message"]]
    assert len(asked) == 1 and asked[0].endswith("chunk(s) (resume)"), asked
    assert 0 < int(asked[0].split(" asks for ")[1].split()[0]) <= -(-missing // CHUNK)
    # ... so the sender sent the file once (part of it into the dead receiver's socket
    # buffers, which can hold MBs) and the missing part once more, and no more
    sent = sender.result()
    assert sent["status"] == "completed"
    assert SIZE <= sent["moved_bytes"] <= SIZE + missing
    assert sent["transfer_id"] == result["transfer_id"]  # the same transfer, taken up


@pytest.mark.parametrize("transport", ["relay", "p2p"])
async def test_a_sender_interrupted_with_ctrl_c_pauses_and_the_same_command_resumes(
    start: Any, room_on: Any, tmp_path: Path, transport: str
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    first = room.send(source, transport=transport)
    await receiver.progress_at_least(40)
    first.signal(signal.SIGINT)

    assert await first.wait(30) == 130, first.report()
    last = first.err().strip().splitlines()[-1]
    assert re.fullmatch(
        r"roomdrop: interrupted: the transfer of movie\.bin was left paused at \d+ %; "
        r"run the same command to resume it",
        last,
    ), last
    await receiver.wait_for(
        lambda line: line.get("event") == "note" and line["message"].startswith("paused by")
    )
    again = room.send(source, transport=transport)
    assert await again.wait(180) == 0, again.report()
    assert await receiver.wait(30) == 0, receiver.report()

    sent = again.result()
    assert sent["status"] == "completed"
    assert 0 < sent["resumed_bytes"] < SIZE
    assert sent["moved_bytes"] <= SIZE - sent["resumed_bytes"] + IN_FLIGHT
    got = receiver.result()
    assert got["transfer_id"] == sent["transfer_id"]
    assert got["moved_bytes"] == SIZE  # no chunk stored twice
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest


async def test_a_server_restarted_mid_transfer_costs_only_the_missing_chunks(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source, transport="relay")
    await receiver.progress_at_least(40)
    server.stopped_by_test = True
    server.stop()  # SIGTERM: pauses every transfer, closes every socket, forgets all
    await start(again=server, ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)

    assert await sender.wait(180) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    got = receiver.result()
    assert got["status"] == "completed"
    assert 0 < got["resumed_bytes"] < SIZE
    assert got["resumed_bytes"] + got["moved_bytes"] == SIZE
    sent = sender.result()
    assert sent["transfer_id"] == got["transfer_id"]  # the new offer, after the restart
    assert sent["moved_bytes"] <= SIZE - got["resumed_bytes"] + IN_FLIGHT
    notes = [n["message"] for n in sender.events("note")]
    assert f"reconnected to the server at {server.url}" in notes
    assert any(n.startswith("the server lost movie.bin") for n in notes), notes
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest


async def test_a_receiver_interrupted_with_ctrl_c_pauses_and_the_same_command_resumes(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    first = room.receive(tmp_path / "inbox")
    await room.joined(first)
    sender = room.send(source, transport="relay")
    await first.progress_at_least(40)
    first.signal(signal.SIGINT)

    assert await first.wait(30) == 130, first.report()
    await sender.wait_for(
        lambda line: line.get("event") == "note" and line["message"].startswith("paused by")
    )
    again = room.receive(tmp_path / "inbox")
    assert await again.wait(120) == 0, again.report()
    assert await sender.wait(30) == 0, sender.report()
    got = again.result()
    assert 0 < got["resumed_bytes"] < SIZE
    assert got["resumed_bytes"] + got["moved_bytes"] == SIZE
    assert got["transfer_id"] == sender.result()["transfer_id"]
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest


async def test_a_sender_killed_mid_transfer_is_taken_up_by_the_same_command(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    first = room.send(source, transport="relay")
    await receiver.progress_at_least(40)
    first.kill()  # SIGKILL: the server pauses the transfer when its socket closes

    again = room.send(source, transport="relay")
    assert await again.wait(120) == 0, again.report()
    assert await receiver.wait(30) == 0, receiver.report()
    notes = [n["message"] for n in again.events("note")]
    assert any(n.startswith("taking up movie.bin again") for n in notes), notes
    sent = again.result()
    got = receiver.result()
    assert sent["transfer_id"] == got["transfer_id"]
    assert 0 < sent["resumed_bytes"] < SIZE
    assert sent["moved_bytes"] <= SIZE - sent["resumed_bytes"] + IN_FLIGHT
    assert got["moved_bytes"] == SIZE  # the receiver stored every chunk once
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest
    # the restarted sender opened its own sealed copy of the content key: still end to end
    assert sent["e2e"] is got["e2e"] is True
    assert sent["safety_number"] == got["safety_number"] == first_number(first)


def first_number(command: Command) -> str:
    """The safety number a command noted as its transfer started."""
    for note in command.events("note"):
        found = re.search(r"; safety number ((?:\d{5} ){11}\d{5})$", note["message"])
        if found:
            return found[1]
    raise AssertionError(f"{command.name} noted no safety number:\n{command.report()}")


async def test_dropped_websockets_reconnect_and_the_same_transfer_goes_on(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """``ss -K`` aborts both clients' connections to the server (in this test's own
    network namespace); the server pauses the transfer, both reconnect with backoff, the
    server resumes it, and it finishes from the chunks still missing."""
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source, transport="relay")
    await receiver.progress_at_least(40)
    kill = ["ss", "-K", "dst", "127.0.0.1", "dport", "=", str(server.port)]
    assert "ESTAB" in subprocess.run(kill, capture_output=True, text=True, check=True).stdout

    assert await sender.wait(120) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        notes = [n["message"] for n in command.events("note")]
        assert f"lost the connection to the server at {server.url}; reconnecting" in notes, notes
        assert f"reconnected to the server at {server.url}" in notes, notes
    got, sent = receiver.result(), sender.result()
    assert got["transfer_id"] == sent["transfer_id"]  # no new offer: the server kept it
    assert got["moved_bytes"] == SIZE
    # the sender sent the file once (part into sockets that were aborted) and again only
    # what the receiver asked for
    asked = [n["message"] for n in sender.events("note") if " asks for " in n["message"]]
    again = sum(int(n.split(" asks for ")[1].split()[0]) for n in asked)
    assert asked and sent["moved_bytes"] <= SIZE + again * CHUNK, (asked, sent)
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest


# --- a part file damaged between two runs -----------------------------------------------

#: where each of the three damaged chunks is hit, and by how much (4 KiB each)
DAMAGE_AT, DAMAGE = 1000, 4096


def held_chunks(record: Path) -> list[int]:
    """The chunks a part file's record says it holds (its lines after the header)."""
    _, _, body = record.read_text().partition("\n")
    return sorted({int(line.split()[0]) for line in body.splitlines()})


def damage(part: Path, indexes: list[int]) -> None:
    """Flip 4 KiB inside each of these chunks of ``part``, in place."""
    with part.open("r+b") as f:
        for index in indexes:
            f.seek(index * CHUNK + DAMAGE_AT)
            block = f.read(DAMAGE)
            f.seek(index * CHUNK + DAMAGE_AT)
            f.write(bytes(b ^ 0xFF for b in block))


def as_previous_version(record: Path) -> None:
    """Rewrite ``record`` the way the version before per-chunk digests wrote it: format 1,
    one index per line."""
    header, _, _ = record.read_text().partition("\n")
    fields = json.loads(header)
    fields["roomdrop_part"] = 1
    lines = [json.dumps(fields), *(str(i) for i in held_chunks(record))]
    record.write_text("\n".join(lines) + "\n")


async def interrupted_with_damage(
    start: Any, room_on: Any, tmp_path: Path, *, previous_version: bool = False
) -> tuple[Room, Command, str, list[int], list[int]]:
    """A receiver interrupted (Ctrl-C) at 40 %; then 3 x 4 KiB flipped inside 3 chunks
    its part file holds. (room, the sender, the file's sha256, the chunks held, the
    damaged ones.)"""
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    first = room.receive(tmp_path / "inbox")
    await room.joined(first)
    sender = room.send(source, transport="relay")
    await first.progress_at_least(40)
    first.signal(signal.SIGINT)
    assert await first.wait(30) == 130, first.report()
    await sender.wait_for(
        lambda line: line.get("event") == "note" and line["message"].startswith("paused by")
    )
    parts = tmp_path / "inbox" / ".roomdrop-parts"
    record = parts / "movie.bin.part.jsonl"
    held = held_chunks(record)
    last = -(-SIZE // CHUNK) - 1
    assert len(held) > 100 and last not in held
    damaged = [held[5], held[len(held) // 2], held[-3]]
    damage(parts / "movie.bin.part", damaged)
    if previous_version:
        as_previous_version(record)
    return room, sender, digest, held, damaged


async def test_chunks_damaged_in_the_part_file_between_two_runs_are_all_that_is_sent_again(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """The resume re-verifies the held chunks against the sha256 each has in the record,
    and asks for the three that fail along with the rest (before per-chunk digests, it
    took them on trust and the whole-file check failed the transfer at the end)."""
    room, sender, digest, held, damaged = await interrupted_with_damage(start, room_on, tmp_path)

    again = room.receive(tmp_path / "inbox")
    assert await again.wait(120) == 0, again.report()
    assert await sender.wait(30) == 0, sender.report()
    got = again.result()
    assert got["status"] == "completed" and got["sha256"] == digest
    # what the part file held, less the three damaged chunks, counted as already here ...
    assert got["resumed_bytes"] == (len(held) - len(damaged)) * CHUNK
    # ... and this run stored every other chunk once: the damaged ones and the missing
    assert got["resumed_bytes"] + got["moved_bytes"] == SIZE
    total = -(-SIZE // CHUNK)
    asked = [n["message"] for n in sender.events("note") if n["message"].endswith("(resume)")]
    assert asked, sender.report()
    assert 0 < int(asked[-1].split(" asks for ")[1].split()[0]) <= total - len(held) + 3
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest


async def test_a_damaged_part_file_of_the_previous_version_is_repaired_not_failed(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """A record without per-chunk digests (the previous version's): its chunks are taken
    on trust, the whole-file check fails at the end, and the chunks that cannot be
    checked are asked for again (reason bad-checksum) instead of the transfer failing."""
    room, sender, digest, held, _ = await interrupted_with_damage(
        start, room_on, tmp_path, previous_version=True
    )

    again = room.receive(tmp_path / "inbox")
    assert await again.wait(120) == 0, again.report()
    assert await sender.wait(30) == 0, sender.report()
    got = again.result()
    assert got["status"] == "completed" and got["sha256"] == digest
    assert got["resumed_bytes"] == len(held) * CHUNK  # taken on trust at the resume
    # the rest of the file, then the held chunks once more: nothing else
    assert got["moved_bytes"] == SIZE
    repairs = [
        n["message"] for n in sender.events("note") if n["message"].endswith("(bad-checksum)")
    ]
    assert repairs == [f"{room.bob} asks for {len(held)} chunk(s) (bad-checksum)"], repairs
    notes = [n["message"] for n in again.events("note")]
    assert any("did not check out" in n for n in notes), notes
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest
