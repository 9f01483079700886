"""The room page's small traps, in real headless Chromium, the way a person meets them:
whom picked files go to when people come and go (and the chooser that asks when nobody
is chosen); a transfer's figures (a placeholder until the speed is known, the CLI's
decimal units, one decimal of percent); leaving the room and signing out; the share link
at phone size and its QR code (decoded here with zxing-cpp); an offer that arrives while
the tab is hidden, in the tab's title and as a notification.

Each test looks at what the page shows (visible text, layout, screenshots in
``test-artifacts/``), with real servers and real pages.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

import pytest
import zxingcpp
from pagetools import PHONE, Harness, RoomPage
from PIL import Image
from playwright.async_api import expect

from client.clitools import MB, sha256_of, write_random
from roomdrop.client.display import human_size
from server.conftest import names

pytestmark = pytest.mark.browser


async def picked(page: RoomPage, path: Path, before: set[str]) -> str:
    """``path`` was picked in ``page``'s file input (``before``: the transfers shown
    before): the id of the transfer that appears for it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        new = [t for t in await page.transfer_ids() if t not in before]
        if new:
            return new[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{page.label}: no transfer appeared: {await page.describe()}")


async def pick(page: RoomPage, path: Path) -> set[str]:
    """Pick ``path`` in the file input, clicking no participant; the transfers shown
    before."""
    before = set(await page.transfer_ids())
    await page.by("file-input").set_input_files(str(path))
    return before


async def gone(page: RoomPage, user: str) -> None:
    """Wait until ``page`` no longer lists ``user``."""
    await expect(page.participant(user)).to_have_count(0, timeout=15_000)


# --- 1. whom picked files go to -----------------------------------------------------------


async def test_the_recipient_stays_chosen_when_a_third_person_joins(
    rd: Harness, tmp_path: Path
) -> None:
    # alice and bob: files go to bob, the only other one. carol joins: they still go to
    # bob (the page said so), and a file picked then is sent to him, not dropped. carol
    # leaves: still bob.
    path = tmp_path / "for-bob.bin"
    write_random(path, 1 * MB)
    a, b = await rd.pair()
    recipient = a.page.locator("#recipient")
    await expect(recipient).to_have_text(f"Files go to {b.user}.")
    c = await rd.guest("carol", a.room)
    await a.sees(c.user)
    await rd.shot(a, "carol-joined")
    await expect(recipient).to_have_text(f"Files go to {b.user}.")
    await expect(a.participant(b.user)).to_have_attribute("aria-pressed", "true")
    await expect(a.participant(c.user)).to_have_attribute("aria-pressed", "false")

    tid = await picked(a, path, await pick(a, path))
    row = a.transfer(tid)
    await expect(row).to_contain_text(f"to {b.user}")
    await expect(row).to_contain_text("for-bob.bin")
    await expect(b.by("offer")).to_contain_text("for-bob.bin", timeout=15_000)
    assert await c.by("offer").count() == 0, await c.describe()
    assert not [m for m in await a.messages() if "choose a participant" in m], await a.messages()

    await c.page.context.close()
    await gone(a, c.user)
    await expect(recipient).to_have_text(f"Files go to {b.user}.")


async def test_files_picked_with_nobody_chosen_ask_whom_they_go_to(
    rd: Harness, tmp_path: Path
) -> None:
    # bob and carol are in the room when alice joins: nobody is chosen. A file alice picks
    # waits in the chooser, which lists both; she chooses carol and it goes to carol. bob
    # leaving and coming back does not change that; carol leaving does (then bob, the only
    # other one, gets the files).
    path = tmp_path / "for-carol.bin"
    write_random(path, 1 * MB)
    (room,) = names("room")
    b = await rd.guest("bob", room)
    c = await rd.guest("carol", room)
    a = await rd.guest("alice", room)
    for user in (b.user, c.user):
        await a.sees(user)
    recipient = a.page.locator("#recipient")
    await expect(recipient).not_to_contain_text("Files go to")
    chooser = a.by("chooser")
    await expect(chooser).to_be_hidden()

    before = await pick(a, path)
    await expect(chooser).to_be_visible()
    await expect(chooser).to_contain_text("Send for-carol.bin to whom?")
    options = chooser.get_by_test_id("chooser-participant")
    await expect(options).to_have_text(sorted([b.user, c.user]))
    await rd.shot(a, "chooser")
    assert await a.by("transfer").count() == 0, await a.describe()
    assert not [m for m in await a.messages() if "choose a participant" in m], await a.messages()

    await chooser.locator(f'[data-user="{c.user}"]').click()
    tid = await picked(a, path, before)
    await expect(a.transfer(tid)).to_contain_text(f"to {c.user}")
    await expect(chooser).to_be_hidden()
    await expect(recipient).to_have_text(f"Files go to {c.user}.")
    await expect(c.by("offer")).to_contain_text("for-carol.bin", timeout=15_000)
    assert await b.by("offer").count() == 0, await b.describe()

    # bob leaves and comes back (a reload): the choice stays carol
    await b.page.reload()
    await b.join(room, name=b.user.split("#")[0], navigate=False)
    await a.sees(b.user)
    await expect(recipient).to_have_text(f"Files go to {c.user}.")

    # carol leaves: files no longer go to her; bob is the only other one now
    await c.page.context.close()
    await gone(a, c.user)
    await expect(recipient).to_have_text(f"Files go to {b.user}.")


# --- 2. a transfer's figures --------------------------------------------------------------

#: every change of a transfer row's figures, as the person sees them, from now on
RECORD_JS = """(row) => {
  const q = (sel) => row.querySelector(sel)?.textContent ?? "";
  const seen = [];
  const look = () => seen.push({
    at: performance.now(), status: q('[data-testid="transfer-status"]'),
    percent: q('[data-testid="transfer-percent"]'), bytes: q(".bytes"),
    speed: q(".speed"), eta: q(".eta"),
  });
  look();
  new MutationObserver(look).observe(row, {subtree: true, childList: true, characterData: true});
  window.__seen = window.__seen || {};
  window.__seen[row.dataset.transferId] = seen;
}"""

SIZE = re.compile(r"^(\d+ bytes|\d+\.\d (kB|MB|GB))$")
SPEED = re.compile(r"^(\d+ bytes|\d+\.\d (kB|MB|GB))/s$")
ETA = re.compile(r"^ETA (\d+ s|\d+ min \d+ s|\d+ h \d+ min)$")
PERCENT = re.compile(r"^(0|100|\d{1,2}\.\d) %$")


def megabytes(speed: str) -> float:
    """A speed as shown ("12.3 MB/s") in MB/s."""
    number, unit = speed.removesuffix("/s").split(" ")
    scale = {"bytes": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]
    return float(number) * scale


@pytest.mark.timeout(240)
async def test_a_transfer_shows_a_placeholder_then_speed_and_eta_in_the_clis_units(
    rd: Harness, tmp_path: Path
) -> None:
    # Through the relay (no veth: ICE finds nothing, so the accepted transfer waits about
    # 5 s before the first chunk): speed and ETA show a placeholder, never blank, while
    # the transfer is active and its speed not known yet, then values. Sizes and speeds
    # are in the CLI's decimal units (human_size), the percentage has one decimal.
    size = 100 * MB
    path = tmp_path / "figures.bin"
    write_random(path, size)
    a, b = await rd.pair()
    tid = await a.send(b.user, path)
    await a.transfer(tid).evaluate(RECORD_JS)
    offer = b.by("offer").first
    await expect(offer).to_contain_text(f"({human_size(size)}, ")
    await expect(b.transfer(tid)).to_be_attached()
    await b.transfer(tid).evaluate(RECORD_JS)
    await b.accept()

    row = a.transfer(tid)
    await expect(row.get_by_test_id("transfer-status")).to_have_text("active", timeout=15_000)
    await expect(row.locator(".speed")).to_have_text("—/s")
    await expect(row.locator(".eta")).to_have_text("ETA —")
    await rd.shot(a, "placeholder")
    await expect(row.locator(".speed")).to_have_text(SPEED, timeout=30_000)
    await rd.shot(a, "speed-known")
    await b.wait_status(tid, "completed", 150)
    await a.wait_status(tid, "completed", 30)

    for page in (a, b):
        seen = await page.page.evaluate("(tid) => window.__seen[tid]", tid)
        active = [s for s in seen if s["status"] == "active"]
        rd.note(f"{page.label}: {len(seen)} changes, {len(active)} while active")
        assert active, f"{page.label}: never seen active: {seen[-5:]}"
        blank = [s for s in active if not s["speed"] or not s["eta"]]
        assert not blank, f"{page.label}: blank speed or ETA while active: {blank[:3]}"
        placeholders = [s for s in active if s["speed"] == "—/s"]
        values = [s for s in active if s["speed"] != "—/s"]
        assert placeholders, f"{page.label}: no placeholder before the speed was known"
        assert values, f"{page.label}: no speed ever shown: {active[-3:]}"
        assert placeholders[0]["at"] < values[0]["at"], page.label
        for s in values:
            assert SPEED.match(s["speed"]), s
            assert ETA.match(s["eta"]), s
        for s in placeholders:
            assert s["eta"] == "ETA —", s
        for s in seen:
            assert PERCENT.match(s["percent"]), s
            done, _, whole = s["bytes"].partition(" of ")
            assert SIZE.match(done) and whole == human_size(size), s
            assert "iB" not in s["bytes"] + s["speed"], s
        # the first speed shown is the real one, not diluted by the wait before the
        # first chunk: several times what the bytes so far over the time since the
        # transfer became active (the wait included) would give
        first = values[0]
        waited = (first["at"] - active[0]["at"]) / 1000
        diluted = megabytes(first["bytes"].partition(" of ")[0] + "/s") / waited
        shown = megabytes(first["speed"])
        rd.note(
            f"{page.label}: first speed {shown:.2f} MB/s, {waited:.1f} s after it became "
            f"active; the bytes so far over that time: {diluted:.2f} MB/s"
        )
        assert shown >= 3 * diluted, (page.label, first, waited, diluted)
        assert seen[-1]["bytes"] == f"{human_size(size)} of {human_size(size)}", seen[-1]
        assert seen[-1]["percent"] == "100 %", seen[-1]
        assert seen[-1]["speed"] == seen[-1]["eta"] == "", seen[-1]


# --- 3. leaving, signing out, the share link ----------------------------------------------


@pytest.mark.timeout(240)
async def test_leave_room_pauses_what_is_under_way_and_sign_out_forgets_the_guest(
    rd: Harness, tmp_path: Path
) -> None:
    # Mid-transfer alice clicks "Leave room": her page is back at the form (room and name
    # filled in), bob sees her leave and the transfer paused by the server, as on any
    # disconnect. "Join" takes her back as the same guest and the transfer resumes by
    # itself to the end. "Sign out" forgets her: the form is empty, and the same name
    # makes another guest.
    size = 100 * MB
    path = tmp_path / "leave.bin"
    digest = write_random(path, size)
    a, b = await rd.pair()
    alice, room = a.user, a.room
    name = alice.split("#")[0]
    tid = await a.send(b.user, path)
    await b.accept()
    # "Leave room" clicked the moment 2 MB have gone (by the page itself: a click from
    # here could come too late, once the whole file has gone)
    gone_then = await a.page.evaluate(
        """(tid) => new Promise((resolve) => {
          const look = () => {
            const t = window.roomdrop.transfers.get(tid);
            if (!t || t.bytes_transferred < 2e6) return setTimeout(look, 5);
            document.querySelector('[data-testid="leave-button"]').click();
            resolve(t.bytes_transferred);
          };
          look();
        })""",
        tid,
    )
    rd.note(f"alice left with {gone_then} bytes sent")
    await expect(a.by("join-button")).to_be_visible()
    await expect(a.page.locator("#room")).to_be_hidden()
    await expect(a.by("room-input")).to_have_value(room)
    await expect(a.by("name-input")).to_have_value(name)
    await expect(a.page.locator("body")).to_have_attribute("data-state", "signin")
    await gone(b, alice)
    await b.wait_status(tid, "paused", 15)
    await a.wait_status(tid, "paused", 5)
    held = await rd.server.transfer(room, alice, tid)
    assert held["status"] == "paused", held
    assert 0 < held["bytes_transferred"] < size, held
    assert any(f"{alice} disconnected" in m for m in await b.messages()), await b.messages()
    assert any(f"left room {room}" in m for m in await a.messages()), await a.messages()
    await rd.shot(a, "left")

    await a.by("join-button").click()
    await b.sees(alice)
    assert await a.page.evaluate("() => window.roomdrop.user") == alice
    await b.wait_status(tid, "completed", 150)
    await a.wait_status(tid, "completed", 30)
    saved = await b.save(tid, tmp_path / "saved" / path.name, filename=path.name)
    assert sha256_of(saved) == digest

    await a.by("signout-button").click()
    await expect(a.by("join-button")).to_be_visible()
    await expect(a.by("name-input")).to_have_value("")
    await expect(a.by("token-input")).to_have_value("")
    await gone(b, alice)
    remembered = await a.page.evaluate("() => localStorage.getItem('roomdrop-guests')")
    assert remembered is None, remembered
    await rd.shot(a, "signed-out")
    again = await a.join(room, name=name, navigate=False)
    assert again != alice and again.startswith(f"{name}#"), (again, alice)
    await b.sees(again)


async def test_the_share_link_fits_a_phone_copies_whole_and_shows_as_a_qr_code(
    rd: Harness,
) -> None:
    # At phone width a long share link stays on one line inside the screen (cut short,
    # not broken in the middle of the address), Copy puts the whole URL on the
    # clipboard, and the QR code beside it decodes to the same URL.
    (room,) = names("a-room-with-a-long-name-for-sharing")
    a = await rd.open("alice", PHONE)
    await a.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=rd.server.url)
    (name,) = names("alice")
    await a.join(room, name=name)
    url = f"{rd.server.url}/?room={room}"
    link = a.by("share-link")
    await expect(link).to_have_attribute("href", url)
    await rd.shot(a, "phone-share")

    box = await link.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    lines = await link.evaluate(
        "(a) => a.getClientRects().length === 1"
        " && a.getBoundingClientRect().height < 2 * parseFloat(getComputedStyle(a).lineHeight)"
    )
    assert lines, f"the share link is broken over several lines: {box}"
    width = await a.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a phone"
    copy = a.by("share-copy")
    copy_box = await copy.bounding_box()
    assert copy_box is not None and copy_box["x"] + copy_box["width"] <= PHONE["width"], copy_box

    await copy.click()
    await expect(a.page.get_by_text("link copied")).to_be_visible()
    copied = await a.page.evaluate("() => navigator.clipboard.readText()")
    assert copied == url, (copied, url)

    qr = a.by("share-qr")
    await expect(qr).to_be_hidden()  # folded on a phone: one tap away
    await a.page.get_by_text("QR code of the link").click()
    await expect(qr).to_be_visible()
    await rd.shot(a, "phone-qr")
    qr_box = await qr.bounding_box()
    assert qr_box is not None and qr_box["x"] + qr_box["width"] <= PHONE["width"], qr_box
    image = Image.open(io.BytesIO(await qr.screenshot()))
    found = zxingcpp.read_barcodes(image)
    assert [code.text for code in found] == [url], [(c.format, c.text) for c in found]
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode, found[0].format


# --- 4. an offer while the tab is hidden --------------------------------------------------

#: (an init script) every Notification the page constructs and every permission request
#: it makes, recorded before they go to the browser's own
RECORD_NOTIFICATIONS = """(() => {
  const Real = window.Notification;
  window.__notified = [];
  window.__asked = 0;
  if (typeof Real !== "function") return;
  class Recorded extends Real {
    constructor(title, options = {}) {
      window.__notified.push({title, body: options.body, tag: options.tag});
      super(title, options);
    }
  }
  Recorded.requestPermission = (...args) => {
    window.__asked += 1;
    return Real.requestPermission(...args);
  };
  window.Notification = Recorded;
})();"""

# Headless Chromium reports every tab visible, even one behind another tab: the page is
# hidden (and shown again) the way the browser does it, by document.hidden,
# visibilityState and a visibilitychange event.
HIDE = """() => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
  delete document.hidden;
  delete document.visibilityState;
  document.dispatchEvent(new Event("visibilitychange"));
}"""


async def test_an_offer_to_a_hidden_tab_shows_in_its_title_and_as_a_notification(
    rd: Harness, tmp_path: Path
) -> None:
    # bob has not allowed notifications: an offer while his tab is hidden puts
    # "(1) offer from alice — roomdrop" in its title, until he looks (the tab is shown) or
    # answers; nothing is notified and the page asks for permission only when he clicks
    # "Notify me". carol allowed them: her hidden tab also gets a
    # notification. An offer to a tab that is shown changes nothing.
    paths = []
    for n in range(4):
        paths.append(tmp_path / f"offer{n}.bin")
        write_random(paths[-1], 64 * 1024)
    (room,) = names("room")
    pages = {}
    for label in ("bob", "carol", "alice"):
        page = await rd.open(label)
        await page.context.add_init_script(RECORD_NOTIFICATIONS)
        if label == "carol":
            await page.context.grant_permissions(["notifications"], origin=rd.server.url)
        (name,) = names(label)
        await page.join(room, name=name)
        pages[label] = page
    a, b, c = pages["alice"], pages["bob"], pages["carol"]
    for user in (b.user, c.user):
        await a.sees(user)
    assert await b.page.title() == "roomdrop"

    # bob, hidden: the title says so until he looks; then until he answers
    await b.page.evaluate(HIDE)
    await a.send(b.user, paths[0])
    await expect(b.by("offer")).to_have_count(1, timeout=15_000)
    await expect(b.page).to_have_title(f"(1) offer from {a.user} — roomdrop")
    await b.page.evaluate(SHOW)
    await expect(b.page).to_have_title("roomdrop")
    await b.reject()
    await b.page.evaluate(HIDE)
    await a.send(b.user, paths[1])
    await expect(b.by("offer")).to_have_count(1, timeout=15_000)
    await expect(b.page).to_have_title(f"(1) offer from {a.user} — roomdrop")
    await b.reject()
    await expect(b.page).to_have_title("roomdrop")
    await b.page.evaluate(SHOW)
    assert await b.page.evaluate("() => [window.__notified, window.__asked]") == [[], 0]

    await expect(b.by("notify-button")).to_be_visible()
    await expect(c.by("notify-button")).to_be_hidden()
    await expect(c.by("notify-state")).to_contain_text("notified")

    # carol, hidden, notifications allowed: the title and a notification
    await c.page.evaluate(HIDE)
    tid = await a.send(c.user, paths[2])
    await expect(c.by("offer")).to_have_count(1, timeout=15_000)
    await expect(c.page).to_have_title(f"(1) offer from {a.user} — roomdrop")
    notified = await c.page.evaluate("() => window.__notified")
    assert notified == [
        {
            "title": f"Offer from {a.user}",
            "body": "offer2.bin (65.5 kB, application/octet-stream)",
            "tag": tid,
        }
    ], notified
    await c.page.evaluate(SHOW)
    await expect(c.page).to_have_title("roomdrop")
    await c.reject()

    # carol's tab shown: an offer changes neither the title nor notifies
    await a.send(c.user, paths[3])
    await expect(c.by("offer")).to_have_count(1, timeout=15_000)
    await asyncio.sleep(0.5)
    assert await c.page.title() == "roomdrop"
    assert len(await c.page.evaluate("() => window.__notified")) == 1

    # the permission is asked for on bob's click only
    await b.by("notify-button").click()
    await b.page.wait_for_function("() => window.__asked === 1", timeout=10_000)
    answer = await b.page.evaluate("() => Notification.permission")
    rd.note(f"bob's browser answered the permission request: {answer}")
