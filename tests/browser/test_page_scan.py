"""The room page in a room whose server requires a malware scan at the receiver
(``ROOMDROP_REQUIRE_SCAN``), in real headless Chromium: the page cannot scan, so it says
in the room that it cannot receive files there, shows an offer with the reason and no
Accept, and accepts nothing; its person may still reject, and still send, to a CLI that
scans (``roomdrop receive --scan`` with a real clamd, :mod:`clamdtools`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pagetools import Harness
from playwright.async_api import expect

from clamdtools import Clamd, start_clamd
from client.clitools import sha256_of, write_random
from server.conftest import names

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture
def rd_env() -> dict[str, str]:
    return {"ROOMDROP_REQUIRE_SCAN": "true"}


@pytest.fixture
def clamd(tmp_path: Path) -> Iterator[Clamd]:
    server = start_clamd(tmp_path / "clamd")
    yield server
    server.stop()


async def test_a_page_cannot_receive_where_receivers_must_scan_and_says_so(
    rd: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "report.bin"
    write_random(path, 200_000)
    a, b = await rd.pair()
    banner = b.by("scan-required")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("cannot receive files here")
    await expect(banner).to_contain_text("roomdrop receive --scan URL")

    tid = await a.send(b.user, path)
    offer = b.by("offer").first
    await expect(offer).to_be_visible(timeout=30_000)
    reason = offer.get_by_test_id("offer-scan-required")
    await expect(reason).to_be_visible()
    await expect(reason).to_contain_text("This page cannot receive it here")
    await expect(offer.get_by_test_id("offer-accept")).to_be_disabled()
    await rd.shot(b, "offer-cannot-be-accepted")
    # nothing was accepted: the transfer waits on the server until the person rejects it
    assert (await rd.server.transfer(a.room, a.user, tid))["status"] == "pending"
    messages = await b.messages()
    assert any("This page cannot receive it here" in m for m in messages), messages
    await b.reject()
    await a.wait_status(tid, "rejected", 30)
    assert (await rd.server.transfer(a.room, a.user, tid))["status"] == "rejected"


async def test_a_page_still_sends_to_a_cli_that_scans_in_such_a_room(
    rd: Harness, tmp_path: Path, clamd: Clamd
) -> None:
    path = tmp_path / "for-cli.bin"
    digest = write_random(path, 300_000)
    (room,) = names("room")
    a = await rd.guest("alice", room)
    await expect(a.by("scan-required")).to_be_visible()
    (carol,) = names("carol")
    cli = rd.room(room, a.user, carol)
    inbox = tmp_path / "inbox"
    receive = cli.receive(inbox, extra=["--scan", clamd.unix_url])
    await cli.joined(receive)
    await a.sees(carol)
    tid = await a.send(carol, path)
    await a.wait_status(tid, "completed", 60)
    assert await receive.wait(60) == 0, receive.report()
    assert sha256_of(inbox / path.name) == digest
