"""The command's output when its reader goes away.

A ``send`` or ``receive`` whose stdout or stderr is a pipe that nobody reads any more
(the program reading it exited, ``| head -1`` had its line) gets EPIPE on its next write
(Python ignores SIGPIPE, so the write raises :class:`BrokenPipeError`). The reporters
write through a :class:`Guarded` stream: the first such failure points the stream's file
descriptor at ``/dev/null`` (so that nothing written later, nor the interpreter's final
flush, fails again) and calls ``on_closed`` once; the command then ends as on SIGTERM,
its transfers paused, with exit status :data:`EXIT_OUTPUT_CLOSED`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["EXIT_OUTPUT_CLOSED", "Guarded", "is_closed_pipe", "silence"]

#: 128 + SIGPIPE: what a shell shows for a process that SIGPIPE ended.
EXIT_OUTPUT_CLOSED = 141


def is_closed_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` says the reading end of the output is gone."""
    return isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET)
    )


def silence(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what it still holds, and all
    that is written to it later, goes nowhere instead of failing."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class Guarded:
    """A text stream (stdout or stderr) whose writes do not fail when its reader is
    gone: the first failure silences it and calls :attr:`on_closed` (from whatever
    thread wrote: rich refreshes its bars from a thread of its own)."""

    def __init__(self, stream: TextIO, on_closed: Callable[[], None] | None = None) -> None:
        self.stream = stream
        self.on_closed = on_closed
        self.closed_pipe = False

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            self._failed(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if not is_closed_pipe(exc):
            raise exc
        silence(self.stream)
        if not self.closed_pipe:
            self.closed_pipe = True
            if self.on_closed is not None:
                self.on_closed()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self.stream, name)
