"""Helpers of the browser tests: a room page in a Chromium of its own (:class:`RoomPage`)
and a test's harness (:class:`Harness`): its server, pages, CLI commands, captured console
output and screenshots. Fixtures and reporting are in ``conftest.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    ViewportSize,
    expect,
)
from playwright.async_api import Error as PlaywrightError

from client.clitools import Command, Room
from server.conftest import Server, launch, names

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
TERMINAL = ("completed", "failed", "cancelled", "rejected")
VETH = ("v0", "v1")
LOG_TAIL = 20_000

HARNESS = pytest.StashKey["Harness"]()
FAILED = pytest.StashKey[bool]()

# window.roomdrop as plain JSON: the contract's fields only (a transfer object may hold
# files and channels), Maps turned into objects.
STATE_JS = """() => {
  const r = window.roomdrop;
  if (!r) return null;
  const plain = (v) => {
    if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, plain(x)]));
    if (v && typeof v === "object" && !Array.isArray(v))
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
    return v;
  };
  const entries = r.transfers instanceof Map ? [...r.transfers] : Object.entries(r.transfers || {});
  const transfers = {};
  for (const [id, t] of entries) {
    transfers[id] = {
      status: t.status, transport: t.transport, bytes_via: plain(t.bytes_via),
      resumed_bytes: t.resumed_bytes, sha256: t.sha256,
    };
  }
  return {user: r.user ?? null, room: r.room ?? null, transfers};
}"""


# --- the namespace -----------------------------------------------------------------------


def interfaces() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def assert_private_namespace(allowed: set[str]) -> None:
    """Fail unless this process runs in a network namespace of its own that has only
    ``lo`` (and ``allowed``): never touch a real machine's network."""
    found = interfaces()
    if "lo" not in found or not found <= {"lo", *allowed}:
        pytest.fail(
            "the browser tests change the network: they must run in a private loopback-only "
            "network namespace (scripts/test, or: unshare --net --mount sh -c 'ip link set lo "
            f"up && .venv/bin/python -m pytest tests/browser'); interfaces here: {sorted(found)}",
            pytrace=False,
        )
    with contextlib.suppress(OSError):
        if os.readlink("/proc/self/ns/net") == os.readlink("/proc/1/ns/net"):
            pytest.fail(
                "the browser tests run in the same network namespace as PID 1: refusing to "
                "change its network (run them under unshare --net)",
                pytrace=False,
            )


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")


# --- pages -------------------------------------------------------------------------------


def artifact_dir(nodeid: str) -> Path:
    return ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


@dataclass
class RoomPage:
    """One Chromium (its own user-data-dir) showing the room page."""

    harness: Harness
    label: str
    context: BrowserContext
    page: Page
    server: Server
    """The instance this page was loaded from (and talks to)."""
    user: str = ""
    room: str = ""

    def __repr__(self) -> str:
        return f"RoomPage({self.label!r}, user={self.user!r}, room={self.room!r})"

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def participant(self, user: str) -> Locator:
        return self.page.locator(f'[data-testid="participant"][data-user="{user}"]')

    def transfer(self, transfer_id: str | None = None) -> Locator:
        if transfer_id is None:
            return self.by("transfer").first
        return self.page.locator(
            f'[data-testid="transfer"][data-transfer-id="{transfer_id}"]'
        ).first

    async def goto(self, room: str) -> None:
        """Load the page of ``room``. Chromium aborts a navigation with
        ERR_NETWORK_CHANGED when the namespace's links change under it (the veth pair a
        test has just brought up): that load is made again, twice at most."""
        for attempt in range(3):
            try:
                await self.page.goto(f"{self.server.url}/?room={room}")
                return
            except PlaywrightError as exc:
                if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == 2:
                    raise
                await asyncio.sleep(0.5)

    async def join(
        self, room: str, *, name: str | None = None, token: str | None = None, navigate: bool = True
    ) -> str:
        """Sign in (as a guest called ``name``, or with ``token``) and join ``room``; the
        user id the page shows."""
        if navigate:
            await self.goto(room)
        await expect(self.by("join-button")).to_be_visible(timeout=15_000)
        await expect(self.by("room-input")).to_have_value(room, timeout=5_000)
        if name is not None:
            await self.by("name-input").fill(name)
        if token is not None:
            await self.by("token-input").fill(token)
        await self.by("room-input").fill(room)
        await self.by("join-button").click()
        try:
            await self.page.wait_for_function(
                "() => window.roomdrop && window.roomdrop.user && window.roomdrop.room",
                timeout=15_000,
            )
        except Exception as e:
            raise AssertionError(
                f"{self.label}: the page did not join {room!r}: {await self.describe()}"
            ) from e
        state = await self.state()
        assert state is not None
        self.user, self.room = state["user"], state["room"]
        assert self.room == room, state
        if name is not None:
            assert self.user.startswith(f"{name}#"), state
        return self.user

    async def sees(self, user: str, timeout: float = 15.0) -> None:
        """Wait until the page lists ``user`` as a participant."""
        try:
            await expect(self.participant(user)).to_be_visible(timeout=timeout * 1000)
        except AssertionError as e:
            raise AssertionError(
                f"{self.label} does not show participant {user!r}: {await self.describe()}"
            ) from e
        await expect(self.participant(user)).to_have_text(re.compile(re.escape(user)))

    async def send(self, to: str, *paths: Path) -> str:
        """Pick ``to`` and offer ``paths``; the id of the (first) new transfer."""
        before = set(await self.transfer_ids())
        await self.participant(to).click()
        await self.by("file-input").set_input_files([str(p) for p in paths])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            new = [t for t in await self.transfer_ids() if t not in before]
            if new:
                return new[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.label}: no transfer appeared: {await self.describe()}")

    async def transfer_ids(self) -> list[str]:
        ids = await self.by("transfer").evaluate_all(
            "els => els.map(e => e.getAttribute('data-transfer-id'))"
        )
        return [i for i in ids if i]

    async def accept(self, timeout: float = 30.0) -> None:
        offer = self.by("offer").first
        await expect(offer).to_be_visible(timeout=timeout * 1000)
        await offer.get_by_test_id("offer-accept").click()

    async def reject(self, timeout: float = 30.0) -> None:
        offer = self.by("offer").first
        await expect(offer).to_be_visible(timeout=timeout * 1000)
        await offer.get_by_test_id("offer-reject").click()

    async def status(self, transfer_id: str) -> str:
        status = self.transfer(transfer_id).get_by_test_id("transfer-status")
        if not await status.count():
            return "<no transfer element>"
        return (await status.inner_text()).strip()

    async def transport(self, transfer_id: str) -> str:
        shown = self.transfer(transfer_id).get_by_test_id("transfer-transport")
        return (await shown.inner_text()).strip()

    async def progress(self, transfer_id: str) -> float:
        bar = self.transfer(transfer_id).get_by_test_id("transfer-progress")
        return float(await bar.evaluate("e => Number(e.value)"))

    async def wait_status(self, transfer_id: str, want: str, timeout: float = 60.0) -> None:
        """Wait until the transfer shows ``want``; fail at once on another end state."""
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = await self.status(transfer_id)
            if seen == want:
                return
            if seen in TERMINAL:
                break
            await asyncio.sleep(0.2)
        await self.harness.shot(self, f"status-{want}-not-reached")
        raise AssertionError(
            f"{self.label}: transfer {transfer_id} shows {seen!r}, wanted {want!r} "
            f"(within {timeout:g} s): {await self.describe()}"
        )

    async def wait_progress(
        self, transfer_id: str, at_least: float, timeout: float = 60.0
    ) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                value = await self.progress(transfer_id)
                if value >= at_least:
                    return value
            if await self.status(transfer_id) in TERMINAL:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{self.label}: transfer {transfer_id} did not reach {at_least} %: "
            f"{await self.describe()}"
        )

    async def save(
        self, transfer_id: str, dest: Path, filename: str | None = None, timeout: float = 60.0
    ) -> Path:
        """Click ``transfer-save`` once it is enabled and keep the download at ``dest``
        (``filename``: the name the download must suggest)."""
        button = self.transfer(transfer_id).get_by_test_id("transfer-save")
        try:
            await expect(button).to_be_enabled(timeout=timeout * 1000)
        except AssertionError as e:
            raise AssertionError(
                f"{self.label}: transfer-save not enabled: {await self.describe()}"
            ) from e
        async with self.page.expect_download(timeout=timeout * 1000) as info:
            await button.click()
        download = await info.value
        await download.save_as(dest)
        failure = await download.failure()
        assert failure is None, f"{self.label}: the download failed: {failure}"
        if filename is not None:
            assert download.suggested_filename == filename, download.suggested_filename
        return dest

    async def state(self) -> dict[str, Any] | None:
        result = await self.page.evaluate(STATE_JS)
        return None if result is None else dict(result)

    async def transfer_state(self, transfer_id: str) -> dict[str, Any]:
        state = await self.state()
        assert state is not None, f"{self.label}: no window.roomdrop"
        transfers = state["transfers"] or {}
        assert transfer_id in transfers, f"{self.label}: {transfer_id} not in {state}"
        return dict(transfers[transfer_id])

    async def messages(self) -> list[str]:
        return [m.strip() for m in await self.by("message").all_inner_texts()]

    async def describe(self) -> str:
        """What the page shows, for failure messages."""
        parts = [f"url={self.page.url}"]
        for what, get in (
            ("window.roomdrop", self.state),
            ("messages", self.messages),
            ("transfers", self._transfers_shown),
        ):
            try:
                parts.append(f"{what}={json.dumps(await get())}")
            except Exception as e:
                parts.append(f"{what}=<{type(e).__name__}: {e}>")
        return "; ".join(parts)

    async def _transfers_shown(self) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = await self.by("transfer").evaluate_all(
            """els => els.map(e => {
                 const q = (t) => e.querySelector(`[data-testid="${t}"]`);
                 return {id: e.getAttribute('data-transfer-id'),
                         status: q('transfer-status')?.textContent?.trim(),
                         transport: q('transfer-transport')?.textContent?.trim(),
                         progress: q('transfer-progress')?.value};
               })"""
        )
        return shown


@dataclass
class Harness:
    """A test's server, pages, CLI commands, console logs and screenshots."""

    request: pytest.FixtureRequest
    tmp_path: Path
    playwright: Playwright
    server: Server
    servers: list[Server]
    """Every server of the test: ``server`` first, then other instances sharing Redis."""
    env: dict[str, str]
    """The ROOMDROP_* settings the servers were started with (``restart`` uses them)."""
    pages: list[RoomPage] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        return f"Harness(server={self.server.url}, pages={self.pages})"

    def note(self, text: str) -> None:
        """A line for console.log in the artefacts (figures a passing test measured)."""
        self.log("test", text)

    @property
    def artifacts(self) -> Path:
        return artifact_dir(self.request.node.nodeid)

    def log(self, label: str, text: str) -> None:
        self.console.append(f"{time.monotonic() - self.started:8.2f} [{label}] {text}")

    async def open(
        self, label: str, viewport: ViewportSize | None = None, server: Server | None = None
    ) -> RoomPage:
        """A new Chromium with a fresh user-data-dir, on a blank page; it will load the
        room page from ``server`` (default: the harness's)."""
        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
        profile = self.tmp_path / f"chromium-{label}"
        context = await self.playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=viewport or DESKTOP,
            accept_downloads=True,
        )
        context.set_default_timeout(30_000)
        page = context.pages[0] if context.pages else await context.new_page()

        def on_console(message: ConsoleMessage) -> None:
            where = message.location or {}
            at = f" ({where.get('url')}:{where.get('lineNumber')})" if where.get("url") else ""
            self.log(label, f"{message.type}: {message.text}{at}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.log(label, f"pageerror: {error}"))
        page.on("crash", lambda _: self.log(label, "page crashed"))
        room_page = RoomPage(self, label, context, page, server or self.server)
        self.pages.append(room_page)
        return room_page

    async def guest(
        self,
        label: str,
        room: str,
        viewport: ViewportSize | None = None,
        server: Server | None = None,
    ) -> RoomPage:
        """A page signed in as a guest named like ``label`` and joined to ``room``."""
        page = await self.open(label, viewport, server)
        (name,) = names(label)
        await page.join(room, name=name)
        return page

    async def with_token(
        self, label: str, room: str, user: str, viewport: ViewportSize | None = None
    ) -> RoomPage:
        """A page joined to ``room`` as ``user`` with a token the test minted."""
        page = await self.open(label, viewport)
        await page.join(room, token=self.server.token(user, ttl=3600))
        assert page.user == user
        return page

    async def pair(
        self, room: str | None = None, servers: tuple[Server | None, Server | None] = (None, None)
    ) -> tuple[RoomPage, RoomPage]:
        """Two guest pages in a fresh room, each showing the other; each loaded from its
        server of ``servers`` (default: the harness's)."""
        if room is None:
            (room,) = names("room")
        a = await self.guest("alice", room, server=servers[0])
        b = await self.guest("bob", room, server=servers[1])
        await a.sees(b.user)
        await b.sees(a.user)
        return a, b

    async def restart(self, server: Server) -> Server:
        """Start ``server`` (stopped or killed by the test) again on its port, with its
        secret, settings, data directory and log: the new one takes its place in
        ``servers`` (and ``server``), and pages loaded from it talk to the new one."""
        assert server.process.poll() is not None, f"port {server.port}: still running"
        again = await asyncio.to_thread(
            launch, server.log_path.parent, self.env, port=server.port, secret=server.secret
        )
        self.servers[self.servers.index(server)] = again
        if self.server is server:
            self.server = again
        for page in self.pages:
            if page.server is server:
                page.server = again
        return again

    def room(self, name: str, sender: str, receiver: str) -> Room:
        """CLI commands in ``name``: ``sender`` sends (``Room.send``), ``receiver`` receives."""
        return Room(self.server, name, sender, receiver, self.tmp_path, self.commands)

    async def shot(self, page: RoomPage, name: str) -> Path:
        """A screenshot of ``page`` under tmp_path, copied to test-artifacts/."""
        path = self.tmp_path / "screenshots" / f"{len(self.shots):02d}-{page.label}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        await page.page.screenshot(path=str(path))
        self.artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, self.artifacts / path.name)
        self.shots.append(path)
        return path

    async def close(self, failed: bool) -> None:
        for page in self.pages:
            if failed:
                with contextlib.suppress(Exception):
                    await self.shot(page, "at-failure")
            with contextlib.suppress(Exception):
                await page.context.close()
        for command in self.commands:
            command.kill()
            if command.process.stdin:
                command.process.stdin.close()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (self.artifacts / "console.log").write_text("\n".join(self.console) + "\n")
        (self.tmp_path / "console.log").write_text("\n".join(self.console) + "\n")


async def page_key(page: RoomPage) -> str:
    """The device public key ``page`` published when it joined (43 characters)."""
    key = await page.page.evaluate("() => window.roomdrop._state.keyring.device.publicText")
    assert isinstance(key, str) and len(key) == 43, key
    return key


async def assert_in_viewport(page: RoomPage, transfer_id: str) -> None:
    """The transfer element and its progress bar are visible and wholly inside the
    viewport (no scrolling needed, nothing cut off at the sides)."""
    size = page.page.viewport_size
    assert size is not None
    for what, loc in (
        ("transfer", page.transfer(transfer_id)),
        ("transfer-progress", page.transfer(transfer_id).get_by_test_id("transfer-progress")),
    ):
        await expect(loc).to_be_visible()
        box = await loc.bounding_box()
        assert box is not None, f"{page.label}: {what} has no box"
        assert box["width"] > 0 and box["height"] > 0, (what, box)
        inside = (
            box["x"] >= 0
            and box["y"] >= 0
            and box["x"] + box["width"] <= size["width"] + 0.5
            and box["y"] + box["height"] <= size["height"] + 0.5
        )
        assert inside, f"{page.label}: {what} at {box} is not inside the {size} viewport"
