"""``roomdrop send --to bob,carol`` and ``--to @room``: one file to several receivers,
each with a transfer of its own (its own accept or reject, its own result), from one
command that hashes the file once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Command, Room, sha256_of, write_random

from server.conftest import names

pytestmark = pytest.mark.timeout(180)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


async def joined_as(room: Room, user: str, out: Path, **kw: Any) -> Command:
    command = room.receive(out, user=user, **kw)
    await room.joined(command)
    return command


async def test_one_file_reaches_two_named_receivers_each_with_its_own_transfer(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    (carol,) = names("carol")
    source = tmp_path / "both.bin"
    digest = write_random(source, 3 * MB)
    bob_gets = await joined_as(room, room.bob, tmp_path / "bob")
    carol_gets = await joined_as(room, carol, tmp_path / "carol")

    sender = room.send(source, transport="relay", to=f"{room.bob},{carol}")
    assert await sender.wait(120) == 0, sender.report()
    results = sender.events("result")
    assert sorted(r["peer"] for r in results) == sorted([room.bob, carol])
    assert all(r["status"] == "completed" for r in results), results
    assert len({r["transfer_id"] for r in results}) == 2  # a transfer each
    for receiver, out in ((bob_gets, "bob"), (carol_gets, "carol")):
        assert await receiver.wait(60) == 0, receiver.report()
        assert sha256_of(tmp_path / out / "both.bin") == digest


async def test_at_room_sends_to_everyone_else_in_the_room_over_any_path(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    carol, dave = names("carol", "dave")
    source = tmp_path / "all.bin"
    digest = write_random(source, 2 * MB)
    receivers = {
        user: await joined_as(room, user, tmp_path / user) for user in (room.bob, carol, dave)
    }

    sender = room.send(source, to="@room")  # auto: direct, data channel or relay
    assert await sender.wait(120) == 0, sender.report()
    results = sender.events("result")
    assert sorted(r["peer"] for r in results) == sorted(receivers)
    for user, receiver in receivers.items():
        assert await receiver.wait(60) == 0, receiver.report()
        assert sha256_of(tmp_path / user / "all.bin") == digest


async def test_one_receiver_rejecting_fails_only_its_own_transfer(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    (carol,) = names("carol")
    source = tmp_path / "f.bin"
    digest = write_random(source, 1 * MB)
    bob_gets = await joined_as(room, room.bob, tmp_path / "bob")
    carol_asked = await joined_as(room, carol, tmp_path / "carol", yes=False)

    sender = room.send(source, transport="relay", to=f"{room.bob},{carol}")
    await carol_asked.wait_for(lambda line: line.get("event") == "offer")
    assert carol_asked.process.stdin is not None
    carol_asked.process.stdin.write(b"n\n")
    carol_asked.process.stdin.flush()

    assert await sender.wait(60) == 1, sender.report()
    by_user = {r["peer"]: r for r in sender.events("result")}
    assert by_user[room.bob]["status"] == "completed"
    assert by_user[carol]["status"] == "rejected"
    assert last_line(sender.err()) == (
        f"roomdrop: f.bin to {carol}: rejected: {carol} rejected it: declined"
    )
    assert await bob_gets.wait(60) == 0, bob_gets.report()
    assert sha256_of(tmp_path / "bob" / "f.bin") == digest
    assert not (tmp_path / "carol" / "f.bin").exists()


async def test_at_room_waits_for_a_first_receiver_and_gives_up_after_wait(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 1000)
    sender = room.send(source, to="@room", extra=["--wait", "1"])
    assert await sender.wait(60) == 1, sender.report()
    assert last_line(sender.err()) == (f"roomdrop: nobody else joined room {room.name} within 1 s")


@pytest.mark.parametrize(
    ("to", "extra", "why"),
    [
        ("bob,", [], "--to 'bob,': an empty name (USER, USER,... or @room)"),
        ("bob,bob", [], "--to 'bob,bob': a receiver named twice"),
        ("@room,bob", [], "--to @room means everyone else in the room: not with other names"),
        ("@room", ["--store"], "--store keeps files for receivers named with --to: not with @room"),
    ],
)
async def test_a_bad_list_of_receivers_is_refused_before_anything_is_sent(
    start: Any, room_on: Any, tmp_path: Path, to: str, extra: list[str], why: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 1000)
    sender = room.send(source, to=to, extra=extra)
    assert await sender.wait(30) == 2, sender.report()
    assert last_line(sender.err()) == f"roomdrop: {why}"


async def test_more_receivers_than_a_user_may_have_transfers_take_turns(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """The server lets a user have 2 transfers under way (room-state says so): a send to
    three receivers offers two at once and the third when one of them has ended,
    instead of having it refused (too-many-transfers)."""
    server = await start(ROOMDROP_MAX_TRANSFERS_PER_USER="2")
    room: Room = room_on(server)
    carol, dave = names("carol", "dave")
    source = tmp_path / "turns.bin"
    digest = write_random(source, 2 * MB)
    receivers = {
        user: await joined_as(room, user, tmp_path / user) for user in (room.bob, carol, dave)
    }
    sender = room.send(source, transport="relay", to="@room")
    assert await sender.wait(120) == 0, sender.report()
    results = sender.events("result")
    assert sorted(r["peer"] for r in results) == sorted(receivers)
    assert all(r["status"] == "completed" for r in results), results
    for user, receiver in receivers.items():
        assert await receiver.wait(60) == 0, receiver.report()
        assert sha256_of(tmp_path / user / "turns.bin") == digest
