"""``roomdrop send`` hashes its files while it connects and joins, not before: the
offer still carries the whole file's sha256, and a file that changed after it was
hashed is hashed again before it is offered.

The sender runs as the real command in a child process (``main`` of ``roomdrop.cli``)
with two hooks around it: the scan says on stdout when it begins and ends (it is the
real :func:`~roomdrop.storage.scan_source`), and ``Session.start`` (connecting and
joining) waits, at most a few seconds, for the first scan to begin. With hashing in
line before the offer, the scan begins only after the join; with hashing overlapped,
it begins before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from clitools import MB, Room, sha256_of, write_random

CHILD = r"""
import json, sys, threading
import roomdrop.client.scans as scans
import roomdrop.client.session as session
from roomdrop.cli import main

real_scan, real_start = scans.scan_source, session.Session.start
began, ended = threading.Event(), threading.Event()
change = json.loads(sys.argv[1])

def say(what, **more):
    print(json.dumps({"event": "hook", "what": what, **more}), flush=True)

def scan(path):
    say("scan-began", path=str(path))
    began.set()
    info = real_scan(path)
    say("scan-ended", sha256=info.sha256)
    ended.set()
    return info

async def start(self):
    began.wait(5)  # blocks the loop: nothing else needs it before the join
    if change is not None and ended.wait(30):
        with open(change["path"], "ab") as f:  # the file changes after it was hashed
            f.write(bytes.fromhex(change["append"]))
        say("changed")
    await real_start(self)

scans.scan_source, session.Session.start = scan, start
sys.exit(main(sys.argv[2:]))
"""


def send_hooked(room: Room, source: Path, change: dict[str, str] | None) -> Any:
    """``roomdrop send SOURCE`` to bob over the relay, hooked as the module says."""
    command = room.send(source, transport="relay")  # its arguments, as Room builds them
    command.kill()
    if command.process.stdin is not None:
        command.process.stdin.close()
    args = command.process.args
    assert isinstance(args, list)
    argv = [str(a) for a in args[args.index("roomdrop.cli") + 1 :]]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    environ["ROOMDROP_ICE_HOSTS"] = "127.0.0.1"
    with command.stdout.open("wb") as out, command.stderr.open("wb") as err:
        command.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(change), *argv],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            env=environ,
            cwd=room.base,
        )
    return command


def order(lines: list[dict[str, Any]]) -> list[str]:
    """The hooks' lines and the notes, in the order printed, shortened."""
    out = []
    for line in lines:
        if line.get("event") == "hook":
            out.append(line["what"])
        elif line.get("event") == "note":
            out.append(" ".join(line["message"].split()[:2]))
    return out


async def test_the_file_is_hashed_while_the_sender_connects_and_joins(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 8 * MB)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = send_hooked(room, source, None)
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    steps = order(sender.lines())
    assert steps.index("scan-began") < steps.index("joined room"), steps
    assert steps.count("scan-began") == 1, steps  # read once: it did not change
    hashed = [line for line in sender.lines() if line.get("what") == "scan-ended"]
    assert hashed[0]["sha256"] == digest
    for command in (sender, receiver):
        assert command.result()["status"] == "completed"
        assert command.result()["sha256"] == digest


async def test_a_file_changed_after_it_was_hashed_is_hashed_again_before_the_offer(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    before = write_random(source, 3 * MB)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = send_hooked(room, source, {"path": str(source), "append": os.urandom(999).hex()})
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    after = sha256_of(source)
    assert after != before
    steps = order(sender.lines())
    assert steps.index("scan-began") < steps.index("changed") < steps.index("joined room")
    assert steps.count("scan-began") == 2, steps  # hashed again once it had changed
    for command in (sender, receiver):
        result = command.result()
        assert result["status"] == "completed", command.report()
        assert result["sha256"] == after
        assert result["bytes_transferred"] == 3 * MB + 999
    assert sha256_of(Path(receiver.result()["saved_path"])) == after
