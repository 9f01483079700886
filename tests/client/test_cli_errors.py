"""What goes wrong is said in one clear line with a non-zero exit, and loses nothing:
rejection, policy refusals, an unreachable server, a bad token, a corrupted chunk, a
data channel that dies mid-transfer."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from clitools import MB, Room, sha256_of, write_random

from roomdrop.client.rtc import PeerLink, pin_ice_hosts
from roomdrop.client.signalling import Signalling, websocket_url
from roomdrop.e2e import DeviceKey
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.frames import DATA_CHANNEL_MAX_MESSAGE, HEADER_SIZE, split_frame
from roomdrop.protocol.messages import Message, MessageType, RoomState
from server.conftest import free_port

pytestmark = pytest.mark.timeout(180)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


async def test_a_declined_offer_ends_the_sender_with_rejected(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 100_000)
    receiver = room.receive(tmp_path / "inbox", yes=False)
    await room.joined(receiver)
    sender = room.send(source)
    offer = await receiver.wait_for(lambda line: line.get("event") == "offer")
    assert (offer["filename"], offer["file_size"]) == ("f.bin", 100_000)
    assert offer["sender_id"] == room.alice
    assert receiver.process.stdin is not None
    receiver.process.stdin.write(b"n\n")
    receiver.process.stdin.flush()

    assert await sender.wait(30) == 1, sender.report()
    assert last_line(sender.err()) == (
        f"roomdrop: f.bin: rejected: {room.bob} rejected it: declined"
    )
    assert sender.result()["status"] == "rejected"
    assert (await receiver.wait_for(lambda line: line.get("event") == "result"))[
        "status"
    ] == "rejected"
    assert receiver.process.poll() is None  # it goes on listening
    assert not (tmp_path / "inbox" / "f.bin").exists()

    # declining was the person's choice: the next file accepted ends it with success
    other = tmp_path / "g.bin"
    digest = write_random(other, 50_000)
    again = room.send(other)
    await receiver.wait_for(
        lambda line: line.get("event") == "offer" and line["filename"] == "g.bin"
    )
    receiver.process.stdin.write(b"y\n")
    receiver.process.stdin.flush()
    assert await again.wait(30) == 0, again.report()
    assert await receiver.wait(30) == 0, receiver.report()
    assert sha256_of(tmp_path / "inbox" / "g.bin") == digest


async def test_a_file_over_the_servers_limit_is_refused_with_its_reason(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_MAX_FILE_SIZE="1000000")
    room: Room = room_on(server)
    source = tmp_path / "big.bin"
    write_random(source, 2 * MB)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source)

    assert await sender.wait(30) == 1, sender.report()
    assert last_line(sender.err()) == (
        "roomdrop: big.bin: refused: file of 2000000 bytes exceeds the 1000000-byte limit"
    )
    result = sender.result()
    assert (result["status"], result["error_code"]) == ("refused", "file-too-large")


async def test_a_denied_type_is_refused(start: Any, room_on: Any, tmp_path: Path) -> None:
    server = await start(ROOMDROP_MIME_DENY='["image/*"]')
    room: Room = room_on(server)
    source = tmp_path / "pic.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(5000))
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source)

    assert await sender.wait(30) == 1, sender.report()
    assert last_line(sender.err()) == (
        "roomdrop: pic.png: refused: files of type image/png are not allowed here"
    )


async def test_an_unreachable_server_is_reported_at_once(tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    url = f"http://127.0.0.1:{free_port()}"
    done = await asyncio.to_thread(
        subprocess.run,
        [*ROOMDROP, "send", str(source), "--server", url, "--room", "r", "--to", "bob"],
        env={"ROOMDROP_TOKEN": "a.b.c", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    line = last_line(done.stderr.decode())
    assert line.startswith("roomdrop: ") and "not a JWT" in line

    done = await asyncio.to_thread(
        subprocess.run,
        [*ROOMDROP, "send", str(source), "--server", url, "--room", "r", "--to", "bob"],
        env={"ROOMDROP_TOKEN": TOKEN_FOR_NOBODY, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert last_line(done.stderr.decode()).startswith(
        f"roomdrop: server-unreachable: cannot reach the server at {url} ("
    )


async def test_a_forged_token_is_refused(start: Any, tmp_path: Path) -> None:
    server = await start()
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    done = await asyncio.to_thread(
        subprocess.run,
        [*ROOMDROP, "send", str(source), "--server", server.url, "--room", "r", "--to", "b"],
        env={"ROOMDROP_TOKEN": TOKEN_FOR_NOBODY, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert last_line(done.stderr.decode()) == (
        "roomdrop: unauthorized: token signature is invalid: "
        "it was not made with this server's secret"
    )


async def test_a_corrupted_chunk_is_asked_for_again_and_the_file_still_verifies(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """A sender built from the client library, end to end encrypted to the receiver's
    published key, flips a byte of one chunk's ciphertext on the data channel; the real
    ``roomdrop receive`` cannot decrypt it, asks for it again, and completes."""
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    digest = write_random(source, 20 * 65536 + 123)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)

    pin_ice_hosts(["127.0.0.1"])
    manager = FileTransferManager(download_dir=None)
    device = DeviceKey.generate()
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    joined = asyncio.Event()
    published: dict[str, str] = {}

    async def on_connect(state: RoomState) -> None:
        published.update(state.keys)
        joined.set()

    async def on_message(message: Message) -> None:
        if message.type in (MessageType.ANSWER, MessageType.ICE_CANDIDATE):
            await link.on_signal(message.type.value, message.payload.model_dump())
        else:
            await inbox.put(message)

    async def ignore_frame(*args: Any) -> None:
        return None

    signalling = Signalling(
        websocket_url(server.url, room.name, server.token(room.alice), device.public_text),
        on_connect=on_connect,
        on_message=on_message,
        on_frame=ignore_frame,
    )

    async def signal(kind: str, payload: dict[str, Any]) -> None:
        await signalling.send(MessageType(kind), payload)

    link = PeerLink(room.bob, ice_servers=[], signal=signal, on_frame=ignore_frame)
    runner = asyncio.create_task(signalling.run())
    try:
        await asyncio.wait_for(joined.wait(), 10)
        offered = await manager.create_offer(
            source,
            room.alice,
            room.bob,
            room.name,
            device=device,
            receiver_key=published[room.bob],
        )
        tid = offered["transfer_id"]
        await link.offer()
        assert await link.wait_open(10)
        await signalling.send(MessageType.FILE_SHARE_OFFER, manager.offer(tid))
        accept = await next_of(inbox, MessageType.FILE_SHARE_ACCEPT)
        assert accept.sender_id == room.bob
        await manager.accept_transfer(tid)
        total = manager.get_transfer(tid).total_chunks
        for index in range(total):
            frame = await manager.send_chunk(tid, index)
            if index == 7:
                bad = bytearray(frame)
                bad[HEADER_SIZE + 1000] ^= 0xFF  # one flipped byte in chunk 7's ciphertext
                frame = bytes(bad)
            await link.send(split_frame(frame, DATA_CHANNEL_MAX_MESSAGE))
        request = await next_of(inbox, MessageType.FILE_SHARE_CHUNK_REQUEST)
        payload = request.payload.model_dump(mode="json")
        assert (payload["ranges"], payload["reason"]) == ([[7, 8]], "bad-checksum")
        await link.send(split_frame(await manager.send_chunk(tid, 7), DATA_CHANNEL_MAX_MESSAGE))
        complete = await next_of(inbox, MessageType.FILE_SHARE_COMPLETE)
        assert complete.payload.model_dump()["sha256"] == digest
    finally:
        await link.close()
        await signalling.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(runner, 5)
        await manager.close()

    assert await receiver.wait(30) == 0, receiver.report()
    notes = [n["message"] for n in receiver.events("note")]
    assert "chunk 7 did not decrypt; asking for it again" in notes
    result = receiver.result()
    assert (result["status"], result["transport"], result["e2e"]) == ("completed", "p2p", True)
    assert result["moved_bytes"] == 20 * 65536 + 123  # the bad chunk was never stored
    assert sha256_of(tmp_path / "inbox" / "f.bin") == digest


async def test_a_data_channel_that_dies_mid_transfer_hands_over_to_the_relay(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """The data channel runs between 127.0.0.2 addresses and the WebSocket on 127.0.0.1;
    a prohibit route for 127.0.0.2 (in this test's own network namespace) kills only the
    data channel."""
    interfaces = sorted(name for _, name in socket.if_nameindex())
    assert interfaces == ["lo"], (
        f"this test changes routes: run it in a network namespace of its own with only lo "
        f"(scripts/test does), not beside {interfaces}"
    )
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "movie.bin"
    digest = write_random(source, 30 * MB)
    env = {"ROOMDROP_ICE_HOSTS": "127.0.0.2", "ROOMDROP_ICE_TIMEOUT": "3"}
    receiver = room.receive(tmp_path / "inbox", env=env)
    await room.joined(receiver)
    sender = room.send(source, env=env, extra=["--no-direct"])  # the data channel's case
    await receiver.progress_at_least(20)
    route = ["ip", "route", "add", "prohibit", "127.0.0.2/32", "table", "local"]
    subprocess.run(route, check=True)
    try:
        assert await sender.wait(120) == 0, sender.report()
        assert await receiver.wait(30) == 0, receiver.report()
    finally:
        subprocess.run(["ip", "route", "del", *route[3:]], check=True)

    notes = [n["message"] for n in sender.events("note")]
    assert f"data channel to {room.bob} lost" in notes
    assert any(n.startswith("no peer-to-peer connection") for n in notes), notes
    got = receiver.result()
    assert got["bytes_via"]["p2p"] > 0 and got["bytes_via"]["relay"] > 0
    assert got["moved_bytes"] == 30 * MB  # from the missing chunks on, nothing twice
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest


async def next_of(queue: asyncio.Queue[Message], kind: MessageType) -> Message:
    async with asyncio.timeout(30):
        while True:
            message = await queue.get()
            if message.type is kind:
                return message
            assert message.type not in (MessageType.ERROR, MessageType.FILE_SHARE_ERROR), message


ROOMDROP = [sys.executable, "-m", "roomdrop.cli"]
#: a well-formed token signed with a secret no server here has
TOKEN_FOR_NOBODY = jwt.encode({"sub": "alice", "exp": 4102444800}, secrets.token_hex(32))


async def test_receive_count_1_exits_when_its_one_transfer_fails_and_says_so(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    """``--count`` counts transfers that ended, arrived or not: a receiver whose disk
    is full (a 3 MiB tmpfs of the test's own, a 5 MB file) ends the transfer failed and
    exits 1 with the reason, where before it sat idle until killed."""
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "big.bin"
    write_random(source, 5 * MB)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        receiver = room.receive(small / "inbox", count=1)
        await room.joined(receiver)
        sender = room.send(source, transport="relay")

        assert await receiver.wait(60) == 1, receiver.report()
        result = receiver.result()
        assert (result["status"], result["error_code"]) == ("failed", "storage-error"), result
        assert last_line(receiver.err()).startswith("roomdrop: big.bin: failed: "), receiver.err()
        assert await sender.wait(60) == 1, sender.report()
        assert sender.result()["status"] == "failed"
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)
