"""End-to-end encryption on the room page (docs/protocol.md §14), in real headless
Chromium with a real ``roomdrop serve``: page to page peer to peer and through the relay
(where a recording of every binary frame the receiving page got shows the SEALED flag
and never the file's marker), with the same safety number on both pages and as Python
computes it from their published keys; page to CLI and CLI to page, the CLI's ``--json``
``safety_number`` equal to the page's; a known user with a new device key warned about
on the participant, before sending to them and before accepting from them, until the
person trusts it; a MIME mismatch found by the receiving page in the decrypted content
(``mime-type-not-allowed``); offers whose keys do not match refused (``e2e-failed``).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from pagetools import Harness, RoomPage, interfaces, page_key
from playwright.async_api import expect

from client.clitools import MB, sha256_of, write_random
from roomdrop.client.keys import load_device_key
from roomdrop.e2e import DeviceKey, decode_key, safety_number, seal_offer
from roomdrop.protocol.transfer import Transfer
from server.conftest import launch, names

pytestmark = pytest.mark.browser

MARKER = b"ROOMDROP-E2E-MARKER:plaintext!"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)

# Every binary WebSocket message the page receives (relayed frames), before the page
# takes it: how many, their flags byte, how many contain MARKER.
RECORD_FRAMES = """(() => {
  const marker = new TextEncoder().encode(MARKER_TEXT);
  const seen = (window.__frames = {count: 0, flags: {}, marker: 0});
  const contains = (u8) => {
    outer: for (let i = u8.indexOf(marker[0]); i >= 0 && i <= u8.length - marker.length;
                i = u8.indexOf(marker[0], i + 1)) {
      for (let j = 1; j < marker.length; j++) if (u8[i + j] !== marker[j]) continue outer;
      return true;
    }
    return false;
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        if (typeof event.data === "string") return;
        const u8 = new Uint8Array(event.data);
        seen.count += 1;
        seen.flags[u8[3]] = (seen.flags[u8[3]] || 0) + 1;
        if (contains(u8)) seen.marker += 1;
      });
    }
  };
})();""".replace("MARKER_TEXT", json.dumps(MARKER.decode()))


def write_marked(path: Path, size: int) -> str:
    """A file of ``size`` bytes full of MARKER; its sha256."""
    data = (MARKER * (size // len(MARKER) + 1))[:size]
    path.write_bytes(data)
    return sha256_of(path)


async def e2e_of(page: RoomPage, tid: str) -> dict[str, Any]:
    """The transfer's e2e, safety_number, status and error_code (window.roomdrop)."""
    got = await page.page.evaluate(
        """(tid) => { const t = window.roomdrop.transfers.get(tid);
        return t ? {e2e: t.e2e, safety_number: t.safety_number, status: t.status,
                    error: t.error, error_code: t.error_code} : null; }""",
        tid,
    )
    assert got is not None, f"{page.label}: no transfer {tid}: {await page.describe()}"
    return dict(got)


async def shown_number(page: RoomPage, tid: str) -> str:
    """The safety number the transfer's row shows (folded under its lock)."""
    row = page.transfer(tid)
    await expect(row.get_by_test_id("transfer-e2e")).to_be_visible()
    await row.get_by_test_id("transfer-e2e").locator("summary").click()
    number = row.get_by_test_id("transfer-safety-number")
    await expect(number).to_be_visible()
    return (await number.inner_text()).strip()


async def participant_number(page: RoomPage, user: str) -> str:
    key = page.page.locator(f'[data-testid="participant-key"][data-user="{user}"]')
    await expect(key).to_have_count(1, timeout=15_000)
    number = await key.get_attribute("data-safety-number")
    assert number, await page.describe()
    return number


async def recording(rd: Harness, label: str, room: str) -> RoomPage:
    """A guest page that records every relayed frame it receives (RECORD_FRAMES)."""
    page = await rd.open(label)
    await page.page.add_init_script(RECORD_FRAMES)
    (name,) = names(label)
    await page.join(room, name=name)
    return page


async def same_number_everywhere(rd: Harness, a: RoomPage, b: RoomPage, tid: str) -> str:
    """Both pages show one safety number, on the transfer and on the participant, and it
    is the one Python computes from the keys they published."""
    key_a, key_b = await page_key(a), await page_key(b)
    number = safety_number(a.user, decode_key(key_a), b.user, decode_key(key_b))
    for page, other in ((a, b), (b, a)):
        state = await e2e_of(page, tid)
        assert (state["e2e"], state["safety_number"]) == (True, number), state
        assert await shown_number(page, tid) == number
        assert await participant_number(page, other.user) == number
    rd.note(f"safety number {number}")
    return number


@pytest.mark.timeout(240)
async def test_two_pages_peer_to_peer_end_to_end_with_one_safety_number(
    veth: None, rd: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "p2p.bin"
    digest = write_random(path, 20 * MB)
    a, b = await rd.pair()
    tid = await a.send(b.user, path)
    offer = b.by("offer").first
    await expect(offer.get_by_test_id("offer-e2e")).to_contain_text(
        re.compile("end-to-end encrypted", re.I)
    )
    await b.accept()
    await b.wait_status(tid, "completed", 120)
    await a.wait_status(tid, "completed", 30)
    for page in (a, b):
        assert await page.transport(tid) == "p2p", await page.describe()
    await same_number_everywhere(rd, a, b, tid)
    await rd.shot(b, "completed-e2e")
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest


@pytest.mark.timeout(240)
async def test_two_pages_through_the_relay_end_to_end_the_relay_carries_only_ciphertext(
    rd: Harness, tmp_path: Path
) -> None:
    assert interfaces() == {"lo"}  # no data channel can open: the relay carries it all
    size = 6 * MB
    path = tmp_path / "marked.bin"
    digest = write_marked(path, size)
    (room,) = names("room")
    a = await rd.guest("alice", room)
    b = await recording(rd, "bob", room)
    await a.sees(b.user)
    await b.sees(a.user)
    tid = await a.send(b.user, path)
    await b.accept()
    await b.wait_status(tid, "completed", 150)
    await a.wait_status(tid, "completed", 30)
    for page in (a, b):
        assert await page.transport(tid) == "relay", await page.describe()
    await same_number_everywhere(rd, a, b, tid)
    frames = await b.page.evaluate("() => window.__frames")
    rd.note(f"frames the receiving page got from the relay: {frames}")
    chunks = -(-size // 65_536)
    assert frames["count"] >= chunks, frames
    assert frames["flags"] == {"1": frames["count"]}, frames  # every one SEALED
    assert frames["marker"] == 0, frames  # and none holds the plaintext
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest
    assert MARKER in saved.read_bytes()[:4096]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("way", ["p2p", "relay"])
async def test_a_page_sends_to_the_cli_end_to_end(
    request: pytest.FixtureRequest, rd: Harness, tmp_path: Path, way: str
) -> None:
    if way == "p2p":
        request.getfixturevalue("veth")  # the page's candidates
    # relay: the CLI gathers TURN relay candidates only, and no TURN server is configured,
    # so no data channel can open and the page falls back to the relay
    env = {"ROOMDROP_ICE_POLICY": "relay"} if way == "relay" else None
    path = tmp_path / "to-cli.bin"
    digest = write_random(path, 8 * MB)
    room, bob = names("room", "bob")
    a = await rd.guest("alice", room)
    cli = rd.room(room, a.user, bob)
    out = tmp_path / "inbox"
    receive = cli.receive(out, env=env)
    await cli.joined(receive)
    await a.sees(bob)
    tid = await a.send(bob, path)
    assert await receive.wait(120) == 0, receive.report()
    result = receive.result()
    await a.wait_status(tid, "completed", 30)
    device = load_device_key(cli.config_dir(bob))
    assert device is not None
    number = safety_number(a.user, decode_key(await page_key(a)), bob, device.public)
    rd.note(f"cli receive result {result}; page {await e2e_of(a, tid)}")
    assert (result["status"], result["e2e"], result["safety_number"]) == (
        "completed",
        True,
        number,
    )
    assert (await e2e_of(a, tid))["safety_number"] == number
    assert await shown_number(a, tid) == number
    assert (result["transport"], result["bytes_via"][way]) == (way, path.stat().st_size)
    assert sha256_of(out / path.name) == digest


@pytest.mark.timeout(180)
@pytest.mark.parametrize("way", ["relay", "p2p"])
async def test_the_cli_sends_to_a_page_end_to_end(
    request: pytest.FixtureRequest, rd: Harness, tmp_path: Path, way: str
) -> None:
    if way == "p2p":
        request.getfixturevalue("veth")
    path = tmp_path / "from-cli.bin"
    digest = write_marked(path, 5 * MB)
    (room,) = names("room")
    b = await recording(rd, "bob", room)
    (alice,) = names("alice")
    cli = rd.room(room, alice, b.user)
    send = cli.send(path, transport=way)
    await cli.joined(send)
    await b.sees(alice)
    device = load_device_key(cli.config_dir(alice))
    assert device is not None
    number = safety_number(alice, device.public, b.user, decode_key(await page_key(b)))
    # on the participant while alice is in the room (her CLI leaves once the file is sent)
    assert await participant_number(b, alice) == number
    await b.accept()
    (tid,) = await b.transfer_ids()
    await b.wait_status(tid, "completed", 120)
    assert await send.wait(60) == 0, send.report()
    result = send.result()
    rd.note(f"cli send result {result}; page {await e2e_of(b, tid)}")
    assert (result["status"], result["e2e"], result["safety_number"]) == (
        "completed",
        True,
        number,
    )
    assert await shown_number(b, tid) == number
    assert (result["transport"], result["bytes_via"][way]) == (way, path.stat().st_size)
    frames = await b.page.evaluate("() => window.__frames")
    if way == "relay":  # every relayed frame sealed, no marker in any
        assert frames["count"] > 0 and frames["flags"] == {"1": frames["count"]}, frames
        assert frames["marker"] == 0, frames
    else:  # peer to peer: no chunk through the server
        assert frames["count"] == 0, frames
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest


@pytest.mark.timeout(240)
async def test_a_known_user_with_a_new_key_is_warned_about_until_trusted(
    veth: None, rd: Harness, tmp_path: Path
) -> None:
    room, alice = names("room", "alice")
    bob = await rd.guest("bob", room)
    first = await rd.with_token("alice-1", room, alice)
    await bob.sees(alice)
    key_of_alice = bob.page.locator(f'[data-testid="participant-key"][data-user="{alice}"]')
    await expect(key_of_alice).to_have_attribute("data-seen", re.compile("^(first|known)$"))
    await expect(bob.by("participant-key-warning")).to_have_count(0)
    keys = [await page_key(first)]
    await first.context.close()

    # alice comes back from another browser (a new device key): bob is warned at once
    second = await rd.with_token("alice-2", room, alice)
    keys.append(await page_key(second))
    assert keys[1] != keys[0]
    await bob.sees(alice)
    warning = bob.by("participant-key-warning")
    await expect(warning).to_be_visible(timeout=15_000)
    await expect(warning).to_contain_text("NEW device key")
    await expect(key_of_alice).to_have_attribute("data-seen", "changed")
    await rd.shot(bob, "participant-new-key")

    # sending to her waits, warned, and nothing is offered until bob trusts the key
    path = tmp_path / "to-new-key.txt"
    path.write_text("for alice's new device\n" * 1000)
    tid = await bob.send(alice, path)
    row_warning = bob.transfer(tid).get_by_test_id("transfer-key-warning")
    await expect(row_warning).to_be_visible(timeout=15_000)
    await expect(row_warning).to_contain_text("sending waits until you trust it")
    await asyncio.sleep(2)
    assert await bob.status(tid) == "pending"
    assert await second.by("offer").count() == 0
    await rd.shot(bob, "sending-waits-for-trust")
    await row_warning.get_by_test_id("transfer-key-warning-trust").click()
    await expect(row_warning).to_be_hidden()
    await expect(warning).to_have_count(0)
    await second.accept()
    await second.wait_status(tid, "completed", 60)
    await bob.wait_status(tid, "completed", 30)
    bob_key = decode_key(await page_key(bob))
    number = safety_number(bob.user, bob_key, alice, decode_key(keys[1]))
    assert (await e2e_of(bob, tid))["safety_number"] == number
    assert (await e2e_of(second, tid))["safety_number"] == number
    await second.context.close()

    # a third key: her offer is shown with a warning, and Accept waits for the trust
    third = await rd.with_token("alice-3", room, alice)
    keys.append(await page_key(third))
    await third.sees(bob.user)
    back = tmp_path / "from-new-key.txt"
    back.write_text("from alice's third device\n" * 1000)
    tid2 = await third.send(bob.user, back)
    offer = bob.by("offer").first
    await expect(offer).to_be_visible(timeout=30_000)
    offer_warning = offer.get_by_test_id("offer-key-warning")
    await expect(offer_warning).to_be_visible()
    await expect(offer_warning).to_contain_text("accepting waits until you trust it")
    await expect(offer.get_by_test_id("offer-accept")).to_be_disabled()
    await rd.shot(bob, "offer-waits-for-trust")
    await offer_warning.get_by_test_id("offer-key-warning-trust").click()
    await expect(offer_warning).to_be_hidden()
    await expect(offer.get_by_test_id("offer-accept")).to_be_enabled()
    await bob.accept()
    await bob.wait_status(tid2, "completed", 60)
    await third.wait_status(tid2, "completed", 30)
    number3 = safety_number(bob.user, bob_key, alice, decode_key(keys[2]))
    assert await shown_number(bob, tid2) == number3
    assert await shown_number(third, tid2) == number3

    # the store trusts all three now (trusting adds a key, it forgets none)
    stored = await bob.page.evaluate(
        """async (user) => { const k = await import('/static/keys.js');
        return await new k.TrustStore().get(user); }""",
        alice,
    )
    assert stored == {"trusted": keys, "pending": None}, stored


@pytest.mark.timeout(180)
async def test_a_mime_mismatch_in_the_decrypted_content_fails_at_the_receiving_page(
    veth: None, rd: Harness, tmp_path: Path
) -> None:
    # a server whose lists deny images: it cannot see the content (ciphertext, and peer
    # to peer it sees no chunk at all), so the receiving page checks chunk 0 decrypted
    server = await asyncio.to_thread(
        launch, tmp_path / "deny-images", {"ROOMDROP_MIME_DENY": '["image/*"]'}
    )
    rd.servers.append(server)
    (room,) = names("room")
    a = await rd.guest("alice", room, server=server)
    b = await rd.guest("bob", room, server=server)
    await a.sees(b.user)
    await b.sees(a.user)
    png = PNG + bytes(200_000)
    cases = [
        # a .txt file (declared text/plain) that is really an image
        ("photo.txt", "declared text/plain, but the content is image/png"),
        # a generic declaration of content the lists deny
        ("data.bin", "content is image/png, which is not allowed here"),
    ]
    for name, said in cases:
        path = tmp_path / name
        path.write_bytes(png)
        tid = await a.send(b.user, path)
        await b.accept()
        await b.wait_status(tid, "failed", 60)
        got = await e2e_of(b, tid)
        assert got["e2e"] is True, got
        assert got["error_code"] == "mime-type-not-allowed", got
        assert said in got["error"], got
        await a.wait_status(tid, "failed", 30)
        sent = await e2e_of(a, tid)
        assert sent["error_code"] == "mime-type-not-allowed", sent
        await expect(b.transfer(tid).get_by_test_id("transfer-save")).to_be_hidden()
    await rd.shot(b, "mime-refused")
    # what is what it says goes through
    fine = tmp_path / "notes.txt"
    fine.write_text("just text\n" * 5000)
    tid = await a.send(b.user, fine)
    await b.accept()
    await b.wait_status(tid, "completed", 60)
    saved = await b.save(tid, tmp_path / "saved" / fine.name, filename=fine.name)
    assert saved.read_bytes() == fine.read_bytes()


def offer_message(sender: str, receiver: str, e2e: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A file-share-offer from ``sender`` with this ``e2e`` part, as the server relays it."""
    tid = str(uuid.uuid4())
    payload = {
        "transfer_id": tid,
        "receiver_id": receiver,
        "filename": "forged.bin",
        "file_size": 1000,
        "mime_type": "application/octet-stream",
        "chunk_size": 65_536,
        "total_chunks": 1,
        "sha256": "ab" * 32,
        "e2e": e2e,
    }
    return tid, {"type": "file-share-offer", "sender_id": sender, "payload": payload}


def record_of(tid: str, sender: str, receiver: str) -> Transfer:
    return Transfer(
        transfer_id=tid,
        room_id="r",
        sender_id=sender,
        receiver_id=receiver,
        filename="forged.bin",
        file_size=1000,
        chunk_size=65_536,
        total_chunks=1,
        sha256="ab" * 32,
        mime_type="application/octet-stream",
        created_mono=0.0,
    )


@pytest.mark.timeout(120)
async def test_offers_whose_keys_do_not_match_fail_with_e2e_failed(rd: Harness) -> None:
    # What a server that checks nothing could hand a page (this one checks offers, so
    # the messages are handed to the page's dispatch table directly).
    a, b = await rd.pair()
    alice_key, bob_key = await page_key(a), await page_key(b)
    someone = DeviceKey.generate()

    async def deliver(make: Any) -> str:
        tid, msg = offer_message(a.user, b.user, {})
        e2e, _ = seal_offer(record_of(tid, a.user, b.user), someone, bob_key)
        msg["payload"]["e2e"] = make(e2e).model_dump()
        await b.page.evaluate("(m) => window.roomdrop._state.deliver(m)", msg)
        return tid

    async def failed(tid: str) -> dict[str, Any]:
        await b.wait_status(tid, "failed", 30)
        got = await e2e_of(b, tid)
        assert got["error_code"] == "e2e-failed", got
        return got

    # sealed by a key that is not the one alice published
    got = await failed(await deliver(lambda e2e: e2e))
    assert f"sealed by the device key {someone.public_text}" in got["error"], got
    # sealed to a key that is not this page's
    other = DeviceKey.generate().public_text
    got = await failed(await deliver(lambda e2e: e2e.model_copy(update={"receiver_key": other})))
    assert "not to this device's" in got["error"], got
    # naming alice's key, but not sealed by it: shown, and it does not open at accept
    tid = await deliver(lambda e2e: e2e.model_copy(update={"sender_key": alice_key}))
    await b.accept()
    got = await failed(tid)
    assert "does not open" in got["error"], got
    assert await b.by("offer").count() == 0
