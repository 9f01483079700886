"""The room page in real headless Chromium: files between two pages peer to peer and
through the relay, between a page and the CLI both ways, pause/resume and reload from the
page, a rejected offer, and the layout mid-transfer (desktop and phone-sized); pages on
two instances sharing Redis, and what a page's instance missed while its subscription was
broken (a cancel, an accept, a pause and a resume) caught up from a second room-state.

Every file that arrives is saved through the page's ``transfer-save`` button (a real
download) and compared with the original by sha256. Browser-to-browser P2P needs the
``veth`` fixture (two Chromium peers gather no ICE candidates when the namespace has
only ``lo``); without it, P2P is impossible and the relay must carry the file.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from pagetools import PHONE, Harness, RoomPage, assert_in_viewport, interfaces, page_key

from client.clitools import MB, sha256_of, write_random
from redistools import RedisServer, frozen_unsubscribed
from roomdrop.protocol.frames import ZERO_CHECKSUM, decode_frame
from server.conftest import Server, names
from server.e2etools import offer_fields, seal

pytestmark = pytest.mark.browser


async def receive_file(
    harness: Harness,
    a: RoomPage,
    b: RoomPage,
    path: Path,
    timeout: float = 120.0,
) -> tuple[str, Path]:
    """``a`` sends ``path`` to ``b``, ``b`` accepts: the transfer id and where ``b``'s
    download of it was saved, after both pages show it completed."""
    tid = await a.send(b.user, path)
    await b.accept()
    await b.wait_status(tid, "completed", timeout)
    await a.wait_status(tid, "completed", 30)
    saved = await b.save(tid, harness.tmp_path / "saved" / path.name, filename=path.name)
    return tid, saved


async def relayed_bytes(server: Server) -> float:
    """Chunk bytes ``server`` relayed (its Prometheus counter)."""
    text = (await server.request(None, "GET", "/metrics")).text
    match = re.search(r"^roomdrop_relayed_bytes_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


async def send_and_accept(a: RoomPage, b: RoomPage, path: Path) -> str:
    tid = await a.send(b.user, path)
    await b.accept()
    return tid


@pytest.mark.timeout(240)
async def test_100_mb_peer_to_peer_between_two_pages(
    veth: None, rd: Harness, tmp_path: Path
) -> None:
    size = 100 * MB
    path = tmp_path / "hundred.bin"
    digest = write_random(path, size)
    a, b = await rd.pair()
    tid = await send_and_accept(a, b, path)

    # Mid-transfer: both pages show the transfer, its bar between 0 and 100, on screen.
    value = await b.wait_progress(tid, 5, timeout=60)
    for page in (a, b):
        await rd.shot(page, "mid-transfer")
    assert 0 < value < 100, value
    assert 0 < await b.progress(tid) < 100 or await b.status(tid) == "completed"
    for page in (a, b):
        await assert_in_viewport(page, tid)

    await b.wait_status(tid, "completed", 120)
    await a.wait_status(tid, "completed", 30)
    await rd.shot(b, "completed")
    for page in (a, b):
        assert await page.transport(tid) == "p2p", await page.describe()
    received = await b.transfer_state(tid)
    rd.note(f"receiver {received}; sender {await a.transfer_state(tid)}")
    assert received["bytes_via"]["p2p"] >= size, received
    assert received["bytes_via"]["relay"] == 0, received
    assert received["sha256"] == digest, received

    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert saved.stat().st_size == size
    assert sha256_of(saved) == digest


@pytest.mark.timeout(240)
async def test_the_relay_carries_the_file_when_p2p_is_blocked(rd: Harness, tmp_path: Path) -> None:
    # No veth pair: two Chromium peers gather no ICE candidates, so no data channel can
    # open and the page must fall back to the server's relay.
    assert interfaces() == {"lo"}
    size = 100 * MB
    path = tmp_path / "relayed.bin"
    digest = write_random(path, size)
    a, b = await rd.pair()
    tid, saved = await receive_file(rd, a, b, path, timeout=150)
    await rd.shot(b, "completed")
    for page in (a, b):
        assert await page.transport(tid) == "relay", await page.describe()
    received = await b.transfer_state(tid)
    rd.note(f"receiver {received}; sender {await a.transfer_state(tid)}")
    assert received["bytes_via"]["relay"] >= size, received
    assert received["bytes_via"]["p2p"] == 0, received
    sent = await a.transfer_state(tid)
    assert sent["bytes_via"]["relay"] >= size, sent
    assert saved.stat().st_size == size
    assert sha256_of(saved) == digest
    # the fallback says how long the attempt took (it said "within 5 s" whatever it took)
    said = [m for m in await a.messages() if "no peer-to-peer connection" in m]
    pattern = rf"no peer-to-peer connection to {re.escape(b.user)} after (\d+\.\d) s; "
    found = [re.search(pattern, m) for m in said]
    assert said and all(found), said
    assert all(float(f.group(1)) >= 5.0 for f in found if f), said


@pytest.mark.timeout(240)
async def test_pages_on_two_instances_sharing_redis_send_through_the_relay(
    rd_instances: Harness, tmp_path: Path
) -> None:
    # alice's page comes from the first instance, bob's from the second (as a load
    # balancer would spread them); with no veth no data channel opens, so every chunk
    # goes alice's page -> instance 1 -> Redis -> instance 2 -> bob's page.
    rd = rd_instances
    assert interfaces() == {"lo"}
    first, second = rd.servers
    size = 30 * MB
    path = tmp_path / "across.bin"
    digest = write_random(path, size)
    a, b = await rd.pair(servers=(first, second))
    assert (a.server, b.server) == (first, second)
    tid, saved = await receive_file(rd, a, b, path, timeout=150)
    for page in (a, b):
        assert await page.transport(tid) == "relay", await page.describe()
    received = await b.transfer_state(tid)
    rd.note(f"receiver {received}; sender {await a.transfer_state(tid)}")
    assert received["bytes_via"]["relay"] >= size, received
    assert saved.stat().st_size == size
    assert sha256_of(saved) == digest
    relayed = {server.port: await relayed_bytes(server) for server in rd.servers}
    assert relayed[first.port] >= size, relayed  # the sender's instance carried it
    assert relayed[second.port] == 0, relayed  # and handed it on through Redis


@pytest.mark.timeout(180)
async def test_a_page_learns_of_a_cancel_its_instance_missed(
    rd_instances: Harness, tmp_path: Path
) -> None:
    # bob's instance is frozen while Redis drops its subscription and alice cancels her
    # offer through hers: the file-share-cancel for bob reaches no one. Running again,
    # his instance subscribes again and sends his page a second room-state, from which
    # the page shows the offer cancelled (protocol.md §11.11).
    rd = rd_instances
    first, second = rd.servers
    path = tmp_path / "offer.bin"
    write_random(path, MB)
    a, b = await rd.pair(servers=(first, second))
    tid = await a.send(b.user, path)
    await b.wait_status(tid, "pending", 15)
    redis: RedisServer = rd.request.getfixturevalue("redis_server")
    async with frozen_unsubscribed(redis, second.process.pid) as published:
        cancelled = await first.request(
            a.user,
            "DELETE",
            f"/webrtc/rooms/{a.room}/file-transfer/{tid}",
            params={"reason": "wrong file"},
        )
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        await published("file-share-cancel")
    await a.wait_status(tid, "cancelled", 15)
    await b.wait_status(tid, "cancelled", 15)
    await rd.shot(b, "cancel-caught-up")
    shown = await b.messages()
    assert not any("reconnected" in m for m in shown), shown


@pytest.mark.timeout(180)
async def test_a_page_starts_sending_on_an_accept_its_instance_missed(
    rd_instances: Harness, tmp_path: Path
) -> None:
    # alice's instance is frozen while Redis drops its subscription and bob (a bare
    # WebSocket client on the other instance) accepts her offer: the file-share-accept
    # for alice reaches no one. From the second room-state, where the transfer is active,
    # her page starts sending (through the relay: bob answers no WebRTC offer).
    rd = rd_instances
    first, second = rd.servers
    path = tmp_path / "accepted.bin"
    write_random(path, MB)
    (room,) = names("room")
    a = await rd.guest("alice", room, server=first)
    bob = await second.connect(room, "bob-" + room)
    await a.sees(bob.user)
    tid = await a.send(bob.user, path)
    assert (await bob.recv("file-share-offer", timeout=15))["payload"]["transfer_id"] == tid
    redis: RedisServer = rd.request.getfixturevalue("redis_server")
    async with frozen_unsubscribed(redis, first.process.pid) as published:
        await bob.send("file-share-accept", {"transfer_id": tid})
        assert (await bob.recv("file-share-accept"))["payload"]["transfer_id"] == tid
        await published("file-share-accept")
    frame = decode_frame(await bob.recv_frame(timeout=30))
    assert frame.transfer_id == tid
    assert frame.sealed and frame.checksum == ZERO_CHECKSUM, frame  # end to end
    await bob.send("file-share-cancel", {"transfer_id": tid, "reason": "seen enough"})
    await a.wait_status(tid, "cancelled", 15)
    await bob.close()


@pytest.mark.timeout(180)
async def test_a_page_catches_up_with_a_pause_and_a_resume_its_instance_missed(
    rd_instances: Harness, tmp_path: Path
) -> None:
    # bob's page receives from alice (a bare WebSocket client on the other instance,
    # which sends no chunk yet). Twice bob's instance is frozen while Redis drops its
    # subscription: alice pauses the first time, resumes the second, and neither message
    # reaches bob's page; each time the second room-state brings it to the transfer's
    # status (active again, it asks for what it lacks, as after any resume).
    rd = rd_instances
    first, second = rd.servers
    (room,) = names("room")
    alice = await first.connect(room, "alice-" + room)
    b = await rd.guest("bob", room, server=second)
    await alice.recv("user-joined")
    # three chunks, their content key sealed to the key bob's page published
    offer = seal(alice.user, offer_fields(b.user), receiver_key=await page_key(b))
    await alice.send("file-share-offer", offer)
    tid = offer["transfer_id"]
    await b.accept()
    await alice.recv("file-share-accept")
    await b.wait_status(tid, "active", 15)

    async def behind_bobs_back(kind: str) -> None:
        redis: RedisServer = rd.request.getfixturevalue("redis_server")
        async with frozen_unsubscribed(redis, second.process.pid) as published:
            await alice.send(kind, {"transfer_id": tid, "reason": "behind bob's back"})
            await alice.recv(kind)
            await published(kind)

    await behind_bobs_back("file-share-pause")
    await b.wait_status(tid, "paused", 15)
    await behind_bobs_back("file-share-resume")
    await b.wait_status(tid, "active", 15)
    shown = await b.messages()
    assert not any("paused by" in m or "resumed by" in m for m in shown), shown


@pytest.mark.timeout(180)
async def test_a_page_sends_to_the_cli(veth: None, rd: Harness, tmp_path: Path) -> None:
    path = tmp_path / "to-cli.bin"
    digest = write_random(path, 30 * MB)
    room, bob = names("room", "bob")
    a = await rd.guest("alice", room)
    cli = rd.room(room, a.user, bob)
    out = tmp_path / "inbox"
    receive = cli.receive(out)  # --yes --count 1 --json, ICE on 127.0.0.1
    await cli.joined(receive)
    await a.sees(bob)
    tid = await a.send(bob, path)
    assert await receive.wait(120) == 0, receive.report()
    result = receive.result()
    rd.note(f"cli receive result {result}; page {await a.transfer_state(tid)}")
    assert result["status"] == "completed", result
    assert result["sha256"] == digest, result
    assert sha256_of(out / path.name) == digest
    await a.wait_status(tid, "completed", 30)
    await rd.shot(a, "sent-to-cli")


@pytest.mark.timeout(180)
async def test_the_cli_sends_to_a_page(veth: None, rd: Harness, tmp_path: Path) -> None:
    path = tmp_path / "from-cli.bin"
    digest = write_random(path, 30 * MB)
    room, alice = names("room", "alice")
    b = await rd.guest("bob", room)
    cli = rd.room(room, alice, b.user)
    send = cli.send(path)  # waits for b.user, who is here already
    await cli.joined(send)
    await b.sees(alice)
    await b.accept()
    (tid,) = await b.transfer_ids()
    await b.wait_status(tid, "completed", 120)
    assert await send.wait(60) == 0, send.report()
    rd.note(f"cli send result {send.result()}; page {await b.transfer_state(tid)}")
    assert send.result()["status"] == "completed", send.result()
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest
    await rd.shot(b, "received-from-cli")


@pytest.mark.timeout(180)
async def test_pause_and_resume_from_the_page(veth: None, rd: Harness, tmp_path: Path) -> None:
    size = 50 * MB
    path = tmp_path / "paused.bin"
    digest = write_random(path, size)
    a, b = await rd.pair()
    tid = await send_and_accept(a, b, path)
    await b.wait_progress(tid, 10)

    await a.transfer(tid).get_by_test_id("transfer-pause").click()  # the sender pauses
    await a.wait_status(tid, "paused", 10)
    await b.wait_status(tid, "paused", 10)
    await asyncio.sleep(1.0)  # chunks in flight when it paused may still land
    held = await b.progress(tid)
    await rd.shot(b, "paused")
    await asyncio.sleep(2.5)
    assert await b.progress(tid) == held, "progress moved while paused"
    assert await b.status(tid) == "paused"
    assert 0 < held < 100, held
    rd.note(f"held at {held} % while paused")

    await b.transfer(tid).get_by_test_id("transfer-resume").click()  # the receiver resumes
    await b.wait_status(tid, "completed", 120)
    await a.wait_status(tid, "completed", 30)
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest


@pytest.mark.timeout(240)
async def test_the_receiving_page_reloads_mid_transfer_and_resumes(
    veth: None, rd: Harness, tmp_path: Path
) -> None:
    size = 60 * MB
    path = tmp_path / "reloaded.bin"
    digest = write_random(path, size)
    room, bob = names("room", "bob")
    a = await rd.guest("alice", room)
    b = await rd.with_token("bob", room, bob)  # a fixed user id, to come back as
    await a.sees(bob)
    await b.sees(a.user)
    tid = await send_and_accept(a, b, path)
    await b.wait_progress(tid, 30)
    await rd.shot(b, "before-reload")

    await b.page.reload()
    await b.join(room, token=rd.server.token(bob, ttl=3600), navigate=False)
    assert b.user == bob
    await b.sees(a.user)
    await b.wait_status(tid, "completed", 150)
    await a.wait_status(tid, "completed", 30)
    await rd.shot(b, "after-reload-completed")
    received = await b.transfer_state(tid)
    rd.note(f"receiver after reload {received}")
    assert received["resumed_bytes"] > 0, received
    assert received["resumed_bytes"] < size, received
    moved = received["bytes_via"]["p2p"] + received["bytes_via"]["relay"]
    assert received["resumed_bytes"] + moved >= size, received
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest


async def test_a_rejected_offer_is_shown_to_the_sender(rd: Harness, tmp_path: Path) -> None:
    path = tmp_path / "unwanted.bin"
    write_random(path, 1 * MB)
    a, b = await rd.pair()
    tid = await a.send(b.user, path)
    await b.reject()
    await a.wait_status(tid, "rejected", 15)
    await asyncio.sleep(0.5)
    await rd.shot(a, "rejected")
    messages = await a.messages()
    rd.note(f"sender's messages: {messages}")
    assert any("reject" in m.lower() or "declin" in m.lower() for m in messages), (
        f"the sender's page shows no message about the rejection: {await a.describe()}"
    )
    assert await b.by("offer").count() == 0, await b.describe()


@pytest.mark.timeout(180)
async def test_the_layout_shows_a_transfer_at_phone_size(
    veth: None, rd: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "phone.bin"
    digest = write_random(path, 60 * MB)
    (room,) = names("room")
    a = await rd.guest("alice", room, viewport=PHONE)
    b = await rd.guest("bob", room, viewport=PHONE)
    await a.sees(b.user)
    await b.sees(a.user)
    tid = await send_and_accept(a, b, path)
    value = await b.wait_progress(tid, 3)
    for page in (a, b):
        await rd.shot(page, "phone-mid-transfer")
    assert 0 < value < 100, value
    for page in (a, b):
        assert page.page.viewport_size == PHONE
        await assert_in_viewport(page, tid)
        width = await page.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{page.label}: the page is {width} px wide on a phone"
    await b.wait_status(tid, "completed", 120)
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest


@pytest.mark.timeout(240)
@pytest.mark.parametrize("held_then", ["active", "paused"])
async def test_a_page_that_completes_while_its_instance_is_down_announces_it_on_return(
    veth: None, rd_instances: Harness, tmp_path: Path, held_then: str
) -> None:
    # alice's page (first instance) sends to bob's (second) peer to peer. Mid-transfer
    # bob's instance is killed: the data channel carries on without it, so bob's page
    # verifies the whole file while its WebSocket is down and cannot send its
    # file-share-complete. Once the instance runs again on its port, the page reconnects
    # and announces the completion: the server's record and alice's page end completed,
    # with the file's sha256. "active": the instance is back at once, the record is still
    # active and the page's catch-up announces it. "paused": it is back only once the
    # first instance took it for gone (ROOMDROP_INSTANCE_TIMEOUT) and paused the transfer
    # for bob's disconnect; the page announces it on the resume that follows its return.
    rd = rd_instances
    first, second = rd.servers
    size = 40 * MB
    path = tmp_path / "completed-offline.bin"
    digest = write_random(path, size)
    a, b = await rd.pair(servers=(first, second))
    tid = await send_and_accept(a, b, path)
    await b.wait_progress(tid, 20, timeout=60)
    assert await a.transport(tid) == "p2p", await a.describe()
    received = await b.transfer_state(tid)
    assert received["bytes_via"]["relay"] == 0, received

    await asyncio.to_thread(second.kill)
    await b.wait_status(tid, "completed", 60)  # verified here, the server away
    offline = await b.page.evaluate(
        "() => [window.roomdrop._state.connected, window.roomdrop._state.connections]"
    )
    rd.note(f"bob's page completed with (connected, connections) = {offline}")
    assert offline == [False, 1], offline
    held = await first.transfer(a.room, a.user, tid)
    assert held["status"] == "active", held  # nobody told the server yet
    if held_then == "paused":
        await a.wait_status(tid, "paused", 30)  # bob's instance is taken for gone
        held = await first.transfer(a.room, a.user, tid)
        assert held["status"] == "paused", held

    second = await rd.restart(second)
    await a.wait_status(tid, "completed", 60)
    held = await first.transfer(a.room, a.user, tid)
    rd.note(f"the server's record after bob's page came back: {held}")
    assert held["status"] == "completed", held
    assert held["sha256"] == digest, held
    assert (await second.transfer(b.room, b.user, tid))["status"] == "completed"
    assert await b.page.evaluate("() => window.roomdrop._state.connections") == 2
    sent = await a.transfer_state(tid)
    assert sent["status"] == "completed" and sent["sha256"] == digest, sent
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest
