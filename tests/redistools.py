"""A real ``redis-server`` (Debian's package) for the tests of the shared backend.

Started on a free port of 127.0.0.1 inside the test namespace, with nothing persisted
(``--save '' --appendonly no``), and stopped when the session ends. ``.ci/run`` and
``scripts/test`` install it; a machine without it fails these tests with a message
saying so, it does not skip them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis

STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def prefix() -> str:
        """A key namespace no other server of the session uses."""
        return f"t{uuid.uuid4().hex[:12]}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(base: Path, port: int | None = None) -> RedisServer:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: .ci/run and scripts/test install it (apt redis-server)"
    base.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = base / "redis.log"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
            "--logfile",
            str(log_path),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            with server.client() as client:
                if client.ping():
                    return server
        except redis.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            log = log_path.read_text() if log_path.exists() else ""
            raise AssertionError(f"redis-server did not start:\n{log}")
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def frozen_unsubscribed(
    server: RedisServer, pid: int, timeout: float = 10.0
) -> AsyncIterator[Callable[[str], Awaitable[None]]]:
    """The roomdrop instance ``pid`` frozen (SIGSTOP) while Redis drops every
    subscription, its own among them: what is published for its participants meanwhile
    reaches no one there. Yields ``published(text)``, which waits until a publication
    containing ``text`` has gone out (seen by a subscriber of the test's own, made after
    the drop), so that the instance runs again (SIGCONT, on leaving the block) only once
    the message it is to miss is gone for good."""
    client = server.client()
    os.kill(pid, signal.SIGSTOP)
    watcher = client.pubsub()
    try:
        killed = client.client_kill_filter(_type="pubsub")
        assert killed >= 2, f"Redis dropped {killed} subscription(s), not every instance's"
        watcher.psubscribe("*")

        def wait_for(text: str) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = watcher.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message is not None and text.encode() in message["data"]:
                    return
            raise AssertionError(f"nothing containing {text!r} was published in {timeout} s")

        async def published(text: str) -> None:
            await asyncio.to_thread(wait_for, text)

        yield published
    finally:
        os.kill(pid, signal.SIGCONT)
        watcher.close()
        client.close()
