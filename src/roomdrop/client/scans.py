"""The sender's files, hashed early: :class:`Scans` reads each file once (size, sha256,
MIME type: :func:`~roomdrop.source.scan_source`) in a thread of its own, one after
another, while the command goes on importing, connecting, joining, waiting for the
receiver and sending the files before it.

``roomdrop send`` begins the scans (:func:`begin`) as soon as its arguments are parsed,
before it imports the rest of the client: this module imports nothing else of roomdrop
but :mod:`roomdrop.source`, and no third-party library. The command then takes them up
(:func:`take`). A file whose size or mtime changed since it was hashed is hashed again
when its scan is asked for; the chunk reads check both again
(:class:`~roomdrop.storage.SourceFile`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path

from roomdrop.source import SourceInfo, scan_source

__all__ = ["Scans", "begin", "take"]


class Scans:
    """The scans of the files to send, begun at once, one file after another, in a
    daemon thread (a command that ends early is not held up by a file being hashed)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self._futures: dict[Path, Future[SourceInfo]] = {}
        for path in self.paths:
            self._futures.setdefault(path, Future())
        self._stopped = False
        threading.Thread(target=self._run, name="roomdrop-scan", daemon=True).start()

    def _run(self) -> None:
        for path, future in self._futures.items():
            if self._stopped or not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(scan_source(path))
            except BaseException as exc:
                future.set_exception(exc)

    async def get(self, path: Path) -> SourceInfo:
        """``path``'s scan, once done; scanned again if its size or mtime changed since
        (a file not among the paths given is scanned now). Raises OSError."""
        future = self._futures.get(path)
        if future is None:
            return await asyncio.to_thread(scan_source, path)
        info = await asyncio.wrap_future(future)
        if not await asyncio.to_thread(_unchanged, info):
            info = await asyncio.to_thread(scan_source, path)
        return info

    def stop(self) -> None:
        """Scan no further file (the one being read is finished)."""
        self._stopped = True
        for future in self._futures.values():
            future.cancel()


def _unchanged(info: SourceInfo) -> bool:
    try:
        st = info.path.stat()
    except OSError:
        return False  # scanned again: that says what is wrong
    return st.st_size == info.file_size and st.st_mtime_ns == info.mtime_ns


_begun: Scans | None = None


def begin(paths: Sequence[Path]) -> None:
    """Begin hashing ``paths`` now, for :func:`take` later in this process."""
    global _begun
    _begun = Scans(paths)


def take(paths: Sequence[Path]) -> Scans:
    """The scans :func:`begin` began for these same ``paths``, else new ones."""
    global _begun
    scans, _begun = _begun, None
    if scans is not None and scans.paths == list(paths):
        return scans
    if scans is not None:
        scans.stop()
    return Scans(paths)
