"""Fixtures of the browser tests: the real room page (``GET /`` of a real ``roomdrop
serve`` on 127.0.0.1) in real headless Chromium (Debian's ``/usr/bin/chromium``, driven
by Playwright), and the real CLI commands beside it.

* These tests change the network of the namespace they run in (a veth pair for
  browser-to-browser WebRTC: two Chromium peers gather no ICE candidates when the
  namespace has only ``lo``), so every test first
  asserts that it runs in a private, loopback-only network namespace (``scripts/test``
  runs pytest under ``unshare --net``) and fails loudly otherwise.
* ``rd`` is the harness: a server of the test's own and pages on it, each page a Chromium
  of its own with a fresh user-data-dir. Every page's console (and page errors) is
  captured and added to the report of a failing test, with the server's log and the
  output of the CLI commands; screenshots go to the test's ``tmp_path`` and are copied to
  ``test-artifacts/<test>/`` at the repository root, where a failing test also leaves a
  screenshot of every page.
* A test that passed still fails (at teardown) when a page threw an uncaught error or the
  server logged an error.
* ``veth`` creates the pair (inside the test's namespace only) and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pagetools import (
    FAILED,
    HARNESS,
    LOG_TAIL,
    VETH,
    Harness,
    artifact_dir,
    assert_private_namespace,
    interfaces,
    ip,
)
from playwright.async_api import async_playwright

from redistools import RedisServer
from server.conftest import Server, launch

# --- the namespace -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _private_namespace() -> None:
    assert_private_namespace(set())


@pytest.fixture
def veth(_private_namespace: None) -> Iterator[None]:
    """A veth pair with private test addresses and a default route, inside this test's
    namespace: two Chromium peers gather no ICE candidates with only ``lo``."""
    assert_private_namespace(set())
    try:
        ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for link in VETH:  # no IPv6 addresses arriving later (after DAD) to look like a
            ipv6 = Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6")  # network change
            if ipv6.exists():
                ipv6.write_text("1")
        ip("addr", "add", "10.213.0.1/24", "dev", "v0")
        ip("addr", "add", "10.213.0.2/24", "dev", "v1")
        ip("link", "set", "v0", "up")
        ip("link", "set", "v1", "up")
        ip("route", "add", "default", "via", "10.213.0.2", "dev", "v0")
        assert_private_namespace(set(VETH))
        yield
    finally:
        if "v0" in interfaces():
            ip("link", "del", "v0")  # takes v1, the addresses and the route with it
    assert interfaces() == {"lo"}, f"the veth pair is still there: {interfaces()}"


# --- reporting and the harness -----------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    harness = item.stash.get(HARNESS, None)
    if report.failed and harness is not None:
        item.stash[FAILED] = True
        report.sections.append(
            ("browser console (every page)", "\n".join(harness.console[-400:]) or "(nothing)")
        )
        for server in harness.servers:
            text = server.log()
            # what went wrong first, in case the tail below gets cut where it is read
            loud = [line for line in text.splitlines() if '"level": "info"' not in line]
            if loud:
                section = f"roomdrop serve on port {server.port}: all but its info lines"
                report.sections.append((section, "\n".join(loud[-60:])))
            if len(text) > LOG_TAIL:
                text = "...\n" + text[-LOG_TAIL:]
            report.sections.append((f"roomdrop serve on port {server.port} (stderr)", text))
        for command in harness.commands:
            report.sections.append((f"roomdrop {command.name}", command.report()))
        report.sections.append(
            (
                "screenshots",
                "\n".join(str(p) for p in harness.shots)
                + f"\n(a screenshot of every page at the failure: {harness.artifacts}/"
                "*-at-failure.png)",
            )
        )
    return report


@pytest.fixture
def rd_env() -> dict[str, str]:
    """ROOMDROP_* settings of ``rd``'s server (none: the defaults); a module may override
    it (``ROOMDROP_REQUIRE_SCAN``, say)."""
    return {}


@pytest.fixture
async def rd(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _private_namespace: None,
    rd_env: dict[str, str],
) -> AsyncIterator[Harness]:
    """The harness, with a server of the test's own (in-memory state, ``rd_env``)."""
    server = await asyncio.to_thread(launch, tmp_path / "serve", rd_env)
    async for harness in _harness(request, tmp_path, [server], rd_env):
        yield harness


@pytest.fixture
async def rd_instances(
    request: pytest.FixtureRequest, tmp_path: Path, _private_namespace: None
) -> AsyncIterator[Harness]:
    """The harness, with two instances of one deployment sharing the session's
    redis-server (one secret, one key prefix): ``rd.server`` and ``rd.servers[1]``."""
    redis: RedisServer = request.getfixturevalue("redis_server")
    env = {"ROOMDROP_REDIS_URL": redis.url, "ROOMDROP_REDIS_PREFIX": redis.prefix()}
    secret = secrets.token_urlsafe(32)
    servers = []
    for n in range(2):
        base = tmp_path / f"instance{n}"
        servers.append(await asyncio.to_thread(launch, base, env, secret=secret))
    async for harness in _harness(request, tmp_path, servers, env):
        yield harness


async def _harness(
    request: pytest.FixtureRequest, tmp_path: Path, servers: list[Server], env: dict[str, str]
) -> AsyncIterator[Harness]:
    """A harness on ``servers`` (the first is ``harness.server``), all started with
    ``env``; at the end every page is closed, every server stopped (``servers`` as it is
    then: a server the test restarted is in it) and its log checked."""
    shutil.rmtree(artifact_dir(request.node.nodeid), ignore_errors=True)
    try:
        async with async_playwright() as playwright:
            harness = Harness(request, tmp_path, playwright, servers[0], servers, env)
            request.node.stash[HARNESS] = harness
            try:
                yield harness
            finally:
                await harness.close(request.node.stash.get(FAILED, False))
    finally:
        complaints = [c for server in servers if (c := server.stop())]
    if complaints:
        pytest.fail("\n".join(complaints) + "".join(f"\n{s.log()}" for s in servers))
    if not request.node.stash.get(FAILED, False):
        # An uncaught error in a page, or an error a server logged, is a bug even when
        # the test did not notice it.
        problems = [line for line in harness.console if "] pageerror: " in line]
        problems += [
            line
            for server in servers
            for line in server.log().splitlines()
            if '"level": "error"' in line or '"level": "critical"' in line
        ]
        if problems:
            pytest.fail("uncaught page errors or server errors:\n" + "\n".join(problems))
