"""The room page's small traps, in real headless Chromium, the way a person meets them:
whom picked files go to when people come and go (and the chooser that asks when nobody
is chosen).

Each test looks at what the page shows (visible text, layout, screenshots in
``test-artifacts/``), with real servers and real pages.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pagetools import Harness, RoomPage
from playwright.async_api import expect

from client.clitools import MB, write_random
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
