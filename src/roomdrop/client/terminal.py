"""The terminal's input: answers to the receiver's questions, read on the event loop (no
thread left blocked in a read when the command ends), and what was typed before a
question dropped right before it shows (a stray ``clear`` must not answer an offer).
The only client module that reads a file descriptor or touches the terminal's modes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios

__all__ = ["LineReader"]


class LineReader:
    """Lines of a file descriptor read on the event loop (no thread left blocked in a
    read when the command ends); what a line's read brought beyond it is kept for the
    next question (a pipe may carry several answers)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._rest = b""
        self._eof = False

    def discard_typed_ahead(self) -> None:
        if not os.isatty(self.fd):
            return
        self._rest = b""
        with contextlib.suppress(termios.error):
            termios.tcflush(self.fd, termios.TCIFLUSH)

    async def line(self) -> str:
        loop = asyncio.get_running_loop()
        while b"\n" not in self._rest and not self._eof:
            ready: asyncio.Future[None] = loop.create_future()

            def readable(ready: asyncio.Future[None] = ready) -> None:
                if not ready.done():
                    ready.set_result(None)

            try:
                loop.add_reader(self.fd, readable)
            except (OSError, ValueError, NotImplementedError):  # a plain file: read it
                data = await asyncio.to_thread(os.read, self.fd, 4096)
            else:
                try:
                    await ready
                finally:
                    loop.remove_reader(self.fd)
                try:
                    data = os.read(self.fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
            self._rest += data
            self._eof = not data
        line, _, self._rest = self._rest.partition(b"\n")
        return line.decode(errors="replace")
