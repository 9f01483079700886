"""The real ``roomdrop send`` and ``receive`` against several instances sharing Redis:
participants connected to different instances transfer peer to peer (signalling crosses
between instances) and through the relay (chunks cross between instances); when the
instance the parties are connected to is killed, both commands move to another one and
the same transfer goes on from the chunks still missing, not offered again (through the
relay, or peer to peer with signalling on the new instance); and when an instance's Redis
subscription breaks, what was published for its participants meanwhile (a cancel, a
completion, an accept) reaches the commands all the same, through a second room-state,
as a cancel missed while away reaches a receiver when it reconnects."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from clitools import MB, Room, sha256_of, write_random

from redistools import RedisServer, frozen_unsubscribed
from roomdrop.protocol.frames import decode_frame
from server.conftest import free_port

pytestmark = pytest.mark.timeout(240)

#: chunks in flight when an instance dies are lost and sent again (see test_cli_failover)
IN_FLIGHT = 12 * MB


async def deployment(start: Any, redis: RedisServer, n: int = 2, **env: str) -> list[Any]:
    """``n`` instances sharing ``redis`` under a fresh prefix, with one secret."""
    shared = {"ROOMDROP_REDIS_URL": redis.url, "ROOMDROP_REDIS_PREFIX": redis.prefix(), **env}
    first = await start(name="i0", **shared)
    others = [await start(name=f"i{k}", secret=first.secret, **shared) for k in range(1, n)]
    return [first, *others]


@pytest.mark.parametrize("transport", ["direct", "p2p", "relay"])
async def test_participants_on_two_instances_transfer_a_file(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path, transport: str
) -> None:
    one, two = await deployment(start, redis_server)
    room: Room = room_on(one)
    source = tmp_path / "photos.tar"
    size = 20 * MB
    digest = write_random(source, size)
    receiver = room.receive(tmp_path / "inbox", server_args=["--server", two.url])
    await room.joined(receiver)
    sender = room.send(source, transport=transport, server_args=["--server", one.url])

    assert await sender.wait(120) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    got, sent = receiver.result(), sender.result()
    assert (got["status"], got["sha256"]) == ("completed", digest)
    assert got["transport"] == sent["transport"] == transport
    expected = {"direct": 0, "p2p": 0, "relay": 0, transport: size}
    assert got["bytes_via"] == expected, got["bytes_via"]
    assert sha256_of(tmp_path / "inbox" / "photos.tar") == digest
    async with httpx.AsyncClient(base_url=two.url) as http:
        path = f"/webrtc/rooms/{room.name}/file-transfer/{got['transfer_id']}/progress"
        record = (await http.get(path, headers=one.headers(room.alice))).json()
    assert (record["status"], record["bytes_transferred"]) == ("completed", size)


@pytest.mark.parametrize("transport", ["relay", "p2p"])
async def test_when_their_instance_is_killed_both_move_to_another_and_the_transfer_goes_on(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path, transport: str
) -> None:
    a, b = await deployment(start, redis_server, ROOMDROP_ROOM_BANDWIDTH="10000000")
    room: Room = room_on(a, server_args=["--server", f"{a.url},{b.url}"])
    source = tmp_path / "movie.bin"
    size = 60 * MB
    digest = write_random(source, size)
    receiver = room.receive(tmp_path / "inbox")
    await room.joined(receiver)
    sender = room.send(source, transport=transport)
    before = await receiver.progress_at_least(40)
    a.kill()
    killed_at = time.monotonic()

    assert await sender.wait(120) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    took = time.monotonic() - killed_at
    for command in (sender, receiver):
        notes = [n["message"] for n in command.events("note")]
        assert f"reconnected to the server at {b.url}" in notes, notes
    sender_notes = [n["message"] for n in sender.events("note")]
    assert not any(n.startswith("the server lost") for n in sender_notes), sender_notes

    got, sent = receiver.result(), sender.result()
    assert got["transfer_id"] == sent["transfer_id"] == before["transfer_id"]
    assert (got["status"], got["sha256"]) == ("completed", digest)
    assert got["moved_bytes"] == size, "every chunk was stored once"
    # from the first missing chunk: only what was in flight when a died travelled twice
    assert size <= sent["moved_bytes"] <= size + IN_FLIGHT, sent["moved_bytes"]
    assert sha256_of(tmp_path / "inbox" / "movie.bin") == digest
    assert took < 60, took


async def test_a_transfer_across_instances_carries_on_when_their_subscriptions_break(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis drops both instances' subscriptions mid-transfer: each instance subscribes
    again and sends its participant a second room-state on the same connection; both
    commands take it in their stride (no reconnect, nothing sent twice)."""
    one, two = await deployment(start, redis_server, ROOMDROP_ROOM_BANDWIDTH="10000000")
    room: Room = room_on(one)
    source = tmp_path / "archive.bin"
    size = 30 * MB
    digest = write_random(source, size)
    receiver = room.receive(tmp_path / "inbox", server_args=["--server", two.url])
    await room.joined(receiver)
    sender = room.send(source, transport="relay", server_args=["--server", one.url])
    await receiver.progress_at_least(30)
    redis = redis_server.client()
    try:
        assert redis.client_kill_filter(_type="pubsub") >= 2
    finally:
        redis.close()

    assert await sender.wait(120) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    for server in (one, two):
        assert "room-state resent to every participant here" in server.log()
    for command in (sender, receiver):
        notes = [n["message"] for n in command.events("note")]
        assert not any("reconnected" in n or "lost the connection" in n for n in notes), notes
    got, sent = receiver.result(), sender.result()
    assert got["transfer_id"] == sent["transfer_id"]
    assert (got["status"], got["sha256"]) == ("completed", digest)
    assert got["moved_bytes"] == sent["moved_bytes"] == size, "no chunk travelled twice"
    assert sha256_of(tmp_path / "inbox" / "archive.bin") == digest


async def test_a_cancel_the_receivers_instance_missed_reaches_the_receiver_all_the_same(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The receiver's instance is frozen (SIGSTOP) while Redis drops its subscription and
    the sender's side cancels through the other instance: the file-share-cancel for the
    receiver is published to no one. Its instance, running again, subscribes again and
    sends a second room-state, and ``roomdrop receive`` ends the transfer as cancelled
    from it, instead of waiting for chunks that will never come (its part file stays)."""
    one, two = await deployment(start, redis_server, ROOMDROP_ROOM_BANDWIDTH="5000000")
    room: Room = room_on(one)
    source = tmp_path / "big.bin"
    size = 40 * MB
    write_random(source, size)
    receiver = room.receive(tmp_path / "inbox", server_args=["--server", two.url])
    await room.joined(receiver)
    sender = room.send(source, transport="relay", server_args=["--server", one.url])
    progress = await receiver.progress_at_least(10)
    tid = progress["transfer_id"]
    async with frozen_unsubscribed(redis_server, two.process.pid) as published:
        async with httpx.AsyncClient(base_url=one.url) as http:
            path = f"/webrtc/rooms/{room.name}/file-transfer/{tid}"
            answer = await http.delete(
                path, params={"reason": "sent the wrong file"}, headers=one.headers(room.alice)
            )
        assert answer.json()["status"] == "cancelled", answer.text
        await published("file-share-cancel")

    # the transfer ends as cancelled, and the command with it (--count counts transfers
    # that ended, arrived or not), saying it failed
    got = await receiver.wait_for(lambda line: line.get("event") == "result", timeout=30)
    assert (got["transfer_id"], got["status"], got["error"]) == (
        tid,
        "cancelled",
        "sent the wrong file",
    ), got
    assert got["bytes_transferred"] < size
    assert await sender.wait(30) == 1, sender.report()
    assert sender.result()["status"] == "cancelled"
    notes = [n["message"] for n in receiver.events("note")]
    assert not any("reconnected" in n for n in notes), notes
    assert await receiver.wait(30) == 1, receiver.report()


async def test_a_completion_the_senders_instance_missed_reaches_the_sender_all_the_same(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Peer to peer, the chunks need no server: the sender's instance is frozen
    (SIGSTOP) while Redis drops its subscription, and the receiver verifies the file and
    completes it through the other instance meanwhile, so the file-share-complete for the
    sender is published to no one. Its instance, running again, sends a second
    room-state, and ``roomdrop send`` ends the transfer as completed from it."""
    one, two = await deployment(start, redis_server)
    room: Room = room_on(one)
    source = tmp_path / "video.bin"
    size = 30 * MB
    digest = write_random(source, size)
    receiver = room.receive(tmp_path / "inbox", server_args=["--server", two.url])
    await room.joined(receiver)
    sender = room.send(source, transport="p2p", server_args=["--server", one.url])
    await receiver.progress_at_least(10)
    async with frozen_unsubscribed(redis_server, one.process.pid) as published:
        assert await receiver.wait(60) == 0, receiver.report()
        await published("file-share-complete")
    got = receiver.result()
    assert (got["status"], got["sha256"], got["transport"]) == ("completed", digest, "p2p")

    assert await sender.wait(30) == 0, sender.report()
    sent = sender.result()
    assert (sent["transfer_id"], sent["status"]) == (got["transfer_id"], "completed")
    assert sha256_of(tmp_path / "inbox" / "video.bin") == digest


async def test_an_accept_the_senders_instance_missed_starts_the_transfer_all_the_same(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The sender's instance is frozen (SIGSTOP) while Redis drops its subscription, and
    the receiver (here a bare WebSocket client on the other instance) accepts meanwhile:
    the file-share-accept for the sender is published to no one. From the second
    room-state, where the transfer is active, ``roomdrop send`` starts sending."""
    one, two = await deployment(start, redis_server)
    room: Room = room_on(one)
    source = tmp_path / "report.pdf.bin"
    write_random(source, 2 * MB)
    bob = await two.connect(room.name, room.bob)
    sender = room.send(source, transport="relay", server_args=["--server", one.url])
    tid = (await bob.recv("file-share-offer", timeout=30))["payload"]["transfer_id"]
    async with frozen_unsubscribed(redis_server, one.process.pid) as published:
        await bob.send("file-share-accept", {"transfer_id": tid})
        assert (await bob.recv("file-share-accept"))["payload"]["transfer_id"] == tid
        await published("file-share-accept")
    frame = decode_frame(await bob.recv_frame(timeout=15))
    assert (frame.transfer_id, frame.chunk_index) == (tid, 0)
    await bob.send("file-share-cancel", {"transfer_id": tid, "reason": "seen enough"})
    assert await sender.wait(30) == 1, sender.report()
    assert sender.result()["status"] == "cancelled"


async def test_a_receiver_that_reconnects_after_a_cancel_it_missed_ends_the_transfer(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """An ordinary reconnect: ``roomdrop receive`` is frozen while its instance dies and
    the sender's side cancels, so the cancel reaches no connection of the receiver. Let
    run again, it reconnects to the other instance, whose room-state shows the transfer
    cancelled, and ends it so (before, it went on waiting for chunks)."""
    one, two = await deployment(start, redis_server, ROOMDROP_ROOM_BANDWIDTH="5000000")
    room: Room = room_on(one)
    source = tmp_path / "long.bin"
    size = 40 * MB
    write_random(source, size)
    receiver = room.receive(tmp_path / "inbox", server_args=["--server", f"{two.url},{one.url}"])
    await room.joined(receiver)
    sender = room.send(source, transport="relay", server_args=["--server", one.url])
    tid = (await receiver.progress_at_least(10))["transfer_id"]
    receiver.signal(signal.SIGSTOP)
    try:
        two.kill()
        async with httpx.AsyncClient(base_url=one.url) as http:
            path = f"/webrtc/rooms/{room.name}/file-transfer/{tid}"
            answer = await http.delete(
                path, params={"reason": "while you were away"}, headers=one.headers(room.alice)
            )
        assert answer.json()["status"] == "cancelled", answer.text
    finally:
        receiver.signal(signal.SIGCONT)

    got = await receiver.wait_for(lambda line: line.get("event") == "result", timeout=30)
    assert (got["transfer_id"], got["status"], got["error"]) == (
        tid,
        "cancelled",
        "while you were away",
    ), got
    notes = [n["message"] for n in receiver.events("note")]
    assert f"reconnected to the server at {one.url}" in notes, notes
    assert await sender.wait(30) == 1, sender.report()
    receiver.kill()


@pytest.mark.parametrize("held_then", ["active", "paused"])
async def test_a_receiver_that_completes_while_its_instance_is_down_announces_it_on_return(
    start: Any, room_on: Any, redis_server: RedisServer, tmp_path: Path, held_then: str
) -> None:
    """Peer to peer, the chunks need no server: mid-transfer the receiver's instance is
    killed and the data channel carries on without it, so ``roomdrop receive`` verifies
    the whole file while it has no server and cannot send its file-share-complete. It
    comes back through the other URL of its ``--server`` list, an instance started only
    now, and the completion reaches the server: the record, the sender and the receiver
    end completed. "active": the instance starts at once, the record is still active
    and the receiver's catch-up announces the completion. "paused": it starts only once
    the sender's instance took the receiver's for gone (``ROOMDROP_INSTANCE_TIMEOUT``)
    and paused the transfer for its disconnect; a paused transfer cannot complete, so the
    receiver announces it on the resume that follows its return."""
    prefix = redis_server.prefix()
    shared = {"ROOMDROP_REDIS_URL": redis_server.url, "ROOMDROP_REDIS_PREFIX": prefix}
    one, two = await deployment(start, redis_server, **shared)
    later = free_port()  # the third instance, not started yet: connections are refused
    room: Room = room_on(one)
    source = tmp_path / "offline.bin"
    size = 40 * MB
    digest = write_random(source, size)
    inbox = tmp_path / "inbox"
    servers = ["--server", f"{two.url},http://127.0.0.1:{later}"]
    receiver = room.receive(inbox, server_args=servers)
    await room.joined(receiver)
    sender = room.send(source, transport="p2p", server_args=["--server", one.url])
    # the rest (24 MB, 1 to 3 s in our runs) must arrive before the sender's instance takes the
    # receiver's for gone (ROOMDROP_INSTANCE_TIMEOUT, 10 s) and pauses the transfer
    tid = (await receiver.progress_at_least(40))["transfer_id"]
    two.kill()
    killed_at = time.monotonic()
    assert not (inbox / source.name).exists()  # killed mid-transfer

    saved = inbox / source.name  # it appears once the whole file checked out
    while not saved.exists():
        assert time.monotonic() - killed_at < 60, receiver.report()
        await asyncio.sleep(0.05)
    verified_in = time.monotonic() - killed_at
    held = await one.transfer(room.name, room.alice, tid)
    assert held["status"] == "active", (verified_in, held)  # nobody told the server yet
    notes = [n["message"] for n in receiver.events("note")]
    assert f"lost the connection to the server at {two.url}; reconnecting" in notes, notes
    assert not any(n.startswith("reconnected") for n in notes), notes
    if held_then == "paused":
        paused = f"paused by the server ({room.bob} disconnected)"
        await sender.wait_for(lambda line: line.get("message") == paused, timeout=30)
        assert (await one.transfer(room.name, room.alice, tid))["status"] == "paused"

    three = await start(name="i2", port=later, secret=one.secret, **shared)
    assert await receiver.wait(60) == 0, receiver.report()
    assert await sender.wait(30) == 0, sender.report()
    notes = [n["message"] for n in receiver.events("note")]
    assert f"reconnected to the server at {three.url}" in notes, notes
    held = await three.transfer(room.name, room.bob, tid)
    assert (held["status"], held["sha256"]) == ("completed", digest), held
    got, sent = receiver.result(), sender.result()
    assert (got["transfer_id"], got["status"], got["sha256"]) == (tid, "completed", digest)
    assert (sent["transfer_id"], sent["status"], sent["sha256"]) == (tid, "completed", digest)
    assert got["bytes_via"] == {"direct": 0, "p2p": size, "relay": 0}, got["bytes_via"]
    assert sha256_of(saved) == digest
