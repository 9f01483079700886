"""A client never outlives its server by more than its documented timeouts, and never
hangs on an output nobody reads.

* Its server gone, a ``send`` or ``receive`` reconnects or ends (exit status 3) within
  ROOMDROP_RECONNECT_TIMEOUT, after noticing the loss: at once for a server killed
  (SIGKILL: its sockets reset), within 1.5 times ROOMDROP_PING_TIMEOUT for one that stopped
  answering (SIGSTOP: its sockets stay open and silent), and whatever the command was
  waiting for: its peer to join, or its relay upload to drain into a server that no
  longer reads it.
* Its stdout and stderr pipes closed by their reader, it ends at its next write with
  exit status 141, its transfers paused (the same command resumes them).

Every command here runs with ROOMDROP_RECONNECT_TIMEOUT=3 and ROOMDROP_PING_TIMEOUT=2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Command, Room, write_random

from server.conftest import Server

pytestmark = pytest.mark.timeout(180)

RECONNECT, PING = 3.0, 2.0
ENV = {"ROOMDROP_RECONNECT_TIMEOUT": str(RECONNECT), "ROOMDROP_PING_TIMEOUT": str(PING)}
#: one connection attempt to a stopped server waits this long for its handshake
ATTEMPT = 5.0
#: start-up, scheduling, a loaded machine
SLACK = 4.0


async def exits_within(process: subprocess.Popen[bytes], limit: float) -> tuple[int, float]:
    """(exit status, seconds it took), failing the test if it takes over ``limit``."""
    began = time.monotonic()
    while process.poll() is None:
        took = time.monotonic() - began
        assert took < limit, f"still running {took:.1f} s later (limit {limit:g} s)"
        await asyncio.sleep(0.05)
    return process.returncode, time.monotonic() - began


def piped(room: Room, user: str, args: list[str], json: bool = True) -> subprocess.Popen[bytes]:
    """``roomdrop ARGS`` as ``user`` in ``room``, with its stdout and stderr pipes to this
    process (which may close them: the reader going away)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    environ.update({"ROOMDROP_ICE_HOSTS": "127.0.0.1", **ENV})
    token = room.server.token(user, ttl=3600)
    where = ["--server", room.server.url, "--room", room.name, "--token", token]
    where += ["--json"] if json else []
    return subprocess.Popen(
        [sys.executable, "-m", "roomdrop.cli", *args, *where],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
        cwd=room.base,
    )


@pytest.fixture
async def ends(servers: list[Server]) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """Processes (piped commands) this test started, killed at its end; a stopped
    server is let go on (SIGCONT) and killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
    for server in servers:
        if server.stopped_by_test and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
            server.kill()


def gone(server: Server, how: str) -> float:
    """Make ``server`` go (``kill``: SIGKILL; ``stop``: SIGSTOP); the seconds a client
    may take to notice."""
    server.stopped_by_test = True
    if how == "kill":
        server.kill()
        return 0.0
    server.process.send_signal(signal.SIGSTOP)
    return 1.5 * PING + ATTEMPT  # a ping missed, and the attempt under way let finish


def unreachable(command: Command, server: Server) -> None:
    last = command.err().strip().splitlines()[-1]
    assert last.startswith("roomdrop: server-unreachable: cannot reach the server at "), last
    assert server.url in last, last


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_a_sender_waiting_for_its_peer_ends_when_its_server_is_gone(
    start: Any, room_on: Any, tmp_path: Path, ends: list[Any], how: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 1 * MB)
    sender = room.send(source, env=ENV)  # bob never comes
    await sender.wait_for(
        lambda line: line.get("event") == "note" and line["message"].startswith("waiting for")
    )
    notice = gone(server, how)
    code, took = await exits_within(sender.process, notice + RECONNECT + ATTEMPT + SLACK)
    assert code == 3, sender.report()
    unreachable(sender, server)
    print(f"{how}: the waiting sender ended {took:.1f} s later")


async def test_both_ends_of_a_relay_upload_into_a_stopped_server_end(
    start: Any, room_on: Any, tmp_path: Path, ends: list[Any]
) -> None:
    """The server stops reading mid-transfer: the sender's socket buffers fill, so its
    send waits for ever, and so would a ping written behind them."""
    server = await start(ROOMDROP_ROOM_BANDWIDTH="4000000")
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 60 * MB)
    receiver = room.receive(tmp_path / "inbox", env=ENV)
    await room.joined(receiver)
    sender = room.send(source, transport="relay", env=ENV)
    await receiver.progress_at_least(5)
    notice = gone(server, "stop")
    limit = notice + RECONNECT + ATTEMPT + SLACK
    (code, took), (code_r, took_r) = await asyncio.gather(
        exits_within(sender.process, limit), exits_within(receiver.process, limit)
    )
    assert (code, code_r) == (3, 3), sender.report() + receiver.report()
    for command in (sender, receiver):
        unreachable(command, server)
    print(f"stop mid-transfer: the sender ended {took:.1f} s later, the receiver {took_r:.1f} s")


async def test_a_sender_whose_output_reader_is_gone_ends_and_its_transfer_is_paused(
    start: Any, room_on: Any, tmp_path: Path, ends: list[subprocess.Popen[bytes]]
) -> None:
    """``--json`` writes a line on stdout every 0.5 s: the first one after the reader
    went fails."""
    server = await start(ROOMDROP_ROOM_BANDWIDTH="4000000")
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 60 * MB)
    receiver = room.receive(tmp_path / "inbox", env=ENV)
    await room.joined(receiver)
    args = ["send", str(source), "--to", room.bob, "--transport", "relay"]
    sender = piped(room, room.alice, args)
    ends.append(sender)
    progress = await receiver.progress_at_least(5)
    assert sender.stdout is not None and sender.stderr is not None
    sender.stdout.close()  # the reader goes: it reads no more
    sender.stderr.close()
    # the next progress line (every 0.5 s) meets the closed pipe
    code, took = await exits_within(sender, 0.5 + SLACK)
    assert code == 141, code
    async with server.http() as http:
        path = f"/webrtc/rooms/{room.name}/file-transfer/{progress['transfer_id']}/progress"
        answer = await http.get(path, headers=server.headers(room.alice))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "paused", answer.json()
    print(f"output closed: the sender ended {took:.1f} s later, its transfer paused")


@pytest.mark.parametrize("output", ["json", "bars"])
async def test_a_sender_with_no_reader_and_no_server_ends(
    start: Any, room_on: Any, tmp_path: Path, ends: list[subprocess.Popen[bytes]], output: str
) -> None:
    """What was seen: senders whose server had stopped and whose output's reader had
    gone, still there minutes later. It ends when it notices either. (The bars, on a
    stderr that is not a terminal, write only the notes, through rich.)"""
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 1 * MB)
    sender = piped(room, room.alice, ["send", str(source), "--to", room.bob], output == "json")
    ends.append(sender)
    assert sender.stdout is not None and sender.stderr is not None
    notes = sender.stdout if output == "json" else sender.stderr
    began = time.monotonic()
    while b"waiting for" not in notes.readline():
        assert time.monotonic() - began < 30, "the sender did not say it waits for bob"
    sender.stdout.close()
    sender.stderr.close()
    notice = gone(server, "stop")
    code, took = await exits_within(sender, notice + RECONNECT + ATTEMPT + SLACK)
    # it notices the closed output when it says it lost the server, or the server when
    # the reconnect timeout ends: either way it ends
    assert code in (141, 3), code
    print(f"no reader ({output}), stopped server: the sender ended {took:.1f} s later, {code}")
