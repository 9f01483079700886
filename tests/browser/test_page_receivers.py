"""Send to everyone from the room page (issue 17; the CLI's ``send --to @room``), in real
headless Chromium with a real ``roomdrop serve`` and real ``roomdrop receive`` commands
as the receivers: one file picked once goes to every other participant in the room at
that moment, each receiver a transfer of its own (its own id, accept or reject, result),
the file hashed once for all of them; one receiver declining fails only its own
transfer. With nobody else here the action is not offered.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pagetools import Harness, RoomPage
from playwright.async_api import expect

from client.clitools import MB, Command, Room, sha256_of, write_random
from server.conftest import names

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

# the CLI gathers TURN relay candidates only and no TURN server is configured: no data
# channel opens, and the page sends through the relay (after its ICE timeout)
RELAY = {"ROOMDROP_ICE_POLICY": "relay"}

# How many files the page asked its hash worker (hash-worker.js) to hash.
COUNT_HASHES = """(() => {
  window.__hashed = [];
  const Native = window.Worker;
  window.Worker = class extends Native {
    constructor(url, options) {
      super(url, options);
      if (!String(url).includes("hash-worker")) return;
      const post = this.postMessage.bind(this);
      this.postMessage = (message, ...rest) => {
        if (message && message.file) window.__hashed.push(message.file.name);
        return post(message, ...rest);
      };
    }
  };
})();"""


async def sender_page(rd: Harness, room: str) -> RoomPage:
    """alice's page, counting the files it hashes (COUNT_HASHES)."""
    page = await rd.open("alice")
    await page.page.add_init_script(COUNT_HASHES)
    (name,) = names("alice")
    await page.join(room, name=name)
    return page


async def rows_by_peer(page: RoomPage, count: int) -> dict[str, str]:
    """receiver → transfer id of the page's send rows, once there are ``count`` of them."""
    deadline = time.monotonic() + 20
    rows: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = await page.page.locator(
            '[data-testid="transfer"][data-direction="send"][data-transfer-id]'
        ).evaluate_all("els => els.map(e => [e.dataset.peer, e.dataset.transferId])")
        if len(found) >= count:
            rows = dict(found)
            assert len(found) == count and len(rows) == count, found
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"{page.label}: not {count} send rows: {await page.describe()}")


async def receiver(cli: Room, user: str, out: Path, *, yes: bool = True) -> Command:
    command = cli.receive(out, user=user, yes=yes, env=RELAY)
    await cli.joined(command)
    return command


async def test_a_page_sends_one_file_to_everyone_each_receiver_its_own_transfer(
    rd: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "everyone.bin"
    digest = write_random(path, 3 * MB)
    room, bob, carol = names("room", "bob", "carol")
    a = await sender_page(rd, room)
    everyone = a.by("send-everyone")
    chooser = a.by("chooser")
    offered = chooser.get_by_test_id("chooser-everyone")

    # nobody else here: no "send to everyone", here or in the chooser the picked file opens
    await expect(everyone).to_be_hidden()
    await a.by("file-input").set_input_files(str(path))
    await expect(chooser).to_be_visible()
    await expect(chooser).to_contain_text("Nobody else is here yet")
    await expect(offered).to_have_count(0)

    cli = rd.room(room, a.user, bob)
    inbox = {bob: tmp_path / "bob", carol: tmp_path / "carol"}
    bob_gets = await receiver(cli, bob, inbox[bob])
    await a.sees(bob)
    await expect(everyone).to_be_visible()
    await expect(offered).to_have_count(0)  # one other: the chooser's own button for bob
    carol_gets = await receiver(cli, carol, inbox[carol])
    await a.sees(carol)
    await expect(offered).to_have_text("Everyone here (2)")
    assert await a.by("transfer").count() == 0, await a.describe()
    await rd.shot(a, "chooser-everyone")
    await offered.click()
    await expect(chooser).to_be_hidden()

    rows = await rows_by_peer(a, 2)
    assert sorted(rows) == sorted([bob, carol]), rows
    assert len(set(rows.values())) == 2, rows  # a transfer each
    for user, tid in rows.items():
        await expect(a.transfer(tid).get_by_test_id("transfer-peer")).to_have_text(f"to {user}")
    for user, command in ((bob, bob_gets), (carol, carol_gets)):
        assert await command.wait(120) == 0, command.report()
        result = command.result()
        assert (result["status"], result["transfer_id"]) == ("completed", rows[user]), result
        assert sha256_of(inbox[user] / path.name) == digest
        await a.wait_status(rows[user], "completed", 30)
        assert (await a.transfer_state(rows[user]))["transport"] == "relay"
    await rd.shot(a, "sent-to-everyone")
    assert await a.page.evaluate("() => window.__hashed") == [path.name]  # hashed once

    # both receivers are gone (--count 1): nobody is here to send to any more
    await expect(a.participant(bob)).to_have_count(0, timeout=15_000)
    await expect(a.participant(carol)).to_have_count(0, timeout=15_000)
    await expect(everyone).to_be_hidden()


async def test_one_receiver_declining_fails_only_its_own_transfer_on_the_page(
    rd: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "some.bin"
    digest = write_random(path, 2 * MB)
    room, bob, carol = names("room", "bob", "carol")
    a = await sender_page(rd, room)
    cli = rd.room(room, a.user, bob)
    bob_gets = await receiver(cli, bob, tmp_path / "bob")
    carol_asked = await receiver(cli, carol, tmp_path / "carol", yes=False)
    for user in (bob, carol):
        await a.sees(user)

    # "Send to everyone here…" by the participant list: its own file picker
    everyone = a.by("send-everyone")
    await expect(everyone).to_be_visible()
    async with a.page.expect_file_chooser() as picker:
        await everyone.click()
    await (await picker.value).set_files(str(path))
    rows = await rows_by_peer(a, 2)
    assert sorted(rows) == sorted([bob, carol]), rows

    offer = await carol_asked.wait_for(lambda line: line.get("event") == "offer")
    assert (offer["filename"], offer["transfer_id"]) == (path.name, rows[carol]), offer
    assert carol_asked.process.stdin is not None
    carol_asked.process.stdin.write(b"n\n")
    carol_asked.process.stdin.flush()

    await a.wait_status(rows[carol], "rejected", 30)
    await expect(a.transfer(rows[carol])).to_contain_text(f"{carol} rejected it")
    declined = await carol_asked.wait_for(lambda line: line.get("event") == "result")
    assert (declined["status"], declined["transfer_id"]) == ("rejected", rows[carol])
    assert await bob_gets.wait(120) == 0, bob_gets.report()
    assert (bob_gets.result()["status"], bob_gets.result()["transfer_id"]) == (
        "completed",
        rows[bob],
    )
    assert sha256_of(tmp_path / "bob" / path.name) == digest
    await a.wait_status(rows[bob], "completed", 30)
    assert not (tmp_path / "carol" / path.name).exists()
    assert await a.status(rows[carol]) == "rejected"  # bob's completion did not change it
    await rd.shot(a, "one-declined")


@pytest.mark.parametrize("rd_env", [{"ROOMDROP_MAX_TRANSFERS_PER_USER": "1"}])
async def test_more_receivers_than_the_user_may_have_transfers_take_turns_on_the_page(
    rd: Harness, tmp_path: Path
) -> None:
    """The server lets a user have one transfer under way (room-state says so): the
    page sends to the second receiver once the first transfer has ended, instead of
    having its offer refused (too-many-transfers)."""
    path = tmp_path / "turns.bin"
    digest = write_random(path, 1 * MB)
    room, bob, carol = names("room", "bob", "carol")
    a = await sender_page(rd, room)
    cli = rd.room(room, a.user, bob)
    inbox = {bob: tmp_path / "bob", carol: tmp_path / "carol"}
    commands = {user: await receiver(cli, user, inbox[user]) for user in (bob, carol)}
    for user in commands:
        await a.sees(user)
    everyone = a.by("send-everyone")
    async with a.page.expect_file_chooser() as picker:
        await everyone.click()
    await (await picker.value).set_files(str(path))
    rows = await rows_by_peer(a, 2)
    for user, command in commands.items():
        assert await command.wait(120) == 0, command.report()
        assert command.result()["status"] == "completed", command.result()
        assert sha256_of(inbox[user] / path.name) == digest
        await a.wait_status(rows[user], "completed", 30)
