"""End-to-end helpers: a real ``roomdrop serve`` and the real ``roomdrop send`` and
``roomdrop receive`` commands as subprocesses, all on 127.0.0.1.

Every command runs with ``--json`` (one object per line on stdout), ICE pinned to
127.0.0.1 (``ROOMDROP_ICE_HOSTS``) and the server's empty ICE server list (no STUN).
A command's stdout and stderr go to files, shown in the report of a failing test; a
command still running when its test ends is killed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.conftest import Server

MB = 1_000_000


@dataclass
class Command:
    """A running ``roomdrop send`` or ``roomdrop receive``."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started: float = field(default_factory=time.monotonic)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == kind]

    def result(self) -> dict[str, Any]:
        results = self.events("result")
        assert results, f"{self.name} printed no result line:\n{self.report()}"
        return results[-1]

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def report(self) -> str:
        out = self.stdout.read_text(errors="replace").splitlines()
        # the lines that say what happened, which a tail of progress lines can bury
        said = [line for line in out if '"event":"progress"' not in line]
        return (
            f"$ roomdrop {' '.join(self.args)}\n--- stdout but progress (tail)\n"
            + "\n".join(said[-30:])
            + "\n--- stdout (tail)\n"
            f"{self.stdout.read_text(errors='replace')[-4000:]}\n--- stderr (tail)\n"
            f"{self.err()[-4000:]}"
        )

    async def wait(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} still running after {timeout:g} s:\n{self.report()}"
                )
            await asyncio.sleep(0.05)
        return self.process.returncode

    async def wait_for(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 60.0
    ) -> dict[str, Any]:
        """The first line ``check`` accepts, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                if check(line):
                    return line
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no such line:\n{self.report()}")
            await asyncio.sleep(0.02)

    async def progress_at_least(self, percent: float, timeout: float = 60.0) -> dict[str, Any]:
        return await self.wait_for(
            lambda line: line.get("event") == "progress" and line["progress_percent"] >= percent,
            timeout,
        )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Room:
    """A room on ``server`` with ``alice`` (sends) and ``bob`` (receives).

    Commands get ``--server`` and ``server.url`` unless ``server_args`` (of the room, or
    of one command) says otherwise, e.g. ``["--server", "http://a,http://b"]``, or
    ``[]`` with ``ROOMDROP_SERVER`` in the command's ``env``. Tokens are signed with
    ``server``'s secret."""

    server: Server
    name: str
    alice: str
    bob: str
    base: Path
    started: list[Command]
    server_args: list[str] | None = None

    def _run(
        self,
        user: str,
        args: list[str],
        env: dict[str, str] | None,
        json: bool = True,
        server_args: list[str] | None = None,
    ) -> Command:
        n = len(self.started)
        name = f"{args[0]}-{n}"
        stdout, stderr = self.base / f"{name}.out", self.base / f"{name}.err"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
        environ.update(
            {
                "ROOMDROP_ICE_HOSTS": "127.0.0.1",
                "ROOMDROP_CONFIG_DIR": str(self.config_dir(user)),
                **(env or {}),
            }
        )
        if server_args is None:
            server_args = self.server_args
        if server_args is None:
            server_args = ["--server", self.server.url]
        full = [
            *args,
            *server_args,
            "--room",
            self.name,
            "--token",
            self.server.token(user, ttl=3600),
            *(["--json"] if json else []),
        ]
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "roomdrop.cli", *full],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env=environ,
                cwd=self.base,
            )
        command = Command(name, args, process, stdout, stderr)
        self.started.append(command)
        return command

    def config_dir(self, user: str) -> Path:
        """Where ``user``'s commands keep their device key and trusted keys (each user of
        the test has one of its own: ``ROOMDROP_CONFIG_DIR``)."""
        return self.base / "config" / user

    def send(
        self,
        *paths: Path,
        transport: str = "auto",
        env: dict[str, str] | None = None,
        json: bool = True,
        server_args: list[str] | None = None,
        extra: Sequence[str] = (),
        to: str | None = None,
    ) -> Command:
        """``to``: the ``--to`` value (``bob`` by default)."""
        to = self.bob if to is None else to
        args = ["send", *map(str, paths), "--to", to, "--transport", transport, *extra]
        return self._run(self.alice, args, env, json, server_args)

    def kept(self, user: str, *args: str) -> Command:
        """``roomdrop kept ARGS`` as ``user``, in this room (``--room``)."""
        return self._run(user, ["kept", *args], None)

    def receive(
        self,
        out: Path,
        *,
        count: int | None = 1,
        yes: bool = True,
        env: dict[str, str] | None = None,
        server_args: list[str] | None = None,
        extra: Sequence[str] = (),
        user: str | None = None,
    ) -> Command:
        """``user``: who receives (``bob`` by default)."""
        args = ["receive", "--out", str(out), *extra]
        if count is not None:
            args += ["--count", str(count)]
        if yes:
            args.append("--yes")
        return self._run(self.bob if user is None else user, args, env, server_args=server_args)

    async def joined(self, command: Command, timeout: float = 30.0) -> None:
        """Wait until ``command`` says it joined the room."""
        await command.wait_for(
            lambda line: line.get("event") == "note" and line["message"].startswith("joined room"),
            timeout,
        )


def write_random(path: Path, size: int) -> str:
    """A file of ``size`` random bytes; its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * 1024 * 1024))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
