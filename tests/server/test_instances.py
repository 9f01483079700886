"""Several ``roomdrop serve`` instances sharing rooms through one real redis-server: the
participants of a room connected to different instances see each other, signal, offer
and accept; relayed chunks cross from one instance to the other byte for byte in bounded
memory (on each instance and in Redis); limits and the room's bandwidth hold across
instances; records survive a restart of every instance; a killed instance's participants
are taken as gone, or carry on where they reconnect; Redis out of reach is a clear 503;
what an instance missed while its subscription was broken reaches its participants in a
second room-state, and after Redis restarts empty their open connections are in their
rooms again."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_server_relay import (
    BIG,
    CHUNK,
    RSS_MARGIN,
    MiB,
    frame_of,
    fresh,
    make_chunk,
    receive_file,
    sha256_of,
    write_random_file,
)
from websockets.exceptions import ConnectionClosed

from redistools import RedisServer, frozen_unsubscribed, start_redis
from roomdrop.protocol.frames import decode_frame
from roomdrop.server.redisbackend import QUEUE_FRAMES
from server.e2etools import public

if TYPE_CHECKING:
    from conftest import Client, Deployment, Server


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    # what instances share through Redis (presence, records, limits, the relay queue) is
    # what this module is about; its chunks come from test_server_relay's clear sources, so
    # its servers allow clear transfers. Sealed frames across instances:
    # tests/client/test_cli_instances.py and test_cli_e2e_wire.py (Redis never holds
    # plaintext)
    return {"ROOMDROP_REQUIRE_E2E": "false"}


async def across(
    one: Server, two: Server, room: str, alice: str, bob: str
) -> tuple[Client, Client]:
    """``alice`` on instance ``one`` and ``bob`` on ``two`` in ``room``, each having seen
    the other join."""
    a = await one.connect(room, alice)
    b = await two.connect(room, bob)
    await a.recv("user-joined")
    return a, b


async def offered(a: Client, b: Client, **offer: Any) -> str:
    """``a`` offers ``b`` a file and ``b`` accepts; the transfer id."""
    tid = await a.offer(b.user, **offer)
    await b.recv("file-share-offer")
    await b.send("file-share-accept", {"transfer_id": tid})
    await a.recv("file-share-accept")
    await b.recv("file-share-accept")
    return tid


async def test_participants_on_two_instances_see_each_other_and_signal_only_the_one_named(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(2)
    room, alice, bob, carol = fresh("room", "alice", "bob", "carol")
    a = await one.connect(room, alice)
    b = await two.connect(room, bob)
    assert (await a.recv("user-joined"))["payload"] == {"user_id": bob, "key": public(bob)}
    c = await two.connect(room, carol, room_state=False)
    state = await c.recv("room-state")
    assert state["payload"]["participants"] == sorted([alice, bob, carol])
    assert (await a.recv("user-joined"))["payload"] == {"user_id": carol, "key": public(carol)}
    assert (await b.recv("user-joined"))["payload"] == {"user_id": carol, "key": public(carol)}

    await a.send("offer", {"target_id": bob, "type": "offer", "sdp": "v=0 from alice"})
    signal_ = await b.recv("offer")
    assert signal_["sender_id"] == alice and signal_["room_id"] == room
    assert signal_["payload"]["sdp"] == "v=0 from alice"
    await b.send("answer", {"target_id": alice, "type": "answer", "sdp": "v=0 from bob"})
    assert (await a.recv("answer"))["sender_id"] == bob
    candidate = {"target_id": bob, "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}
    await a.send("ice-candidate", candidate)
    assert (await b.recv("ice-candidate"))["payload"]["candidate"] == candidate["candidate"]
    await c.silent(0.5)  # carol, on bob's instance, got nothing meant for bob

    await b.close()
    assert (await a.recv("user-left"))["payload"] == {"user_id": bob}
    assert (await c.recv("user-left"))["payload"] == {"user_id": bob}


async def test_an_offer_made_on_one_instance_is_acted_on_from_the_other_with_one_record(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(2)
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await across(one, two, room, alice, bob)
    tid = await a.offer(bob, filename="../report.pdf")
    offer = await b.recv("file-share-offer")
    assert offer["sender_id"] == alice and offer["payload"]["filename"] == "report.pdf"

    path = f"/webrtc/rooms/{room}/file-transfer/{tid}"
    accepted = await two.request(bob, "POST", path + "/accept")
    assert accepted.status_code == 200, accepted.text
    assert (await a.recv("file-share-accept"))["sender_id"] == bob
    assert (await one.transfer(room, alice, tid))["status"] == "active"

    paused = await one.request(alice, "POST", path + "/pause")
    assert paused.json()["status"] == "paused"
    assert (await b.recv("file-share-pause"))["sender_id"] == alice
    await b.send("file-share-resume", {"transfer_id": tid})
    assert (await a.recv("file-share-resume"))["sender_id"] == bob
    await a.send(
        "file-share-progress",
        {
            "transfer_id": tid,
            "chunks_sent": 2,
            "bytes_transferred": 2 * CHUNK,
            "progress_percent": 66.7,
            "status": "active",
        },
    )
    progress = await b.recv("file-share-progress")
    assert progress["payload"]["chunks_sent"] == 2

    deadline = time.monotonic() + 2
    while (record := await two.transfer(room, bob, tid))["chunks_sent"] != 2:
        assert time.monotonic() < deadline, f"progress never reached the shared record: {record}"
        await asyncio.sleep(0.05)
    assert record == {
        **await one.transfer(room, alice, tid),
        "speed_bps": record["speed_bps"],
        "eta_seconds": record["eta_seconds"],
    }
    # a stranger, on either instance, may not read it (to them it does not exist), and
    # under the wrong room it is not found either
    stranger = await two.request("mallory", "GET", path + "/progress")
    assert stranger.status_code == 404
    elsewhere = await one.request(alice, "GET", f"/webrtc/rooms/other/file-transfer/{tid}/progress")
    assert elsewhere.status_code == 404
    listed = await two.request(alice, "GET", "/webrtc/file-transfers")
    assert [t["transfer_id"] for t in listed.json()] == [tid]

    cancelled = await two.request(bob, "DELETE", path, params={"reason": "changed my mind"})
    assert cancelled.json()["status"] == "cancelled"
    assert (await a.recv("file-share-cancel"))["payload"]["reason"] == "changed my mind"
    accept_again = await one.request(bob, "POST", path + "/accept")
    assert accept_again.status_code == 409, accept_again.text


async def test_a_100_mb_file_relayed_across_instances_arrives_byte_for_byte_in_bounded_memory(
    deployment: Deployment, tmp_path: Path
) -> None:
    one, two = await deployment.start(2)
    source, target = tmp_path / "source.bin", tmp_path / "received.bin"
    sha = await asyncio.to_thread(write_random_file, source, BIG)
    total = BIG // CHUNK
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await across(one, two, room, alice, bob)
    tid = await offered(a, b, size=BIG, sha256=sha)
    queue_key = deployment.key("q", tid)
    redis = deployment.redis.client()
    idle = {"one": one.rss_bytes(), "two": two.rss_bytes()}
    peak = dict(idle)
    redis_idle = int(redis.info("memory")["used_memory"])
    redis_peak, longest_queue = redis_idle, 0
    pushes_before = pushes(redis)
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal redis_peak, longest_queue
        while not done.is_set():
            peak["one"] = max(peak["one"], one.rss_bytes())
            peak["two"] = max(peak["two"], two.rss_bytes())
            redis_peak = max(redis_peak, int(redis.info("memory")["used_memory"]))
            longest_queue = max(longest_queue, int(redis.llen(queue_key)))
            await asyncio.sleep(0.02)

    async def send() -> None:
        with source.open("rb") as f:
            for index in range(total):
                await a.send_raw(frame_of(make_chunk(tid, index, total, f.read(CHUNK))))

    watcher = one.spawn(watch())
    progress: list[dict[str, Any]] = []
    receiver = one.spawn(receive_file(b, target, tid, total, progress))
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(send(), receiver), 120)
    finally:
        done.set()
        await watcher
    elapsed = time.monotonic() - started

    assert await asyncio.to_thread(sha256_of, target) == sha
    for name in ("one", "two"):
        assert peak[name] < idle[name] + RSS_MARGIN, (
            f"instance {name}'s RSS rose from {idle[name] / MiB:.1f} to {peak[name] / MiB:.1f} "
            f"MiB while {BIG / MiB:.0f} MiB crossed in {elapsed:.1f} s"
        )
    # every frame crossed through Redis (one RPUSH each; the queue itself may always have
    # been empty when sampled, if instance two kept up), and the queue stayed bounded
    assert pushes(redis) - pushes_before >= total
    assert longest_queue <= QUEUE_FRAMES, f"queue between instances reached {longest_queue}"
    assert redis_peak - redis_idle < 16 * MiB, (
        f"Redis grew by {(redis_peak - redis_idle) / MiB:.1f} MiB relaying {BIG / MiB:.0f} MiB"
    )
    await b.send("file-share-complete", {"transfer_id": tid, "sha256": sha})
    assert (await a.recv("file-share-complete"))["payload"]["sha256"] == sha
    record = await two.transfer(room, bob, tid)
    assert (record["status"], record["bytes_transferred"]) == ("completed", BIG)
    finished = time.monotonic()
    while redis.exists(queue_key) or (one.data_dir / "relay" / tid).exists():
        assert time.monotonic() - finished < 1.0, "relay queue or staging left after completion"
        await asyncio.sleep(0.02)
    redis.close()


def pushes(redis: Any) -> int:
    """How many RPUSH calls the session's redis-server has run (the relay's pushes)."""
    return int(redis.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))


async def test_limits_hold_across_instances(deployment: Deployment) -> None:
    one, two = await deployment.start(
        2, ROOMDROP_MAX_TRANSFERS_PER_USER="1", ROOMDROP_MAX_TRANSFERS_PER_ROOM="2"
    )
    room, alice, bob, carol, dave, erin = fresh("room", "alice", "bob", "carol", "dave", "erin")
    a = await one.connect(room, alice)
    await two.connect(room, bob)
    await two.connect(room, carol)
    await one.connect(room, dave)
    await two.connect(room, erin)
    await a.offer(bob)
    await a.recv("file-share-offer")
    body = {"receiver_id": carol, "filename": "f.bin", "file_size": 10, "sha256": "0" * 64}
    path = f"/webrtc/rooms/{room}/file-transfer/offer"
    refused = await two.request(alice, "POST", path, json=body)
    assert refused.status_code == 429, refused.text
    assert refused.json() == {
        "code": "too-many-transfers",
        "detail": f"{alice} already has 1 transfers under way",
    }
    second = await two.request(carol, "POST", path, json={**body, "receiver_id": dave})
    assert second.status_code == 200, second.text
    third = await one.request(erin, "POST", path, json={**body, "receiver_id": erin + "x"})
    assert third.status_code == 403  # not in the room: checked before the limits
    full = await one.request(erin, "POST", path, json={**body, "receiver_id": erin})
    assert full.status_code == 422  # one's own receiver
    await two.connect(room, erin + "x")
    room_full = await one.request(erin, "POST", path, json={**body, "receiver_id": erin + "x"})
    assert room_full.status_code == 429, room_full.text
    assert room_full.json()["detail"] == f"room {room} already has 2 transfers under way"


async def test_the_rooms_relay_bandwidth_is_one_budget_for_every_instance(
    deployment: Deployment,
) -> None:
    rate = 2_000_000
    one, two = await deployment.start(2, ROOMDROP_ROOM_BANDWIDTH=str(rate))
    room, alice, bob, carol, dave = fresh("room", "alice", "bob", "carol", "dave")
    a, d = await one.connect(room, alice), await one.connect(room, dave)
    b, c = await two.connect(room, bob), await two.connect(room, carol)
    size = 400 * CHUNK
    first = await offered(a, b, size=size)
    second = await offered(c, d, size=size)
    data = os.urandom(CHUNK)
    received = 0
    window = 3.0

    async def send(sender: Client, tid: str) -> None:
        for index in range(size // CHUNK):
            await sender.send_raw(frame_of(make_chunk(tid, index, size // CHUNK, data)))

    async def receive(receiver: Client) -> None:
        nonlocal received
        while True:
            message = await receiver.ws.recv()
            if isinstance(message, bytes):
                received += len(decode_frame(message).data)

    tasks = [one.spawn(send(a, first)), one.spawn(send(c, second))]
    tasks += [one.spawn(receive(b)), one.spawn(receive(d))]
    started = time.monotonic()
    await asyncio.sleep(window)
    elapsed = time.monotonic() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in (a, b, c, d):  # they stopped reading: no closing handshake
        client.drop()
    allowed = rate * elapsed + rate + 2 * CHUNK  # the rate, one burst, chunks in flight
    assert received <= allowed, (
        f"{received / 1e6:.1f} MB relayed in {elapsed:.1f} s through two instances of a room "
        f"limited to {rate / 1e6:.0f} MB/s (at most {allowed / 1e6:.1f} MB)"
    )
    assert received >= 0.5 * rate * elapsed, f"only {received / 1e6:.2f} MB relayed"


async def test_records_survive_a_restart_of_every_instance_and_resume_when_both_are_back(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(2)
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await across(one, two, room, alice, bob)
    tid = await offered(a, b, filename="holiday.mov", size=5 * CHUNK)
    await a.send_raw(frame_of(make_chunk(tid, 0, 5, os.urandom(CHUNK))))
    await b.recv_frame()
    await b.send(
        "file-share-progress",
        {
            "transfer_id": tid,
            "chunks_sent": 1,
            "bytes_transferred": CHUNK,
            "progress_percent": 20.0,
            "status": "active",
        },
    )
    await a.recv("file-share-progress")
    for server in (one, two):  # SIGTERM: the active transfer is paused, not lost
        assert server.stop() is None
        server.stopped_by_test = True

    (three,) = await deployment.start(1)
    record = await three.transfer(room, alice, tid)
    assert record["status"] == "paused"
    assert (record["filename"], record["file_size"], record["chunks_sent"]) == (
        "holiday.mov",
        5 * CHUNK,
        1,
    )
    a = await three.connect(room, alice, room_state=False)
    state = await a.recv("room-state")
    assert [t["transfer_id"] for t in state["payload"]["transfers"]] == [tid]
    b = await three.connect(room, bob)
    assert (await a.recv("file-share-resume"))["payload"]["reason"] == "reconnected"
    assert (await b.recv("file-share-resume"))["payload"]["reason"] == "reconnected"
    assert (await three.transfer(room, bob, tid))["status"] == "active"


async def test_a_participant_of_a_killed_instance_carries_on_where_it_reconnects(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(2, ROOMDROP_INSTANCE_TIMEOUT="1")
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await across(one, two, room, alice, bob)
    tid = await offered(a, b, size=3 * CHUNK)
    one.kill()
    a = await two.connect(room, alice)  # at once, before anyone notices the kill
    data = os.urandom(CHUNK)
    await a.send_raw(frame_of(make_chunk(tid, 1, 3, data)))
    assert decode_frame(await b.recv_frame()).data == data
    await asyncio.sleep(2.5)  # the dead instance's heartbeat has expired: it is claimed
    await b.silent(0.5, ignore=("file-share-progress", "user-joined"))
    assert (await two.transfer(room, bob, tid))["status"] == "active"


async def test_the_participants_of_an_instance_that_vanished_are_taken_as_gone(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(
        2, ROOMDROP_INSTANCE_TIMEOUT="1", ROOMDROP_RECONNECT_GRACE="2"
    )
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await across(one, two, room, alice, bob)
    tid = await offered(a, b, size=3 * CHUNK)
    killed = time.monotonic()
    one.kill()
    assert (await b.recv("user-left", timeout=5))["payload"] == {"user_id": alice}
    noticed = time.monotonic() - killed
    pause = await b.recv("file-share-pause")
    assert pause["payload"]["reason"] == f"{alice} disconnected"
    cancel = await b.recv("file-share-cancel", timeout=5)
    assert cancel["payload"]["reason"] == f"sender {alice} did not come back"
    assert noticed < 3.5, f"the killed instance was noticed after {noticed:.1f} s"
    assert (await two.transfer(room, bob, tid))["status"] == "cancelled"


async def test_joining_again_on_another_instance_replaces_the_first_connection(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(2)
    room, alice, bob = fresh("room", "alice", "bob")
    first = await one.connect(room, alice)
    b = await one.connect(room, bob)
    await first.recv("user-joined")
    await two.connect(room, alice)
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(first.ws.recv(), 5)
    assert first.ws.close_code == 4409
    assert (await b.recv("user-joined"))["payload"] == {"user_id": alice, "key": public(alice)}
    await b.silent(0.5)  # alice never left: bob is told nothing more


async def test_a_pause_on_the_receivers_instance_stops_the_relay_on_the_senders(
    deployment: Deployment,
) -> None:
    one, two = await deployment.start(2)
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await across(one, two, room, alice, bob)
    total = 400
    tid = await offered(a, b, size=total * CHUNK)
    data = os.urandom(CHUNK)

    async def send() -> None:  # bob does not read: his socket, the queue between
        for index in range(total):  # instances, then alice's staging fill up
            await a.send_raw(frame_of(make_chunk(tid, index, total, data)))

    one.spawn(send())
    staging = one.data_dir / "relay" / tid
    deadline = time.monotonic() + 10
    while not staging.exists():
        assert time.monotonic() < deadline, "the sender's instance never staged a chunk"
        await asyncio.sleep(0.02)
    await b.send("file-share-pause", {"transfer_id": tid})
    await a.recv("file-share-pause")
    paused = time.monotonic()
    redis = deployment.redis.client()
    queue_key = deployment.key("q", tid)
    while staging.exists() or redis.exists(queue_key):
        held = [
            n for n, h in (("staging", staging.exists()), ("queue", redis.exists(queue_key))) if h
        ]
        # promptly, not at the idle timeout (30 s): 5 s leaves room for two busy workers
        assert time.monotonic() - paused < 5.0, f"relay still held 5 s after the pause: {held}"
        await asyncio.sleep(0.02)
    redis.close()
    # the frame the staging held back is refused as relay-closed, the later ones as not active
    codes = [(await a.recv_refusal())["payload"]["code"]]
    while codes[-1] != "transfer-not-active":
        codes.append((await a.recv_refusal())["payload"]["code"])
    assert set(codes) <= {"relay-closed", "transfer-not-active"}, codes
    a.drop()  # its refusals pile up unread: no closing handshake
    b.drop()


async def test_without_redis_requests_are_refused_with_503_and_work_again_when_it_is_back(
    deployments: Callable[[RedisServer | None], Deployment], tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        one, two = await deployments(redis).start(2)
        room, alice, bob = fresh("room", "alice", "bob")
        assert (await one.request(alice, "GET", "/webrtc/file-transfers")).status_code == 200
        redis.stop()
        refused = await one.request(alice, "GET", "/webrtc/file-transfers")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "backend-unavailable"
        ws = await one.open_ws(room, one.token(alice))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1013
        assert (await one.request(None, "GET", "/healthz")).status_code == 200
        await asyncio.sleep(1.5)  # the sweeper meets the outage too: a warning, not an error

        # Redis back (empty: it kept nothing): both instances serve again, and messages
        # cross between them again (their subscriptions were renewed)
        redis = await asyncio.to_thread(start_redis, tmp_path / "redis", redis.port)
        for server in (one, two):
            deadline = time.monotonic() + 10
            while (await server.request(alice, "GET", "/webrtc/file-transfers")).status_code != 200:
                assert time.monotonic() < deadline, "an instance never recovered its Redis"
                await asyncio.sleep(0.2)
        a, b = await across(one, two, room, alice, bob)
        await b.send("offer", {"target_id": alice, "type": "offer", "sdp": "v=0 after"})
        assert (await a.recv("offer"))["payload"]["sdp"] == "v=0 after"
        assert '"level": "warning"' in one.log() and "out of reach" in one.log()
    finally:
        redis.stop()


async def test_what_an_instance_missed_while_its_subscription_was_broken_reaches_its_participants(
    deployment: Deployment,
) -> None:
    """bob's instance is frozen (SIGSTOP) while Redis drops its subscription, and alice
    cancels their transfer on hers meanwhile: the file-share-cancel published for bob
    reaches no one. Once bob's instance runs again it subscribes again and sends bob a
    fresh room-state, on the connection he has, in which the transfer is cancelled."""
    one, two = await deployment.start(2)
    room, alice, bob = fresh("room", "alice", "bob")
    a, b = await across(one, two, room, alice, bob)
    tid = await offered(a, b)
    async with frozen_unsubscribed(deployment.redis, two.process.pid) as published:
        # alice's instance, running, subscribes again at once and catches her up
        assert [t["status"] for t in (await a.recv("room-state"))["payload"]["transfers"]] == [
            "active"
        ]
        path = f"/webrtc/rooms/{room}/file-transfer/{tid}"
        cancelled = await one.request(alice, "DELETE", path, params={"reason": "while away"})
        assert cancelled.json()["status"] == "cancelled"
        assert (await a.recv("file-share-cancel"))["payload"]["reason"] == "while away"
        await published("file-share-cancel")
    state = (await b.recv("room-state"))["payload"]
    assert sorted(state["participants"]) == sorted([alice, bob])
    [record] = state["transfers"]
    assert (record["transfer_id"], record["status"], record["error"]) == (
        tid,
        "cancelled",
        "while away",
    )
    assert not any(isinstance(m, str) and "file-share-cancel" in m for m in b.skipped), (
        "the cancel was published while no one listened: it cannot have arrived"
    )
    # and messages cross between the instances again
    await b.send("offer", {"target_id": alice, "type": "offer", "sdp": "v=0 again"})
    assert (await a.recv("offer"))["payload"]["sdp"] == "v=0 again"


async def test_after_redis_restarts_empty_the_open_connections_are_in_the_room_again(
    deployments: Callable[[RedisServer | None], Deployment], tmp_path: Path
) -> None:
    """Redis restarts with nothing (no persistence): the rooms' membership is gone, but
    alice's and bob's sockets, on two instances, stayed open. Each instance, subscribed
    again, puts its participants back in their room and sends them a fresh room-state,
    so what they do on those sockets works as before: an offer reaches the other."""
    redis = start_redis(tmp_path / "redis")
    try:
        one, two = await deployments(redis).start(2)
        room, alice, bob = fresh("room", "alice", "bob")
        a, b = await across(one, two, room, alice, bob)
        redis.stop()
        redis = await asyncio.to_thread(start_redis, tmp_path / "redis", redis.port)
        for ws, other in ((a, bob), (b, alice)):
            state = (await ws.recv("room-state", timeout=15))["payload"]
            assert state["transfers"] == []  # the records went with Redis
            if other not in state["participants"]:  # put back after this state was taken
                assert (await ws.recv("user-joined"))["payload"]["user_id"] == other
        tid = await a.offer(bob)
        offer = await b.recv("file-share-offer")
        assert offer["payload"]["transfer_id"] == tid
        await b.send("file-share-accept", {"transfer_id": tid})
        assert (await a.recv("file-share-accept"))["payload"]["transfer_id"] == tid
    finally:
        redis.stop()
