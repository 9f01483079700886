"""The README's quick start works as written: each command block, pasted into a fresh
terminal in the clone (a shell with nothing of roomdrop's in its environment), does what
the README says, with the receiver answering its prompt in a pseudo-terminal."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ptytools import Terminal

ROOT = Path(__file__).resolve().parents[1]
FRESH_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8"}


def quick_start_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_quick_start_blocks_are_the_ones_this_test_runs() -> None:
    setup, receive, send = quick_start_blocks()
    assert setup.splitlines()[0].split()[0] == "scripts/serve"
    assert "roomdrop receive" in receive
    assert "roomdrop send" in send
    # scripts/serve sets up .venv, then is exactly `roomdrop serve` (which the next test
    # starts itself, so as not to reinstall the project's environment)
    last = (ROOT / "scripts" / "serve").read_text().strip().splitlines()[-1]
    assert last == 'exec .venv/bin/roomdrop serve "$@"'


@pytest.mark.timeout(240)
def test_the_quick_start_works_pasted_into_fresh_terminals(tmp_path: Path) -> None:
    _, receive_block, send_block = quick_start_blocks()
    clone = tmp_path / "clone"  # stands in for the clone: its .venv, nothing else yet
    clone.mkdir()
    (clone / ".venv").symlink_to(ROOT / ".venv")
    server = subprocess.Popen(
        [str(clone / ".venv" / "bin" / "roomdrop"), "serve"],
        cwd=clone,
        env=FRESH_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver = sender = None
    try:
        wait_listening(8000)
        receiver = Terminal(
            ["bash", "--norc", "--noprofile", "-c", receive_block], cwd=clone, env=FRESH_ENV
        )
        receiver.expect(r"room demo", timeout=30)
        sender = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-c", send_block],
            cwd=clone,
            env=FRESH_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        receiver.expect(r"accept\? \[y/N\]", timeout=60)
        receiver.type("y\r")
        try:
            out, err = sender.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            sender.kill()
            out, err = sender.communicate()
        assert sender.returncode == 0, (out, err, receiver.text)
        saved = clone / "inbox" / "movie.bin"
        assert saved.stat().st_size == 100_000_000
        assert sha256_of(saved) == sha256_of(clone / "movie.bin")
        receiver.interrupt()
        assert receiver.wait(30) == 130, receiver.text
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.communicate()
        if receiver is not None:
            receiver.close()
        server.terminate()
        server.wait(10)
