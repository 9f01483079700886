"""A command in a pseudo-terminal, read the way a person sees it: what it printed, with
the terminal's escape sequences (colours, cursor moves, line clears) taken out."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["Terminal", "plain"]

_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\r")


def plain(raw: bytes) -> str:
    """``raw`` terminal output without escape sequences or carriage returns."""
    return _ESCAPES.sub(b"", raw).decode(errors="replace")


class Terminal:
    """``argv`` started in a new session on a pseudo-terminal of 120 x 40."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        os.set_blocking(master, False)
        self.master = master
        self.raw = b""
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, "COLUMNS": "120", "LINES": "40"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.master, 65536)
            except OSError:  # the other end closed: the command ended
                time.sleep(timeout)

    @property
    def text(self) -> str:
        return plain(self.raw)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until the screen's text matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not shown in {timeout} s; shown:\n{self.text}")
            self._read(0.05)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def interrupt(self) -> None:
        """Ctrl-C, as the terminal sends it: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s; shown:\n{self.text}")
            self._read(0.05)
        self._read(0.05)
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.master)
