"""Stored delivery on the room page (server/keeping.py, static/keeping.js): a file kept on
the server for someone who was in the room lately and is away, delivered when they join.

* A page keeps a file for a CLI receiver who was seen and left: the page lists them as
  away (last seen), "Keep a file for NAME…" keeps it (through the relay only: the server
  is the other end), the transfer ends ``stored``; a second file past the stored-bytes
  quota is refused with the server's message; the receiver joins later and gets the
  first byte-identical.
* The CLI (``send --store``) keeps a file for a page user who left; the page joins again
  later, lists it as kept for it, accepts the offer (its sender is gone: the sender key is
  checked against the one the room last saw) and saves it (same sha256).
* Page to page: a page that left (Leave room) and joins again, without a reload, gets
  what the other page kept for it; the sender's row then says it was delivered.
* Withdrawing (static/kept.js): files picked with nobody here wait in the chooser, which
  offers to keep them for the one away; the row of the kept file has Withdraw, which has
  the server delete it: its list of stored files is empty, the transfer ``cancelled``, the
  object gone, and the CLI receiver joining afterwards is offered nothing.
* A page that leaves and joins again keeps the row of the file it kept; one reloaded lists
  it from room-state, with Withdraw; the receiver's page joining after the withdrawal is
  offered nothing and told of nothing kept for it.

No veth pair: nothing here may take a data channel.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import pytest
from pagetools import Harness, RoomPage, interfaces
from playwright.async_api import Locator, expect

from client.clitools import MB, sha256_of, write_random
from server.conftest import names

pytestmark = pytest.mark.browser

QUOTA = 20 * MB


@pytest.fixture
def rd_env() -> dict[str, str]:
    """A stored-bytes quota per sender that one 12 MB file fits and two do not."""
    return {"ROOMDROP_STORE_QUOTA_USER": str(QUOTA)}


def away(page: RoomPage, user: str) -> Locator:
    """``user``'s entry in the page's list of those seen lately who are away."""
    return page.page.locator("#participants li.away").filter(
        has=page.page.locator(f'[data-testid="participant-away"][data-user="{user}"]')
    )


async def keep(page: RoomPage, user: str, path: Path) -> str:
    """Click "Keep a file for USER…" on the away ``user`` and pick ``path`` in the file
    chooser it opens; the id of the new transfer."""
    before = set(await page.transfer_ids())
    action = away(page, user).get_by_test_id("keep-for")
    await expect(action).to_be_visible()
    await expect(action).to_have_text(f"Keep a file for {user}…")
    async with page.page.expect_file_chooser() as chooser:
        await action.click()
    await (await chooser.value).set_files(str(path))
    return await new_transfer(page, before)


async def new_transfer(page: RoomPage, before: set[str]) -> str:
    """The id of the transfer that appears on ``page`` beside those ``before``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        new = [t for t in await page.transfer_ids() if t not in before]
        if new:
            return new[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{page.label}: no transfer appeared: {await page.describe()}")


async def stored_of(rd: Harness, user: str) -> list[dict[str, object]]:
    """The files the server lists as kept with ``user`` as a party
    (``GET /webrtc/file-transfers?status=stored``, as ``user``)."""
    response = await rd.server.request(
        user, "GET", "/webrtc/file-transfers", params={"status": "stored"}
    )
    assert response.status_code == 200, response.text
    return list(response.json())


def kept_objects(rd: Harness) -> list[Path]:
    """The kept files in the server's default store (DATA_DIR/store/…/objects), their
    descriptions (``.offer``) aside."""
    root = rd.server.data_dir / "store"
    found = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return [p for p in found if p.parent.name == "objects" and p.suffix != ".offer"]


async def log(page: RoomPage) -> list[str]:
    """Every note of the page's message log, oldest first (window.roomdrop.messages)."""
    return list(await page.page.evaluate("() => window.roomdrop.messages"))


async def failed_with(page: RoomPage, transfer_id: str, timeout: float = 30.0) -> str:
    """The note of a transfer that failed (waiting for it to)."""
    await page.wait_status(transfer_id, "failed", timeout)
    note = page.transfer(transfer_id).locator(".note")
    return (await note.inner_text()).strip()


@pytest.mark.timeout(240)
async def test_a_page_keeps_a_file_for_a_cli_receiver_who_left(rd: Harness, tmp_path: Path) -> None:
    assert interfaces() == {"lo"}
    room, bob = names("room", "bob")
    a = await rd.guest("alice", room)
    cli = rd.room(room, a.user, bob)
    inbox = tmp_path / "inbox"

    # bob is here once (his CLI publishes its device key), then leaves
    first = cli.receive(inbox, count=None)
    await cli.joined(first)
    await a.sees(bob)
    await expect(away(a, bob)).to_have_count(0)  # here: not listed as away
    first.signal(signal.SIGINT)
    await first.wait(30)
    await expect(a.participant(bob)).to_have_count(0, timeout=15_000)
    await expect(away(a, bob)).to_be_visible()
    seen = away(a, bob).get_by_test_id("participant-last-seen")
    await expect(seen).to_have_text(re.compile(r"^away · last seen \d\d:\d\d$"))
    await rd.shot(a, "bob-away")

    size = 12 * MB
    path = tmp_path / "kept.bin"
    digest = write_random(path, size)
    tid = await keep(a, bob, path)
    await a.wait_status(tid, "stored", 120)
    row = a.transfer(tid)
    await expect(row.locator(".note")).to_have_text(f"kept on the server for {bob} until they join")
    await expect(row.locator(".note")).not_to_have_class(re.compile(r"\berror\b"))
    sent = await a.transfer_state(tid)
    rd.note(f"kept by the page: {sent}")
    assert sent["transport"] == "relay", sent
    assert sent["bytes_via"]["relay"] >= size and sent["bytes_via"]["p2p"] == 0, sent
    shown = await log(a)
    keeping = [m for m in shown if m.startswith("keeping kept.bin (")]
    assert keeping and f"for {bob} on the server" in keeping[0], shown
    assert any(m.startswith(f"kept.bin: kept on the server for {bob}") for m in shown), shown
    assert not any("no peer-to-peer connection" in m for m in shown), shown
    held = await rd.server.transfer(room, a.user, tid)
    assert held["status"] == "stored" and held["store"] is True, held
    await rd.shot(a, "stored")

    # a second file would pass the sender's stored-bytes quota: refused, the server's
    # message shown (the first stays kept)
    more = tmp_path / "more.bin"
    write_random(more, size)
    refused = await keep(a, bob, more)
    note = await failed_with(a, refused)
    assert "ROOMDROP_STORE_QUOTA_USER" in note and f"{QUOTA:,}-byte" in note, note
    assert (await a.transfer_state(refused))["status"] == "failed"
    assert any("store-quota-exceeded" in m for m in await log(a)), await log(a)

    # bob joins later: offered the kept file (from alice, whom his CLI trusts from the
    # room's keys), he takes it byte-identical from the store
    later = cli.receive(inbox)  # --yes --count 1
    assert await later.wait(120) == 0, later.report()
    result = later.result()
    rd.note(f"cli receive result {result}")
    assert result["status"] == "completed", result
    assert result["transfer_id"] == tid, result
    notes = [n["message"] for n in later.events("note")]
    assert any(n.startswith("kept for you on the server") and "kept.bin" in n for n in notes), notes
    assert sha256_of(inbox / "kept.bin") == digest
    done = await rd.server.transfer(room, a.user, tid)
    assert done["status"] == "completed", done
    # alice's page is still here: its row says the file reached bob
    await a.wait_status(tid, "completed", 30)
    await expect(a.transfer(tid).locator(".note")).to_have_text(
        f"delivered to {bob} from the server's store"
    )


@pytest.mark.timeout(240)
async def test_the_cli_keeps_a_file_for_a_page_user_who_joins_later(
    rd: Harness, tmp_path: Path
) -> None:
    assert interfaces() == {"lo"}
    room, alice = names("room", "alice")
    b = await rd.guest("bob", room)
    bob, name = b.user, b.user.split("#")[0]
    await b.by("leave-button").click()  # seen in the room with the page's device key, gone
    await expect(b.by("join-button")).to_be_visible()

    size = 10 * MB
    path = tmp_path / "from-cli.bin"
    digest = write_random(path, size)
    cli = rd.room(room, alice, bob)
    send = cli.send(path, extra=["--store"])
    assert await send.wait(120) == 0, send.report()
    kept = send.result()
    assert kept["status"] == "stored", kept
    tid = kept["transfer_id"]

    # bob's page comes back (loaded again: the same guest, the same device key) while
    # alice is gone; it lists what is kept for it, then the server's offer
    again = await b.join(room, name=name)
    assert again == bob
    await expect(b.participant(alice)).to_have_count(0)
    await expect(away(b, alice)).to_be_visible()
    listed = [m for m in await log(b) if m.startswith("kept for you: ")]
    assert len(listed) == 1, await log(b)
    assert listed[0].startswith("kept for you: from-cli.bin ("), listed
    assert f"from {alice}" in listed[0], listed
    offer = b.by("offer").first
    await expect(offer).to_be_visible(timeout=30_000)
    await expect(offer.get_by_test_id("offer-kept")).to_be_visible()
    await expect(offer.get_by_test_id("offer-e2e")).to_contain_text("End-to-end encrypted")
    await rd.shot(b, "kept-offer")
    await b.accept()
    await b.wait_status(tid, "completed", 120)
    received = await b.transfer_state(tid)
    rd.note(f"the page received {received}")
    assert received["bytes_via"]["relay"] >= size and received["bytes_via"]["p2p"] == 0, received
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest
    done = await rd.server.transfer(room, bob, tid)
    assert done["status"] == "completed", done
    await rd.shot(b, "received")


@pytest.mark.timeout(240)
async def test_a_page_keeps_a_file_for_a_page_that_left_and_it_arrives_on_its_return(
    rd: Harness, tmp_path: Path
) -> None:
    # page to page: bob's page leaves; alice's keeps a file for him; his page joins again
    # while hers is still here (her key is the published one now), and takes it
    assert interfaces() == {"lo"}
    a, b = await rd.pair()
    bob, name = b.user, b.user.split("#")[0]
    await b.by("leave-button").click()
    await expect(a.participant(bob)).to_have_count(0, timeout=15_000)
    await expect(away(a, bob)).to_be_visible()
    size = 5 * MB
    path = tmp_path / "page-kept.bin"
    digest = write_random(path, size)
    tid = await keep(a, bob, path)
    await a.wait_status(tid, "stored", 60)

    assert await b.join(b.room, name=name, navigate=False) == bob
    await a.sees(bob)
    await expect(away(a, bob)).to_have_count(0)
    assert any(m.startswith("kept for you: page-kept.bin (") for m in await log(b)), await log(b)
    await b.accept()
    await b.wait_status(tid, "completed", 60)
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest
    await a.wait_status(tid, "completed", 30)
    await rd.shot(a, "delivered")


@pytest.mark.timeout(240)
async def test_a_page_withdraws_the_file_it_kept_and_the_receiver_is_offered_nothing(
    rd: Harness, tmp_path: Path
) -> None:
    assert interfaces() == {"lo"}
    room, bob = names("room", "bob")
    a = await rd.guest("alice", room)
    cli = rd.room(room, a.user, bob)
    inbox = tmp_path / "inbox"
    first = cli.receive(inbox, count=None)
    await cli.joined(first)
    await a.sees(bob)
    first.signal(signal.SIGINT)
    await first.wait(30)
    await expect(away(a, bob)).to_be_visible(timeout=15_000)

    # nobody is here: the file picked waits in the chooser, which offers to keep it for
    # bob (he published a device key in the room), not to send it to him
    path = tmp_path / "withdrawn.bin"
    write_random(path, 3 * MB)
    before = set(await a.transfer_ids())
    await a.by("file-input").set_input_files(str(path))
    chooser = a.by("chooser")
    await expect(chooser).to_be_visible()
    await expect(chooser).to_contain_text(
        "Send withdrawn.bin to whom? Nobody else is here: the server can keep it"
    )
    await expect(chooser.get_by_test_id("chooser-participant")).to_have_count(0)
    option = chooser.get_by_test_id("chooser-keep")
    await expect(option).to_have_text([f"Keep for {bob}"])
    await rd.shot(a, "chooser-keep")
    await option.click()
    await expect(chooser).to_be_hidden()
    tid = await new_transfer(a, before)
    await a.wait_status(tid, "stored", 60)
    row = a.transfer(tid)
    withdraw = row.get_by_test_id("transfer-withdraw")
    await expect(withdraw).to_be_visible()
    await expect(withdraw).to_be_enabled()
    await expect(row.get_by_test_id("transfer-cancel")).to_be_hidden()
    assert [t["transfer_id"] for t in await stored_of(rd, a.user)] == [tid]
    assert len(kept_objects(rd)) == 1
    await rd.shot(a, "kept-with-withdraw")

    await withdraw.click()
    await a.wait_status(tid, "cancelled", 30)
    await expect(row.locator(".note")).to_have_text(
        f"withdrawn: the server deleted it; {bob} will not be offered it"
    )
    await expect(row.locator(".note")).not_to_have_class(re.compile(r"\berror\b"))
    await expect(withdraw).to_be_hidden()
    assert await stored_of(rd, a.user) == []
    held = await rd.server.transfer(room, a.user, tid)
    assert held["status"] == "cancelled" and held["error"] == "withdrawn by its sender", held
    assert kept_objects(rd) == []
    assert any(
        m.startswith("withdrawn.bin: withdrawn: the server deleted it") for m in await log(a)
    )
    await rd.shot(a, "withdrawn")

    # bob joins later: nothing is kept for him, nothing offered (a kept file is offered
    # right after the join: the first test)
    later = cli.receive(inbox, count=None)
    await cli.joined(later)
    await asyncio.sleep(1.5)
    later.signal(signal.SIGINT)
    await later.wait(30)
    # (with --yes a file offered is taken without an "offer" line: its result says it)
    assert not later.events("result"), later.report()
    notes = [n["message"] for n in later.events("note")]
    assert not any(n.startswith("kept for you") for n in notes), notes
    assert not (inbox / "withdrawn.bin").exists()
    assert (await rd.server.transfer(room, a.user, tid))["status"] == "cancelled"


@pytest.mark.timeout(240)
async def test_a_reloaded_page_lists_the_file_it_keeps_and_withdraws_it(
    rd: Harness, tmp_path: Path
) -> None:
    assert interfaces() == {"lo"}
    a, b = await rd.pair()
    alice, alice_name = a.user, a.user.split("#")[0]
    bob, bob_name = b.user, b.user.split("#")[0]
    await b.by("leave-button").click()
    await expect(away(a, bob)).to_be_visible(timeout=15_000)
    path = tmp_path / "listed.bin"
    write_random(path, 2 * MB)
    tid = await keep(a, bob, path)
    await a.wait_status(tid, "stored", 60)
    stored_note = f"kept on the server for {bob} until they join"

    # alice leaves and joins again (no reload): the same row, still kept, with Withdraw
    await a.by("leave-button").click()
    await expect(a.by("join-button")).to_be_visible()
    assert await a.join(a.room, name=alice_name, navigate=False) == alice
    await expect(a.by("transfer")).to_have_count(1)
    assert await a.status(tid) == "stored"
    await expect(a.transfer(tid).locator(".note")).to_have_text(stored_note)
    await expect(a.transfer(tid).get_by_test_id("transfer-withdraw")).to_be_visible()

    # reloaded, the page knows nothing of it but what room-state says: it lists it
    await a.page.reload()
    assert await a.join(a.room, name=alice_name, navigate=False) == alice
    row = a.transfer(tid)
    await expect(row).to_be_visible(timeout=15_000)
    await expect(a.by("transfer")).to_have_count(1)
    assert await a.status(tid) == "stored"
    await expect(row.locator(".dir")).to_have_text(f"to {bob}")
    await expect(row.locator(".name")).to_have_text("listed.bin")
    await expect(row.locator(".note")).to_have_text(
        re.compile(rf"^{re.escape(stored_note)}, since \d")
    )
    listed = [m for m in await log(a) if m.startswith("you keep listed.bin (")]
    assert len(listed) == 1 and f"for {bob} on the server" in listed[0], await log(a)
    withdraw = row.get_by_test_id("transfer-withdraw")
    await expect(withdraw).to_be_visible()
    await rd.shot(a, "listed-after-reload")
    assert [t["transfer_id"] for t in await stored_of(rd, alice)] == [tid]

    await withdraw.click()
    await a.wait_status(tid, "cancelled", 30)
    await expect(row.locator(".note")).to_have_text(
        f"withdrawn: the server deleted it; {bob} will not be offered it"
    )
    assert await stored_of(rd, alice) == []
    assert await stored_of(rd, bob) == []
    assert (await rd.server.transfer(b.room, alice, tid))["status"] == "cancelled"

    # bob's page joins again: told of nothing kept for it, offered nothing
    assert await b.join(b.room, name=bob_name, navigate=False) == bob
    await a.sees(bob)
    await asyncio.sleep(1.5)
    assert await b.by("offer").count() == 0, await b.describe()
    assert not any(m.startswith("kept for you: ") for m in await log(b)), await log(b)
    assert tid not in (await b.state() or {}).get("transfers", {}), await b.describe()
