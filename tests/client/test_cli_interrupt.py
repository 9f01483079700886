"""A second Ctrl-C while ``send`` or ``receive`` is pausing after the first ends the
command at once: exit 130, one line on stderr saying where the transfer was left, no
traceback; the part file and its record stay, and the same command resumes from them.
Then that line's wording, case by case (pure logic)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Room, sha256_of, write_random

from roomdrop.client.command import describe_left
from roomdrop.client.session import Left
from roomdrop.protocol.state import Status

pytestmark = pytest.mark.timeout(240)

#: big enough, with the relay held to BANDWIDTH, to be mid-flight for several seconds
SIZE = 60 * MB
BANDWIDTH = "10000000"
#: the second Ctrl-C comes this long after the first: inside the pause's 0.3 s wait
AGAIN_AFTER = 0.02
LEFT_PAUSED = re.compile(
    r"roomdrop: interrupted again: the transfer of movie\.bin was left paused at "
    r"(\d+) %(?: \((?P<kept>[^)]*)\))?; run the same command to resume it"
)


@pytest.mark.parametrize("side", ["receive", "send"])
async def test_a_second_ctrl_c_during_the_pause_ends_at_once_and_the_transfer_resumes(
    start: Any, room_on: Any, tmp_path: Path, side: str
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH=BANDWIDTH)
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, SIZE)
    inbox = tmp_path / "inbox"
    receiver = room.receive(inbox)
    await room.joined(receiver)
    sender = room.send(source, transport="relay")
    await receiver.progress_at_least(20)
    first = receiver if side == "receive" else sender

    first.signal(signal.SIGINT)
    first_at = time.monotonic()
    time.sleep(AGAIN_AFTER)  # not the event loop's sleep, which a loaded machine stretches
    first.signal(signal.SIGINT)
    again_at = time.monotonic()
    # the graceful close takes >= 0.3 s (it lets the pause reach the server): the second
    # Ctrl-C must come well inside it, or this tests the first one only
    assert again_at - first_at < 0.2, f"machine too loaded: {again_at - first_at:.3f} s apart"
    assert await first.wait(30) == 130, first.report()
    took = time.monotonic() - again_at
    err = first.err()
    assert "Traceback" not in err, first.report()
    lines = err.strip().splitlines()
    assert len(lines) == 1, first.report()  # with --json, nothing else goes to stderr
    left = LEFT_PAUSED.fullmatch(lines[0])
    assert left is not None, lines[0]
    percent = int(left[1])
    assert 1 <= percent <= 99, lines[0]
    # "at once": not the graceful close's waits (the pause's 0.3 s, the socket's close)
    assert took < 2.0, f"{took:.2f} s after the second Ctrl-C"
    print(f"{side}: exited {took:.2f} s after the second Ctrl-C: {lines[0]}")
    parts = inbox / ".roomdrop-parts"
    if side == "receive":
        assert left["kept"] == "part file kept", lines[0]
        # the part file and its record are there, the record naming what is in the file
        assert (parts / "movie.bin.part").stat().st_size == SIZE
        record = (parts / "movie.bin.part.jsonl").read_text().splitlines()
        assert len(record) > 1, record  # the header and a line per chunk held
    else:
        assert left["kept"] is None, lines[0]  # a sender keeps nothing but its file
    other = sender if side == "receive" else receiver
    await other.wait_for(
        lambda line: line.get("event") == "note" and line["message"].startswith("paused by")
    )

    if side == "receive":
        again = room.receive(inbox)
        assert await again.wait(180) == 0, again.report()
        assert await sender.wait(30) == 0, sender.report()
        got = again.result()
        assert got["transfer_id"] == sender.result()["transfer_id"]
    else:
        again = room.send(source, transport="relay")
        assert await again.wait(180) == 0, again.report()
        assert await receiver.wait(30) == 0, receiver.report()
        got = receiver.result()
        assert got["transfer_id"] == again.result()["transfer_id"]
    resumed = again.result()
    assert resumed["status"] == "completed"
    assert resumed["sha256"] == digest
    # it went on from where it was left, not from zero
    assert SIZE * percent // 100 // 2 < resumed["resumed_bytes"] < SIZE, resumed
    if side == "receive":  # every chunk stored once: what was kept plus what came now
        assert got["resumed_bytes"] + got["moved_bytes"] == SIZE
    assert sha256_of(inbox / "movie.bin") == digest
    assert not parts.exists() or not any(parts.iterdir())


def left(
    name: str, status: Status, percent: int = 40, *, sending: bool = False, sent: bool = False
) -> Left:
    return Left(name, sending, status, percent, sent)


@pytest.mark.parametrize(
    ("transfers", "line"),
    [
        ([], "no transfer was under way"),
        (
            [left("a.bin", Status.ACTIVE, 37, sent=True)],
            "the transfer of a.bin was left paused at 37 % (part file kept); "
            "run the same command to resume it",
        ),
        (
            [left("a.bin", Status.PAUSED, 5, sending=True)],
            "the transfer of a.bin was left paused at 5 %; run the same command to resume it",
        ),
        (
            [left("a.bin", Status.ACTIVE, 12, sending=True)],
            "the transfer of a.bin was left at 12 %, not paused by this command (the server "
            "pauses it as the connection drops); run the same command to resume it",
        ),
        ([left("a.bin", Status.PENDING, 0)], "the offer of a.bin was left unanswered"),
        (
            [left("a.bin", Status.ACTIVE, 50, sent=True), left("b.bin", Status.PENDING, 0)],
            "the transfer of a.bin was left paused at 50 % (part file kept); the offer of "
            "b.bin was left unanswered; run the same command to resume them",
        ),
    ],
)
def test_the_line_says_where_each_transfer_was_left(transfers: list[Left], line: str) -> None:
    assert describe_left(transfers) == line
