"""The CLI as a person sees it in a real terminal: ``roomdrop receive`` (and ``send``)
in a pseudo-terminal, without ``--json``, against a real ``roomdrop serve``; what is
checked is the screen's text (:mod:`ptytools`)."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Room, sha256_of, write_random

from ptytools import Terminal, plain

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def in_terminal(
    room: Room, user: str, args: list[str], terminals: list[Terminal], cwd: Path
) -> Terminal:
    """``roomdrop ARGS`` of ``user`` in ``room``, in a pseudo-terminal (no ``--json``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    env.update({"ROOMDROP_ICE_HOSTS": "127.0.0.1", "TERM": "xterm-256color"})
    env["ROOMDROP_CONFIG_DIR"] = str(room.config_dir(user))
    argv = [sys.executable, "-m", "roomdrop.cli", *args, "--server", room.server.url]
    argv += ["--room", room.name, "--token", room.server.token(user, ttl=3600)]
    terminal = Terminal(argv, cwd=cwd, env=env)
    terminals.append(terminal)
    return terminal


def quiet_for(terminal: Terminal, seconds: float) -> bytes:
    """What ``terminal`` wrote in the next ``seconds``."""
    before = len(terminal.raw)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        terminal._read(0.05)
    return terminal.raw[before:]


async def test_the_whole_offer_is_asked_about_and_typing_ahead_does_not_answer_it(
    start: Any, room_on: Any, tmp_path: Path, terminals: list[Terminal]
) -> None:
    server = await start()
    room: Room = room_on(server)
    inbox = tmp_path / "inbox"
    receiver = in_terminal(
        room, room.bob, ["receive", "--out", str(inbox), "--count", "1"], terminals, tmp_path
    )
    receiver.expect(rf"joined room {room.name} as {room.bob}")
    receiver.type("clear\r")  # typed before any offer: it must not answer one
    time.sleep(0.3)
    source = tmp_path / "movie.bin"
    digest = write_random(source, 300_000)
    sender = room.send(source)

    question = (
        rf"{room.alice} offers movie\.bin \(300\.0 kB, application/octet-stream\)\s*\n"
        r"accept\? \[y/N\] "
    )
    receiver.expect(question)
    # the question stays whole on screen: nothing is redrawn over it while it waits
    assert quiet_for(receiver, 1.5) == b"", receiver.text
    assert re.search(question + r"$", receiver.text), receiver.text
    assert sender.process.poll() is None  # not rejected by the "clear" typed before
    assert not any(r.get("status") == "rejected" for r in sender.events("result"))

    receiver.type("y\r")
    assert await sender.wait(60) == 0, sender.report()
    assert receiver.wait(30) == 0, receiver.text
    assert sha256_of(inbox / "movie.bin") == digest
    # the answer stayed on the question's line, and the file's line came after it
    assert re.search(r"accept\? \[y/N\] y\s*\n", receiver.text), receiver.text
    assert re.search(r"done: movie\.bin \(300\.0 kB\)", receiver.text), receiver.text


async def test_n_declines_in_the_terminal(
    start: Any, room_on: Any, tmp_path: Path, terminals: list[Terminal]
) -> None:
    server = await start()
    room: Room = room_on(server)
    receiver = in_terminal(
        room, room.bob, ["receive", "--out", str(tmp_path / "inbox")], terminals, tmp_path
    )
    receiver.expect(rf"joined room {room.name}")
    source = tmp_path / "f.bin"
    write_random(source, 1000)
    sender = room.send(source)
    receiver.expect(r"accept\? \[y/N\] ")
    receiver.type("n\r")
    assert await sender.wait(30) == 1, sender.report()
    assert sender.result()["status"] == "rejected"
    receiver.expect(r"rejected: f\.bin")


async def test_ctrl_c_with_nothing_under_way_says_so(
    start: Any, room_on: Any, tmp_path: Path, terminals: list[Terminal]
) -> None:
    server = await start()
    room: Room = room_on(server)
    receiver = in_terminal(
        room, room.bob, ["receive", "--out", str(tmp_path / "inbox")], terminals, tmp_path
    )
    receiver.expect(rf"joined room {room.name}")
    receiver.interrupt()
    assert receiver.wait(30) == 130, receiver.text
    assert receiver.text.strip().splitlines()[-1] == (
        "roomdrop: interrupted: no transfer was under way"
    ), receiver.text


async def test_a_paused_transfer_shows_paused_on_the_receivers_bar(
    start: Any, room_on: Any, tmp_path: Path, terminals: list[Terminal]
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH="10000000")
    room: Room = room_on(server)
    receiver = in_terminal(
        room, room.bob, ["receive", "--out", str(tmp_path / "inbox"), "--yes"], terminals, tmp_path
    )
    receiver.expect(rf"joined room {room.name}")
    source = tmp_path / "movie.bin"
    write_random(source, 40 * MB)
    sender = room.send(source, transport="relay")
    await sender.progress_at_least(20)
    receiver.expect(r"movie\.bin \[relay\].*MB/s")
    sender.signal(signal.SIGINT)
    assert await sender.wait(30) == 130, sender.report()
    receiver.expect(r"paused by ")
    shown = len(receiver.raw)
    receiver.expect(r"movie\.bin \[relay\][^\n]*MB paused")

    def last_bar() -> str:
        """The bar as last drawn (a redraw goes over the same line: no newline between)."""
        return plain(receiver.raw[shown:]).split("movie.bin [relay]")[-1].split("\n")[0]

    quiet_for(receiver, 1.0)
    assert "paused" in last_bar() and "MB/s" not in last_bar(), last_bar()


async def test_waiting_for_the_receiver_is_said_once_with_the_time_waited_and_wait_gives_up(
    start: Any, room_on: Any, tmp_path: Path, terminals: list[Terminal]
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 1000)
    args = ["send", str(source), "--to", "carol", "--wait", "3.5"]
    sender = in_terminal(room, room.alice, args, terminals, tmp_path)
    started = time.monotonic()
    sender.expect(rf"waiting for carol to join room {room.name}: 2 s")
    assert sender.wait(30) == 1, sender.text
    took = time.monotonic() - started
    assert 3.5 <= took < 15, took
    text = sender.text
    assert text.rstrip().endswith(f"roomdrop: carol did not join room {room.name} within 3.5 s"), (
        text
    )
    # once: one line redrawn in place with the time (0 s, 1 s, ...; no newline between
    # them), which says at the end how long it waited
    wait_line = f"waiting for carol to join room {room.name}"
    assert re.search(
        rf"{wait_line}: 0 s[^\n]*: 1 s[^\n]*: 2 s[^\n]*: 3 s[^\n]*{wait_line}: waited \d+ s\n",
        text,
    ), text
    assert text.count(f"{wait_line}: waited") == 1, text


async def test_waiting_is_one_note_in_json_and_ends_when_the_receiver_joins(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 1000)
    sender = room.send(source)
    await sender.wait_for(
        lambda line: line.get("event") == "note" and line["message"].startswith("waiting for")
    )
    time.sleep(2.5)
    receiver = room.receive(tmp_path / "inbox")
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest
    notes = [n["message"] for n in sender.events("note") if "to join room" in n["message"]]
    assert notes == [f"waiting for {room.bob} to join room {room.name}"], sender.report()
