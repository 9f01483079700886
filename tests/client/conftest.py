"""Fixtures of the end-to-end tests (helpers in :mod:`clitools`): servers of the test's
own and a fresh room on one; every command a test started is killed when it ends, and
the output of each is added to the report of a failing test; one real clamd for the
session's tests of the receiver's malware scan (:mod:`clamdtools`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

# server/conftest.py imports its helpers as top-level modules (e2etools), which works only
# when pytest collected tests/server too: make them importable when tests/client runs alone
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "server"))

import pytest
from clitools import Command, Room

from clamdtools import Clamd, start_clamd
from server.conftest import Server, launch, names

COMMANDS = pytest.StashKey[list[Command]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for command in item.stash.get(COMMANDS, []):
            report.sections.append((f"roomdrop {command.name}", command.report()))
    return report


@pytest.fixture(autouse=True)
def _config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands a test starts without a ``ROOMDROP_CONFIG_DIR`` of their own keep their
    device key under the test's directory, never in the real ``~/.config``."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        await server.close_clients()
        server.stopped_by_test = True
        server.stop()


@pytest.fixture
def start(
    request: pytest.FixtureRequest, tmp_path: Path, servers: list[Server]
) -> Callable[..., Any]:
    """``await start(**env)``: a server of the test's own; ``await start(again=server)``
    starts one where ``server`` stood (same port, secret and data directory).
    ``await start(name="b", secret=a.secret)``: another instance beside ``a`` (its own
    port and data directory under ``name``, ``a``'s secret: the same tokens work);
    ``port=`` puts it on a port chosen beforehand (``free_port()``), e.g. one a command
    was told of before anything listened there."""

    async def start_server(
        again: Server | None = None,
        *,
        name: str = "serve",
        secret: str | None = None,
        port: int | None = None,
        **env: str,
    ) -> Server:
        if again is not None:
            base = again.data_dir.parent
            server = await asyncio.to_thread(
                launch, base, env, port=again.port, secret=again.secret
            )
        else:
            server = await asyncio.to_thread(launch, tmp_path / name, env, port=port, secret=secret)
        servers.append(server)
        return server

    return start_server


@pytest.fixture
async def room_on(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Room]]:
    """``room_on(server)``: a fresh room with two fresh users; commands are killed at the end.
    ``room_on(server, server_args=[...])``: its commands get those arguments instead of
    ``--server server.url``."""
    started: list[Command] = []
    request.node.stash[COMMANDS] = started

    def make(server: Server, server_args: list[str] | None = None) -> Room:
        room, alice, bob = names("room", "alice", "bob")
        return Room(server, room, alice, bob, tmp_path, started, server_args)

    yield make
    for command in started:
        command.kill()
        command.process.stdin and command.process.stdin.close()


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """A clamd with the test signatures (:mod:`clamdtools`), on a unix socket and a TCP
    port of 127.0.0.1, for the whole session; stopped at the end. A test that needs one
    it can stop starts its own (``start_clamd``)."""
    server = start_clamd(tmp_path_factory.mktemp("clamd"))
    yield server
    server.stop()
