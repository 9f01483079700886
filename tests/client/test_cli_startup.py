"""What a command imports: ``roomdrop --version`` and ``--help`` load none of the heavy
libraries, and ``send`` / ``receive`` none of the server's. Checked from the
interpreter's own record of every import (``-X importtime``,
``PYTHONPROFILEIMPORTTIME``), not by timing, so load on the machine cannot change it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clitools import Room, write_random

HEAVY = {"rich", "httpx", "aiortc", "pydantic", "pydantic_core", "fastapi", "uvloop"}
HEAVY |= {"cryptography", "jwt", "websockets", "starlette", "uvicorn", "redis"}
SERVER_ONLY = {"fastapi", "uvicorn", "starlette", "prometheus_client", "redis"}
CONSOLE_SCRIPT = Path(sys.executable).with_name("roomdrop")


def imported(stderr: str) -> set[str]:
    """The top-level packages ``-X importtime`` says were imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name.split(".")[0])
    return names


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "roomdrop.cli", "--version"],
        [str(CONSOLE_SCRIPT), "--version"],
        [sys.executable, "-m", "roomdrop.cli", "send", "--help"],
        [sys.executable, "-m", "roomdrop.cli", "receive", "--help"],
        [sys.executable, "-c", "import roomdrop; print(roomdrop.__version__)"],
        [sys.executable, "-c", "import roomdrop.client.scans; print(roomdrop.__version__)"],
    ],
    ids=["version", "console-script-version", "send-help", "receive-help", "import", "scans"],
)
def test_version_and_help_import_no_heavy_library(argv: list[str]) -> None:
    if argv[0] == str(CONSOLE_SCRIPT) and not CONSOLE_SCRIPT.exists():
        pytest.fail(f"no console script at {CONSOLE_SCRIPT}: is the package installed?")
    done = run(argv)
    assert done.returncode == 0, done.stderr
    assert "0.1.0" in done.stdout or "usage:" in done.stdout
    loaded = imported(done.stderr)
    assert "argparse" in loaded or argv[1] == "-c"  # the record is there at all
    assert not loaded & HEAVY, f"{' '.join(argv[1:])} imported {sorted(loaded & HEAVY)}"


def test_the_engine_is_still_there_when_asked_for() -> None:
    """``roomdrop``'s names are imported on first use, not gone."""
    import roomdrop

    assert roomdrop.FileTransferManager.__name__ == "FileTransferManager"
    assert roomdrop.Status.ACTIVE.value == "active"
    assert issubclass(roomdrop.IntegrityError, roomdrop.RoomdropError)
    assert set(roomdrop.__all__) <= set(dir(roomdrop))
    with pytest.raises(AttributeError):
        _ = roomdrop.nothing_of_that_name  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["relay", "p2p"])
async def test_send_and_receive_import_nothing_of_the_server(
    start: Any, room_on: Any, tmp_path: Path, transport: str
) -> None:
    server = await start()
    room: Room = room_on(server)
    source = tmp_path / "f.bin"
    write_random(source, 300_000)
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    receiver = room.receive(tmp_path / "inbox", env=env)
    await room.joined(receiver)
    sender = room.send(source, transport=transport, env=env)
    assert await sender.wait(60) == 0, sender.report()
    assert await receiver.wait(30) == 0, receiver.report()
    for command in (sender, receiver):
        assert command.result()["status"] == "completed"
        loaded = imported(command.err())
        assert "roomdrop" in loaded and "websockets" in loaded  # the record is there
        assert not loaded & SERVER_ONLY, f"{command.name} imported {sorted(loaded & SERVER_ONLY)}"
        # end to end: both seal or open with the device key (cryptography, pyhpke)
        assert {"cryptography", "pyhpke"} <= loaded, command.name
        assert command.result()["e2e"] is True
    if transport == "relay":
        # no data channel: no WebRTC, no JWT library to read a token, no bars (--json);
        # over p2p, httpx (for the ICE servers) brings rich in with its own command line
        unwanted = {"aiortc", "jwt", "rich"}
        assert not imported(sender.err()) & unwanted


def test_the_user_is_read_from_the_token_without_a_jwt_library() -> None:
    import base64
    import json

    from roomdrop.client.settings import user_of

    def token(claims: object) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"

    assert user_of(token({"sub": "alice", "exp": 1})) == "alice"
    assert user_of(token({"sub": "bø b"})) == "bø b"
    for bad in ("a.b", "a.b.c.d", "a.!!.c", token([1, 2])):
        with pytest.raises(ValueError, match="not a JWT"):
            user_of(bad)
    with pytest.raises(ValueError, match="no 'sub'"):
        user_of(token({"x": 1}))
