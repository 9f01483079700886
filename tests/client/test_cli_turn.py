"""TURN: the server hands out TURN credentials that expire (the TURN REST API scheme
coturn's ``use-auth-secret`` implements), and two commands that may use only relay
candidates (``ROOMDROP_ICE_POLICY=relay``) move a file through a real coturn."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Room, sha256_of, write_random
from nettools import mute

from roomdrop.server.turn import turn_credentials
from server.conftest import free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    """Debian's coturn on 127.0.0.1 (port, shared secret, log file)."""
    assert shutil.which("turnserver"), "coturn is missing: .ci/run and scripts/test install it"
    port, secret = free_port(), secrets.token_hex(16)
    log = tmp_path / "turnserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "turnserver",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--listening-port={port}",
                "--min-port=49152",
                "--max-port=49999",
                "--use-auth-secret",
                f"--static-auth-secret={secret}",
                "--realm=roomdrop.test",
                "--allow-loopback-peers",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-multicast-peers",
                "--log-file=stdout",
                "--verbose",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:  # coturn listens on TCP too: up once it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "coturn did not start"
                time.sleep(0.1)
        yield port, secret, log
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_turn_credentials_follow_the_rest_api_scheme() -> None:
    username, credential = turn_credentials("s3cret", "alice", now=1_700_000_000.7, ttl=600)
    assert username == "1700000600:alice"
    expected = hmac.new(b"s3cret", b"1700000600:alice", hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


async def test_config_hands_each_user_turn_credentials_that_expire(
    start: Any, coturn: tuple[int, str, Path]
) -> None:
    port, secret, _ = coturn
    url = f"turn:127.0.0.1:{port}?transport=udp"
    server = await start(ROOMDROP_TURN_URLS=url, ROOMDROP_TURN_SECRET=secret)
    async with server.http() as http:
        answer = await http.get("/webrtc/config", headers=server.headers("alice"))
    assert answer.status_code == 200
    (turn,) = answer.json()["ice_servers"]
    assert turn["urls"] == [url]
    expiry, user = turn["username"].split(":", 1)
    assert user == "alice"
    assert 3590 <= int(expiry) - time.time() <= 3600
    expected = hmac.new(secret.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected


async def test_a_file_crosses_a_real_turn_server_when_only_relay_candidates_are_allowed(
    start: Any, room_on: Any, tmp_path: Path, coturn: tuple[int, str, Path]
) -> None:
    port, secret, log = coturn
    server = await start(
        ROOMDROP_TURN_URLS=f"turn:127.0.0.1:{port}?transport=udp",
        ROOMDROP_TURN_SECRET=secret,
    )
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 20 * MB)
    env = {"ROOMDROP_ICE_POLICY": "relay", "ROOMDROP_ICE_TIMEOUT": "15"}
    receiver = room.receive(tmp_path / "inbox", env=env)
    await room.joined(receiver)
    sender = room.send(source, transport="p2p", env=env)

    assert await sender.wait(120) == 0, sender.report() + log.read_text(errors="replace")
    assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        assert command.result()["transport"] == "p2p"
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest
    await asyncio.sleep(0.2)
    text = log.read_text(errors="replace")
    # with the relay policy the peers have no other candidates: both allocated on coturn,
    # under their own time-limited usernames
    assert text.count("ALLOCATE processed, success") >= 2, text[-3000:]
    for user in (room.alice, room.bob):
        assert f":{user}>: incoming packet ALLOCATE processed, success" in text, user
    # and the file's bytes went through it: coturn's usage lines count what the sender's
    # allocation received (rb)
    received = [
        int(line.split("rb=")[1].split(",")[0])
        for line in text.splitlines()
        if " usage: " in line and f":{room.alice}>" in line
    ]
    assert received and max(received) >= 1 * MB, received


async def test_relay_candidates_that_come_after_the_offer_carry_the_file(
    start: Any, room_on: Any, tmp_path: Path, coturn: tuple[int, str, Path]
) -> None:
    """The host candidates go in the offer and answer at once; the relay ones, gathered
    meanwhile, follow as ``ice-candidate`` messages (``ROOMDROP_ICE_GATHER_WAIT=0``: none
    waited for). The peers' host candidates are on 127.0.0.2 and 127.0.0.3, from which
    nothing gets anywhere (:func:`mute`), while their TURN sockets, the server and coturn
    are on 127.0.0.1: only the pair of relay candidates, each sent after the SDP, can
    connect (a relay candidate checking the other side's host one gets no answer)."""
    port, secret, log = coturn
    server = await start(
        ROOMDROP_TURN_URLS=f"turn:127.0.0.1:{port}?transport=udp",
        ROOMDROP_TURN_SECRET=secret,
    )
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 5 * MB)
    env = {"ROOMDROP_ICE_GATHER_WAIT": "0", "ROOMDROP_ICE_TIMEOUT": "20"}
    with mute("127.0.0.2", "127.0.0.3"):
        receiver = room.receive(tmp_path / "inbox", env={**env, "ROOMDROP_ICE_HOSTS": "127.0.0.3"})
        await room.joined(receiver)
        sender = room.send(source, transport="p2p", env={**env, "ROOMDROP_ICE_HOSTS": "127.0.0.2"})
        assert await sender.wait(120) == 0, sender.report() + log.read_text(errors="replace")
        assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        got = command.result()
        assert got["transport"] == "p2p" and got["bytes_via"]["relay"] == 0, got
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest
    text = log.read_text(errors="replace")
    for user in (room.alice, room.bob):
        assert f":{user}>: incoming packet ALLOCATE processed, success" in text, user
    # the file's bytes went through coturn: it logs what the sender's allocation
    # received (rb) every second or so
    deadline = time.monotonic() + 10
    while max(received_by(log, room.alice), default=0) < 1 * MB:
        assert time.monotonic() < deadline, received_by(log, room.alice)
        await asyncio.sleep(0.2)


def received_by(log: Path, user: str) -> list[int]:
    """The bytes each of coturn's usage lines says ``user``'s allocation received."""
    return [
        int(line.split("rb=")[1].split(",")[0])
        for line in log.read_text(errors="replace").splitlines()
        if " usage: " in line and f":{user}>" in line
    ]
