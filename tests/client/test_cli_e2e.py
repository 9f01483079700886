"""End-to-end encryption from the command line (docs/protocol.md §14): the device key
file, ``roomdrop keys``, CLI to CLI end to end over both paths with one safety number on
both sides, trust on first use refusing a changed key until told to, and the receiver's
MIME check on the decrypted content. Real ``roomdrop serve``, real commands; each user
of a test has a config directory of its own (``Room.config_dir``)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from clitools import Command, Room, sha256_of, write_random

from roomdrop.client.keys import KEY_FILE, load_device_key
from roomdrop.e2e import safety_number

ROOMDROP = [sys.executable, "-m", "roomdrop.cli"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24) + os.urandom(100_000)


def keys(config: Path | None, *args: str, env: dict[str, str] | None = None) -> Any:
    """``roomdrop keys ARGS`` with ``config`` as ROOMDROP_CONFIG_DIR (None: unset)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    if config is not None:
        environ["ROOMDROP_CONFIG_DIR"] = str(config)
    environ.update(env or {})
    return subprocess.run(
        [*ROOMDROP, "keys", *args], capture_output=True, text=True, timeout=60, env=environ
    )


def number_of(room: Room, a: str, b: str) -> str:
    """The safety number of users ``a`` and ``b`` from their key files, as computed here."""
    key_a, key_b = load_device_key(room.config_dir(a)), load_device_key(room.config_dir(b))
    assert key_a is not None and key_b is not None
    return safety_number(a, key_a.public, b, key_b.public)


def public_of(room: Room, user: str) -> str:
    key = load_device_key(room.config_dir(user))
    assert key is not None
    return key.public_text


def notes(command: Command) -> list[str]:
    return [n["message"] for n in command.events("note")]


async def transfer(room: Room, source: Path, inbox: Path, **send: Any) -> tuple[Command, Command]:
    receiver = room.receive(inbox)
    await room.joined(receiver)
    sender = room.send(source, **send)
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    return sender, receiver


def test_the_device_key_is_made_0600_kept_and_shown_by_roomdrop_keys(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    env = {"XDG_CONFIG_HOME": str(xdg)}
    done = keys(None, env=env)
    assert done.returncode == 0, done.stderr
    directory = xdg / "roomdrop"
    lines = done.stdout.splitlines()
    assert lines[0] == f"device key: {directory / KEY_FILE}"
    device = load_device_key(directory)
    assert device is not None
    assert lines[1] == f"public key: {device.public_text}"
    assert lines[2] == f"trusted keys: {directory / 'trusted-keys.json'}"
    assert lines[3:] == ["no peer's key trusted yet"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / KEY_FILE).stat().st_mode) == 0o600
    again = keys(None, env=env)
    assert again.stdout == done.stdout  # the same key, used again

    (directory / KEY_FILE).chmod(0o644)
    refused = keys(None, env=env)
    assert refused.returncode == 2
    assert "may be read or changed by other users (mode 0644)" in refused.stderr
    assert f"chmod 600 {directory / KEY_FILE}" in refused.stderr
    # send refuses it too, before it connects anywhere
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    token = jwt.encode({"sub": "alice", "exp": 4102444800}, secrets.token_hex(32))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    argv = ["send", str(source), "--to", "bob", "--server", "http://127.0.0.1:9", "--room", "r"]
    sent = subprocess.run(
        [*ROOMDROP, *argv, "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **env},
    )
    assert sent.returncode == 2, sent.stderr
    assert "mode 0644" in sent.stderr.splitlines()[-1]


@pytest.mark.parametrize("transport", ["p2p", "relay"])
async def test_cli_to_cli_is_end_to_end_with_the_same_safety_number_on_both_sides(
    start: Any, room_on: Any, tmp_path: Path, transport: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "secret.bin"
    digest = write_random(source, 1_000_000)
    sender, receiver = await transfer(room, source, tmp_path / "inbox", transport=transport)
    number = number_of(room, room.alice, room.bob)
    for command in (sender, receiver):
        result = command.result()
        assert (result["status"], result["transport"]) == ("completed", transport)
        assert (result["e2e"], result["safety_number"]) == (True, number)
        assert len(number) == 71 and number.replace(" ", "").isdigit()
    assert f"end-to-end encrypted to {room.bob}; safety number {number}" in notes(sender)
    assert f"end-to-end encrypted from {room.alice}; safety number {number}" in notes(receiver)
    assert sha256_of(tmp_path / "inbox" / "secret.bin") == digest

    # each side now trusts the other's key, on this server
    shown = keys(room.config_dir(room.alice))
    assert shown.returncode == 0, shown.stderr
    assert f"{server.url}\n  {room.bob}  {public_of(room, room.bob)}\n" in shown.stdout
    trusted = json.loads((room.config_dir(room.bob) / "trusted-keys.json").read_text())
    assert trusted["servers"][server.url] == {
        room.alice: {"trusted": [public_of(room, room.alice)], "pending": None}
    }


@pytest.mark.parametrize("how", ["keys-trust", "trust-new-key"])
async def test_a_receiver_whose_key_changed_is_refused_until_trusted(
    start: Any, room_on: Any, tmp_path: Path, how: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 200_000)
    await transfer(room, source, tmp_path / "first")
    old_key, old_number = public_of(room, room.bob), number_of(room, room.alice, room.bob)

    (room.config_dir(room.bob) / KEY_FILE).unlink()  # bob reinstalled: a new key
    receiver = room.receive(tmp_path / "second")
    await room.joined(receiver)
    new_key, new_number = public_of(room, room.bob), number_of(room, room.alice, room.bob)
    assert new_key != old_key
    refused = room.send(source)
    assert await refused.wait(60) == 1, refused.report()
    result = refused.result()
    assert (result["status"], result["error_code"], result["e2e"]) == (
        "failed",
        "key-changed",
        False,
    )
    said = refused.err().splitlines()[-1]
    for part in (
        f"the device key of {room.bob} on {server.url} changed",
        f"{old_key} (safety number {old_number})",
        f"{room.bob} now shows {new_key} (safety number {new_number})",
        f"`roomdrop keys trust {room.bob}`",
        "--trust-new-key",
    ):
        assert part in said, part
    assert receiver.process.poll() is None  # nothing was offered to it

    if how == "keys-trust":
        done = keys(room.config_dir(room.alice), "trust", room.bob)
        assert done.returncode == 0, done.stderr
        assert (
            done.stdout == f"trusted the new device key of {room.bob} on {server.url}: {new_key}\n"
        )
        again = keys(room.config_dir(room.alice), "trust", room.bob)  # nothing waits now
        assert again.returncode == 1
        assert f"no new key of {room.bob} waits to be trusted" in again.stderr
        sender = room.send(source)
    else:
        sender = room.send(source, extra=["--trust-new-key"])
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    if how == "trust-new-key":
        assert f"trusting the new device key of {room.bob} (--trust-new-key)" in notes(sender)
    for command in (sender, receiver):
        assert (command.result()["e2e"], command.result()["safety_number"]) == (True, new_number)
    assert sha256_of(tmp_path / "second" / "f.bin") == digest
    # trusted from now on, without the flag
    receiver = room.receive(tmp_path / "third")
    await room.joined(receiver)
    sender = room.send(source)
    assert await sender.wait(60) == 0, sender.report()


async def test_a_receiver_refuses_a_sender_whose_key_changed(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 200_000)
    await transfer(room, source, tmp_path / "first")
    old_key = public_of(room, room.alice)

    (room.config_dir(room.alice) / KEY_FILE).unlink()
    receiver = room.receive(tmp_path / "second")
    await room.joined(receiver)
    sender = room.send(source)
    assert await receiver.wait(60) == 1, receiver.report()
    assert await sender.wait(30) == 1, sender.report()
    new_key = public_of(room, room.alice)
    for command in (receiver, sender):
        result = command.result()
        assert (result["status"], result["error_code"]) == ("failed", "key-changed"), result
        assert f"the device key of {room.alice} on {server.url} changed" in result["error"]
        assert new_key in result["error"] and old_key in result["error"]
    assert not (tmp_path / "second" / "f.bin").exists()
    record = await server.transfer(room.name, room.bob, receiver.result()["transfer_id"])
    assert (record["status"], record["error_code"]) == ("failed", "key-changed")

    receiver = room.receive(tmp_path / "third", extra=["--trust-new-key"])
    await room.joined(receiver)
    sender = room.send(source)
    assert await receiver.wait(60) == 0, receiver.report()
    assert await sender.wait(30) == 0, sender.report()
    assert receiver.result()["safety_number"] == number_of(room, room.alice, room.bob)
    assert sha256_of(tmp_path / "third" / "f.bin") == digest


LYING_SENDER = r"""
import dataclasses, sys
import roomdrop.client.scans as scans
from roomdrop.cli import main

real = scans.scan_source
declared = sys.argv[1]

def scan(path):  # the offer declares another type than the content is
    return dataclasses.replace(real(path), mime_type=declared)

scans.scan_source = scan
sys.exit(main(sys.argv[2:]))
"""


def send_declaring(room: Room, source: Path, declared: str, transport: str) -> Command:
    """The real ``roomdrop send``, its scan declaring ``declared`` for the file."""
    command = room.send(source, transport=transport)
    command.kill()
    if command.process.stdin is not None:
        command.process.stdin.close()
    args = command.process.args
    assert isinstance(args, list)
    argv = [str(a) for a in args[args.index("roomdrop.cli") + 1 :]]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    environ["ROOMDROP_ICE_HOSTS"] = "127.0.0.1"
    environ["ROOMDROP_CONFIG_DIR"] = str(room.config_dir(room.alice))
    with command.stdout.open("wb") as out, command.stderr.open("wb") as err:
        command.process = subprocess.Popen(
            [sys.executable, "-c", LYING_SENDER, declared, *argv],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            env=environ,
            cwd=room.base,
        )
    return command


@pytest.mark.parametrize(
    ("env", "declared", "transport", "why"),
    [
        ({}, "application/pdf", "relay", "declared application/pdf, but the content is image/png"),
        (
            {"ROOMDROP_MIME_DENY": '["image/*"]'},
            "application/octet-stream",
            "p2p",
            "declared application/octet-stream, but the content is image/png, which is not "
            "allowed here",
        ),
    ],
    ids=["contradiction", "denied-by-the-servers-list"],
)
async def test_the_receiver_refuses_content_that_is_not_what_the_offer_declared(
    start: Any,
    room_on: Any,
    tmp_path: Path,
    env: dict[str, str],
    declared: str,
    transport: str,
    why: str,
) -> None:
    """The server cannot see the content (it is encrypted): the receiver checks the
    first decrypted chunk against the declared type and the lists room-state gave it."""
    server = await start(**env)
    room: Room = room_on(server)
    source = tmp_path / "picture.png"
    source.write_bytes(PNG)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = send_declaring(room, source, declared, transport)
    assert await receiver.wait(60) == 1, receiver.report()
    assert await sender.wait(30) == 1, sender.report()
    for command in (receiver, sender):
        result = command.result()
        assert (result["status"], result["error_code"]) == ("failed", "mime-type-not-allowed")
        assert result["error"] == f"picture.png: {why}"  # the receiver's words
        assert result["e2e"] is True
    assert [p for p in (tmp_path / "inbox").rglob("*") if not p.is_dir()] == []
    tid = receiver.result()["transfer_id"]
    record = await server.transfer(room.name, room.bob, tid)
    assert (record["status"], record["error_code"]) == ("failed", "mime-type-not-allowed")
