"""Fixtures for integration tests against a real ``roomdrop serve`` process.

Every server here is the real command (``python -m roomdrop.cli serve``) under uvicorn on
127.0.0.1, on a free port picked beforehand, with its own data directory and a random
``ROOMDROP_SECRET``; tokens are signed with the same secret. Clients are real WebSockets
(``websockets``, no compression) and httpx.

* ``server`` — one default server per test module (override ``server_env`` in a module to
  configure it), shared by that module's tests, which therefore use fresh room and user
  names (:func:`names`).
* ``start_server`` — a factory: ``await start_server(ROOMDROP_MAX_FILE_SIZE="1000")``
  starts a server of the test's own.

Both run every test twice, once per backend (``backend``): ``memory`` (the default, state
in the server process) and ``redis`` (``ROOMDROP_REDIS_URL`` to the session's real
redis-server, a key prefix per server): one behaviour, two implementations.

A server's stderr goes to a file and is added to the report of a test that fails; a
server that does not exit within 10 s of SIGTERM fails the test. Every client a test opens
through :meth:`Server.connect` is closed when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from redistools import RedisServer
from roomdrop.server.auth import TokenAuthority
from server.e2etools import offer_fields, public, sealed_offer

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
RECV_TIMEOUT = 5.0
SERVERS = pytest.StashKey[list["Server"]]()
FAILED = pytest.StashKey[bool]()
T = TypeVar("T")
LOG_TAIL = 20_000
CHUNK = 64 * 1024
OWN_KEY = "<own>"
"""``Server.connect(key=OWN_KEY)``: publish the user's own device key (the default)."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def names(*roles: str) -> list[str]:
    """Fresh ids (room or user names) for ``roles``, unique to this call."""
    tag = uuid.uuid4().hex[:10]
    return [f"{role}-{tag}" for role in roles]


class Client:
    """One participant: a real WebSocket joined to ``room`` as ``user``."""

    def __init__(self, ws: ClientConnection, room: str, user: str, e2e: bool = True) -> None:
        self.ws = ws
        self.room = room
        self.user = user
        self.e2e = e2e
        """Whether :meth:`offer` seals by default: its server's ROOMDROP_REQUIRE_E2E."""
        self.skipped: list[str | bytes] = []
        """What :meth:`recv` passed over while waiting (for failure messages)."""

    def __repr__(self) -> str:
        return f"Client({self.user!r} in {self.room!r})"

    async def send(self, type: str, payload: dict[str, Any] | None = None, **envelope: Any) -> None:
        await self.ws.send(json.dumps({"type": type, "payload": payload or {}, **envelope}))

    @staticmethod
    def offer_payload(receiver: str, **fields: Any) -> dict[str, Any]:
        """A valid clear ``file-share-offer`` payload (``total_chunks`` computed; fields
        as :func:`e2etools.offer_fields`)."""
        return offer_fields(receiver, **fields)

    def sealed_payload(self, receiver: str, **fields: Any) -> dict[str, Any]:
        """A valid end-to-end ``file-share-offer`` payload from this user: a content
        key sealed to ``receiver``'s device key (:func:`e2etools.sealed_offer`)."""
        return sealed_offer(self.user, receiver, **fields)

    async def offer(self, receiver: str, *, e2e: bool | None = None, **fields: Any) -> str:
        """Send a ``file-share-offer``, end to end if ``e2e`` (default: if the server
        requires it; fields as :func:`e2etools.offer_fields`); its id."""
        sealed = self.e2e if e2e is None else e2e
        payload = (
            self.sealed_payload(receiver, **fields)
            if sealed
            else self.offer_payload(receiver, **fields)
        )
        await self.send("file-share-offer", payload)
        return str(payload["transfer_id"])

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, type: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next JSON message of ``type``, passing over binary frames and other types."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                seen = [m if isinstance(m, str) else f"<{len(m)} bytes>" for m in self.skipped]
                raise AssertionError(
                    f"{self.user} got no {type!r} within {timeout} s; it got: {seen[-10:]}"
                ) from None
            if isinstance(raw, bytes):
                self.skipped.append(raw)
                continue
            message = json.loads(raw)
            if message.get("type") == type:
                return dict(message)
            self.skipped.append(raw)

    async def recv_refusal(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next ``error`` or ``file-share-error`` (protocol.md §8: either may carry a
        refusal); other messages and frames are passed over."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                raise AssertionError(
                    f"{self.user} got no error within {timeout} s; it got: {self.skipped[-10:]}"
                ) from None
            if isinstance(raw, str):
                message = json.loads(raw)
                if message.get("type") in ("error", "file-share-error"):
                    return dict(message)
            self.skipped.append(raw)

    async def recv_frame(self, timeout: float = RECV_TIMEOUT) -> bytes:
        """The next binary frame, passing over JSON messages."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                raise AssertionError(
                    f"{self.user} got no binary frame within {timeout} s; it got: "
                    f"{self.skipped[-10:]}"
                ) from None
            if isinstance(raw, bytes):
                return raw
            self.skipped.append(raw)

    async def silent(self, within: float = 0.5, ignore: tuple[str, ...] = ()) -> None:
        """Assert that nothing (no text, no frame) arrives within ``within`` seconds,
        apart from JSON messages whose type is in ``ignore``."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                return
            if isinstance(raw, str) and json.loads(raw).get("type") in ignore:
                continue
            shown = raw if isinstance(raw, str) else f"<{len(raw)}-byte frame>"
            raise AssertionError(f"{self.user} should have received nothing, got {shown}")

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await self.ws.close()

    def drop(self) -> None:
        """Abort the TCP connection, no closing handshake: a peer that vanished (and a
        quick end for a test whose clients stopped reading)."""
        self.ws.transport.abort()


@dataclass
class Server:
    """A running ``roomdrop serve``."""

    port: int
    data_dir: Path
    log_path: Path
    secret: str
    process: subprocess.Popen[bytes]
    clients: list[Client] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    stopped_by_test: bool = False
    """Set by a test that stops the server itself (then its exit is no complaint)."""
    require_e2e: bool = True
    """Its ROOMDROP_REQUIRE_E2E: a module about something else than encryption may turn
    it off (``e2e_env``) and then offer and relay in the clear."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authority(self) -> TokenAuthority:
        return TokenAuthority(self.secret)

    def token(self, user: str, ttl: int = 600) -> str:
        return self.authority.issue(user, ttl)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def http(self) -> httpx.AsyncClient:
        """An httpx client for this server (use it in ``async with``)."""
        return httpx.AsyncClient(base_url=self.url, timeout=10.0)

    def ws_url(self, room: str, token: str | None, key: str | None = None) -> str:
        query = [f"token={token}"] if token is not None else []
        if key is not None:
            query.append(f"key={key}")
        tail = "?" + "&".join(query) if query else ""
        return f"ws://127.0.0.1:{self.port}/webrtc/ws/{room}{tail}"

    async def open_ws(
        self, room: str, token: str | None, key: str | None = None
    ) -> ClientConnection:
        """A bare WebSocket (closed by the caller), for tests of the handshake itself."""
        return await connect(
            self.ws_url(room, token, key),
            compression=None,
            max_size=4 * 1024 * 1024,
            open_timeout=5,
        )

    async def connect(
        self, room: str, user: str, *, room_state: bool = True, key: str | None = OWN_KEY
    ) -> Client:
        """Join ``room`` as ``user``, publishing ``key`` (by default the user's own
        device key, :func:`e2etools.public`; None: no key); by default wait for (and
        drop) the ``room-state`` that greets every newcomer, so the join is complete
        when this returns."""
        published = public(user) if key == OWN_KEY else key
        ws = await self.open_ws(room, self.token(user), published)
        client = Client(ws, room, user, e2e=self.require_e2e)
        self.clients.append(client)
        if room_state:
            state = await client.recv("room-state")
            assert user in state["payload"]["participants"], state
        return client

    async def pair(self, room: str, sender: str, receiver: str) -> tuple[Client, Client]:
        """Two participants of ``room``, each having seen the other join."""
        a = await self.connect(room, sender)
        b = await self.connect(room, receiver)
        await a.recv("user-joined")
        return a, b

    async def request(
        self, user: str | None, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """One REST request as ``user`` (None: without a token)."""
        headers = self.headers(user) if user is not None else {}
        async with self.http() as http:
            return await http.request(method, path, headers=headers, **kwargs)

    async def transfer(self, room: str, user: str, transfer_id: str) -> dict[str, Any]:
        """The transfer object, as ``user`` reads it over REST."""
        path = f"/webrtc/rooms/{room}/file-transfer/{transfer_id}/progress"
        response = await self.request(user, "GET", path)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``work`` beside the test; cancelled when the test ends, if still running."""
        task = asyncio.create_task(work)
        self.tasks.append(task)
        return task

    async def close_clients(self) -> None:
        """Cancel the test's background work, then close its clients."""
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        clients, self.clients = self.clients, []
        await asyncio.gather(*(c.close() for c in clients))

    def rss_bytes(self) -> int:
        """The server process's resident set size (VmRSS)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc/<pid>/status")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL, and wait for it: no goodbye, every socket reset (the test's doing, so
        its exit is no complaint)."""
        self.stopped_by_test = True
        self.process.kill()
        self.process.wait()

    def stop(self) -> str | None:
        """SIGTERM and wait; a complaint if it does not exit in time, else None."""
        if self.process.poll() is not None:
            if self.stopped_by_test:
                return None
            return f"roomdrop serve had already exited with {self.process.returncode}"
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return f"roomdrop serve did not exit within {STOP_TIMEOUT:g} s of SIGTERM"
        return None


def launch(
    base: Path, env: dict[str, str], *, port: int | None = None, secret: str | None = None
) -> Server:
    """Start ``roomdrop serve`` with ``env`` on top of a clean ROOMDROP_* environment and
    wait until /healthz answers 200. ``port`` and ``secret`` (default: a free port, a new
    secret) let a test start a server again where an earlier one stood."""
    base.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    data_dir = base / "data"
    log_path = base / "server.stderr"
    secret = secret or secrets.token_urlsafe(32)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    environ.update({"ROOMDROP_SECRET": secret, **env})
    if "ROOMDROP_REDIS_URL" in environ:  # a namespace of its own unless told to share one
        environ.setdefault("ROOMDROP_REDIS_PREFIX", f"t{uuid.uuid4().hex[:12]}")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "roomdrop.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    server = Server(port, data_dir, log_path, secret, process)
    server.require_e2e = environ.get("ROOMDROP_REQUIRE_E2E", "true").lower() not in (
        "0",
        "false",
        "no",
        "off",
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(base_url=server.url, timeout=1.0) as http:
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"roomdrop serve exited with {process.returncode} at start:\n{server.log()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if http.get("/healthz").status_code == 200:
                    return server
            if time.monotonic() > deadline:
                complaint = server.stop()
                raise AssertionError(
                    f"/healthz did not answer 200 within {STARTUP_TIMEOUT:g} s ({complaint}):\n"
                    f"{server.log()}"
                )
            time.sleep(0.05)


# --- reporting -------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
        for server in item.stash.get(SERVERS, []):
            text = server.log()
            if len(text) > LOG_TAIL:
                text = "...\n" + text[-LOG_TAIL:]
            report.sections.append((f"roomdrop serve on port {server.port} (stderr)", text))
    return report


def _watch(request: pytest.FixtureRequest, server: Server) -> None:
    request.node.stash.setdefault(SERVERS, []).append(server)


def _check_errors(request: pytest.FixtureRequest, server: Server, since: int) -> None:
    """Fail a test (that has not failed already) during which the server logged an error:
    a crashed handler or task is a bug even when the test did not notice it."""
    if request.node.stash.get(FAILED, False):
        return  # the log is in its report already
    errors = [
        line
        for line in server.log()[since:].splitlines()
        if '"level": "error"' in line or '"level": "critical"' in line
    ]
    if errors:
        pytest.fail(
            f"roomdrop serve on port {server.port} logged {len(errors)} error(s):\n"
            + "\n".join(line.replace("\\n", "\n") for line in errors)
        )


# --- fixtures --------------------------------------------------------------------------


BACKENDS = ["memory", "redis"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which backend the module's servers keep their state in."""
    return str(request.param)


@pytest.fixture(scope="module")
def backend_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The ROOMDROP_* settings that select ``backend``."""
    if backend == "memory":
        return {}
    redis: RedisServer = request.getfixturevalue("redis_server")
    return {"ROOMDROP_REDIS_URL": redis.url}


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """ROOMDROP_* settings of the module's shared server; override in a module."""
    return {}


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    """ROOMDROP_REQUIRE_E2E for every server of the module (shared, own, deployments):
    the default settings, unless a module about the clear path (the server's own
    checksums and MIME sniffing, which only exist there) or about something else entirely
    overrides it with ``{"ROOMDROP_REQUIRE_E2E": "false"}``; its clients then offer in
    the clear by default (:attr:`Server.require_e2e`)."""
    return {}


@pytest.fixture(scope="module")
def _shared_server(
    server_env: dict[str, str],
    backend_env: dict[str, str],
    e2e_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    server = launch(
        tmp_path_factory.mktemp("roomdrop-serve"), {**backend_env, **e2e_env, **server_env}
    )
    yield server
    complaint = server.stop()
    if complaint:
        pytest.fail(f"{complaint}\n{server.log()}")


@pytest.fixture
async def server(request: pytest.FixtureRequest, _shared_server: Server) -> AsyncIterator[Server]:
    """The module's shared server; this test's clients are closed when it ends."""
    assert _shared_server.process.poll() is None, "the shared server has died:\n" + (
        _shared_server.log()
    )
    _watch(request, _shared_server)
    since = len(_shared_server.log())
    yield _shared_server
    await _shared_server.close_clients()
    await asyncio.sleep(0.05)  # let the server log what the closing did
    _check_errors(request, _shared_server, since)


@pytest.fixture
def _own_servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    complaints = [c for s in started if (c := s.stop())]
    if complaints:
        pytest.fail("\n".join(complaints))


@pytest.fixture
async def start_server(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _own_servers: list[Server],
    backend_env: dict[str, str],
    e2e_env: dict[str, str],
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_server(ROOMDROP_X="...")``: a server of this test's own (on the
    module's backend)."""

    async def start(**env: str) -> Server:
        base = tmp_path / f"serve{len(_own_servers)}"
        server = await asyncio.to_thread(launch, base, {**backend_env, **e2e_env, **env})
        _own_servers.append(server)
        _watch(request, server)
        return server

    yield start
    for server in _own_servers:
        await server.close_clients()
    await asyncio.sleep(0.05)
    for server in _own_servers:
        _check_errors(request, server, 0)


# --- several instances sharing Redis ---------------------------------------------------


class Deployment:
    """Instances of one deployment: one secret, one Redis, one key prefix."""

    def __init__(self, request: pytest.FixtureRequest, base: Path, redis: RedisServer) -> None:
        self.request, self.base, self.redis = request, base, redis
        self.prefix = redis.prefix()
        self.secret = secrets.token_urlsafe(32)
        self.started: list[Server] = []

    async def start(self, n: int = 2, **env: str) -> list[Server]:
        """``n`` more instances, with ``env`` on top of the shared settings."""
        shared = {
            "ROOMDROP_REDIS_URL": self.redis.url,
            "ROOMDROP_REDIS_PREFIX": self.prefix,
            **self.request.getfixturevalue("e2e_env"),
        }
        servers = []
        for _ in range(n):
            base = self.base / f"instance{len(self.started)}"
            server = await asyncio.to_thread(launch, base, {**shared, **env}, secret=self.secret)
            self.started.append(server)
            _watch(self.request, server)
            servers.append(server)
        return servers

    def key(self, *parts: str) -> str:
        """A key of this deployment in Redis."""
        return ":".join((self.prefix, *parts))


@pytest.fixture
async def deployments(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[RedisServer | None], Deployment]]:
    """``deployments()``: a deployment on the session's Redis; ``deployments(redis)`` on
    another one. Every instance is stopped, and its log checked for errors, at the end."""
    made: list[Deployment] = []

    def make(redis: RedisServer | None = None) -> Deployment:
        redis = redis or request.getfixturevalue("redis_server")
        deployment = Deployment(request, tmp_path / f"deployment{len(made)}", redis)
        made.append(deployment)
        return deployment

    yield make
    started = [server for deployment in made for server in deployment.started]
    for server in started:
        await server.close_clients()
    await asyncio.sleep(0.05)
    complaints = [c for s in started if (c := s.stop())]
    for server in started:
        _check_errors(request, server, 0)
    if complaints:
        pytest.fail("\n".join(complaints))


@pytest.fixture
def deployment(deployments: Callable[[RedisServer | None], Deployment]) -> Deployment:
    """Instances sharing the session's Redis: ``await deployment.start(2)``."""
    return deployments(None)
