"""``roomdrop send --store``: a file kept on the server for someone who is not online,
end-to-end encrypted, and delivered when they join (then deleted)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from clitools import MB, Room, sha256_of, write_random

from clamdtools import EICAR, EICAR_SIGNATURE, Clamd

pytestmark = pytest.mark.timeout(240)


async def seen_then_gone(room: Room, tmp_path: Path) -> None:
    """Bob joins once (publishing his device key) and leaves."""
    bob = room.receive(tmp_path / "inbox", count=None)
    await room.joined(bob)
    bob.signal(signal.SIGINT)
    await bob.wait(30)


async def restarted(start: Any, server: Any, **env: str) -> Any:
    """``server`` stopped (SIGTERM: a clean shutdown) and started again where it stood."""
    server.stopped_by_test = True
    server.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(server.process.wait, 30)
    return await start(again=server, **env)


def api(server: Any, user: str, method: str, path: str, **params: str) -> httpx.Response:
    """The server's REST API as ``user``."""
    url = f"{server.url}/webrtc{path}"
    return httpx.request(method, url, params=params, headers=server.headers(user), timeout=10)


def objects(server: Any, *, everything: bool = False) -> list[Path]:
    """The kept files in the server's default store (DATA_DIR/store); ``everything``: every
    file there (their descriptions, ``.offer``, and uploads under way too)."""
    root = server.data_dir / "store"
    found = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    if everything:
        return found
    return [p for p in found if p.parent.name == "objects" and p.suffix != ".offer"]


async def test_a_file_kept_for_someone_offline_reaches_them_when_they_join(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    digest = write_random(source, 12 * MB)

    sender = room.send(source, extra=["--store"])
    assert await sender.wait(120) == 0, sender.report()
    kept = sender.result()
    assert kept["status"] == "stored"
    assert kept["transport"] == "relay"
    assert kept["bytes_via"]["relay"] == 12 * MB
    held = objects(server)
    assert held, "nothing in the store"
    assert sum(p.stat().st_size for p in held) > 12 * MB  # the frames: headers and tags
    with open(held[0], "rb") as f:  # ciphertext: no run of the plaintext in it
        head = f.read(1 << 20)
    assert source.read_bytes()[4096:4160] not in head
    records = api(server, room.alice, "GET", "/file-transfers", status="stored")
    assert [r["transfer_id"] for r in records.json()] == [kept["transfer_id"]]

    receiver = room.receive(tmp_path / "inbox")
    assert await receiver.wait(120) == 0, receiver.report()
    notes = [n["message"] for n in receiver.events("note")]
    assert any(n.startswith("kept for you on the server") and "kept.bin" in n for n in notes)
    got = receiver.result()
    assert got["status"] == "completed"
    assert got["transfer_id"] == kept["transfer_id"]
    assert sha256_of(tmp_path / "inbox" / "kept.bin") == digest
    assert objects(server, everything=True) == []  # delivered: deleted
    tid = kept["transfer_id"]
    done = api(server, room.bob, "GET", f"/rooms/{room.name}/file-transfer/{tid}/progress")
    assert done.json()["status"] == "completed", done.text


async def test_a_file_cannot_be_kept_for_someone_the_server_has_never_seen(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "kept.bin"
    write_random(source, 1 * MB)
    sender = room.send(source, extra=["--store"])
    assert await sender.wait(60) == 1, sender.report()
    result = sender.result()
    assert result["status"] == "failed"
    assert result["error_code"] == "unknown-receiver", result
    assert room.bob in result["error"]
    assert objects(server, everything=True) == []


async def test_a_kept_file_the_sender_withdraws_is_deleted_and_never_offered(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    write_random(source, 6 * MB)
    sender = room.send(source, extra=["--store"])
    assert await sender.wait(120) == 0, sender.report()
    tid = sender.result()["transfer_id"]
    assert objects(server)

    listed = api(server, room.alice, "GET", "/file-transfers", status="stored")
    assert [t["transfer_id"] for t in listed.json()] == [tid]
    for user, whose in ((room.alice, f"for {room.bob}"), (room.bob, f"from {room.alice}, for you")):
        kept = room.kept(user)  # both parties see it, each from their side
        assert await kept.wait(30) == 0, kept.report()
        [line] = [json.loads(text) for text in kept.stdout.read_text().splitlines()]
        assert (line["event"], line["transfer_id"], line["status"]) == ("kept", tid, "stored")
        plain = room._run(user, ["kept"], None, json=False)
        assert await plain.wait(30) == 0, plain.report()
        assert whose in plain.stdout.read_text() and tid in plain.stdout.read_text()

    wrong = room.kept(room.alice, "--withdraw", "0000")
    assert await wrong.wait(30) == 1, wrong.report()
    assert "not-found: no file kept on the server with id '0000'" in wrong.err(), wrong.report()
    assert objects(server), "a refused withdrawal deletes nothing"

    withdrawn = room.kept(room.alice, "--withdraw", tid[:8])  # the start of its id
    assert await withdrawn.wait(30) == 0, withdrawn.report()
    [done] = withdrawn.events("withdrawn")
    assert (done["transfer_id"], done["status"]) == (tid, "cancelled")
    assert done["error"] == "withdrawn by its sender"
    assert objects(server, everything=True) == []
    again = room.kept(room.alice, "--withdraw", tid)
    assert await again.wait(30) == 1, again.report()
    empty = room._run(room.bob, ["kept"], None, json=False)
    assert await empty.wait(30) == 0, empty.report()
    assert "nothing kept on the server for you or by you" in empty.stdout.read_text()

    receiver = room.receive(tmp_path / "inbox", count=None)
    await room.joined(receiver)
    await asyncio.sleep(1.5)  # a kept file is offered right after the join (the first test)
    receiver.signal(signal.SIGINT)
    await receiver.wait(30)
    # with --yes an offer is taken without an "offer" line: what would show it is a
    # "kept for you" note, a progress line or a result
    said = receiver.lines()
    assert not any(line.get("event") in ("progress", "result") for line in said), said
    assert not any("kept for you" in line.get("message", "") for line in said), said
    assert not (tmp_path / "inbox" / "kept.bin").exists()


async def test_the_stored_bytes_quota_refuses_a_file_that_would_pass_it(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_STORE_QUOTA_USER=str(3 * MB))
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    first, second = tmp_path / "one.bin", tmp_path / "two.bin"
    write_random(first, 2 * MB)
    write_random(second, 2 * MB)
    sender = room.send(first, extra=["--store"])
    assert await sender.wait(60) == 0, sender.report()
    assert sender.result()["status"] == "stored"

    sender = room.send(second, extra=["--store"])
    assert await sender.wait(60) == 1, sender.report()
    result = sender.result()
    assert result["error_code"] == "store-quota-exceeded", result
    assert "ROOMDROP_STORE_QUOTA_USER" in result["error"] and f"{3 * MB:,}-byte" in result["error"]
    assert len(objects(server)) == 1  # the first is still kept


async def test_a_kept_file_the_receiver_rejects_or_that_expires_is_deleted(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_STORE_TTL="4")
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    write_random(source, 1 * MB)
    tids = []
    for _ in range(2):
        sender = room.send(source, extra=["--store"])
        assert await sender.wait(60) == 0, sender.report()
        tids.append(sender.result()["transfer_id"])
    assert len(objects(server)) == 2

    answer = api(server, room.bob, "POST", f"/rooms/{room.name}/file-transfer/{tids[0]}/reject")
    assert answer.status_code == 200 and answer.json()["status"] == "rejected", answer.text
    assert len(objects(server)) == 1
    for _ in range(100):  # the other one outlives ROOMDROP_STORE_TTL
        if not objects(server):
            break
        await asyncio.sleep(0.1)
    assert objects(server, everything=True) == []
    path = f"/rooms/{room.name}/file-transfer/{tids[1]}/progress"
    expired = api(server, room.alice, "GET", path).json()
    assert (expired["status"], expired["error_code"]) == ("failed", "expired"), expired


async def test_a_kept_file_is_scanned_when_it_is_received_and_never_placed_if_infected(
    start: Any, room_on: Any, tmp_path: Path, clamd: Clamd
) -> None:
    server = await start()
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "eicar.com"
    source.write_bytes(EICAR)
    sender = room.send(source, extra=["--store"])
    assert await sender.wait(60) == 0, sender.report()
    assert sender.result()["status"] == "stored"

    inbox = tmp_path / "inbox"
    receiver = room.receive(inbox, extra=["--scan", clamd.unix_url])
    assert await receiver.wait(60) == 1, receiver.report()
    result = receiver.result()
    assert (result["status"], result["error_code"]) == ("failed", "infected")
    assert EICAR_SIGNATURE in result["error"]
    assert not (inbox / "eicar.com").exists()
    record = await server.transfer(room.name, room.alice, result["transfer_id"])
    assert (record["status"], record["error_code"]) == ("failed", "infected")
    assert objects(server, everything=True) == []  # failed: nothing kept any more


async def test_a_kept_file_outlives_a_restart_of_a_server_without_redis(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start()
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    digest = write_random(source, 7 * MB)
    sender = room.send(source, extra=["--store"])
    assert await sender.wait(60) == 0, sender.report()
    tid = sender.result()["transfer_id"]
    again = await restarted(start, server)  # its records were in its memory only

    receiver = room.receive(tmp_path / "inbox")
    assert await receiver.wait(60) == 0, receiver.report()
    assert receiver.result()["transfer_id"] == tid
    assert sha256_of(tmp_path / "inbox" / "kept.bin") == digest
    assert objects(again, everything=True) == []  # delivered: the file and its description deleted


async def test_a_receiver_killed_during_a_delivery_from_the_store_resumes_it(
    start: Any, room_on: Any, tmp_path: Path
) -> None:
    server = await start(ROOMDROP_ROOM_BANDWIDTH="10000000")  # 4 s for the file
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    size = 40 * MB
    digest = write_random(source, size)
    sender = room.send(source, extra=["--store"])
    assert await sender.wait(60) == 0, sender.report()

    receiver = room.receive(tmp_path / "inbox")
    await receiver.progress_at_least(30)
    receiver.kill()
    await receiver.wait(10)
    again = room.receive(tmp_path / "inbox")
    assert await again.wait(60) == 0, again.report()
    result = again.result()
    assert result["status"] == "completed"
    assert result["resumed_bytes"] >= size * 0.25, result  # taken up from the part file
    assert sha256_of(tmp_path / "inbox" / "kept.bin") == digest
    assert objects(server, everything=True) == []
