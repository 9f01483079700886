"""What ``send`` and ``receive`` show a person: rich progress bars on stderr (``--json``
prints JSON lines instead: :mod:`roomdrop.client.jsonlines`). A stderr whose reader is
gone is silenced and said to :attr:`RichReporter.on_closed` (:mod:`.output`).

The only module that imports ``rich``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any, cast

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from roomdrop.client.output import Guarded
from roomdrop.client.transfers import Result

__all__ = ["RichReporter", "describe_offer", "human_size"]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} bytes"


def describe_offer(offer: dict[str, Any]) -> str:
    return (
        f"{offer['sender_id']} offers {offer['filename']} "
        f"({human_size(offer['file_size'])}, {offer.get('mime_type') or 'unknown type'})"
    )


class RichReporter:
    """A progress bar per file on stderr: bytes, percentage, speed, ETA and the path the
    data takes; a line per note and per finished file."""

    def __init__(self, console: Console | None = None) -> None:
        self._stderr = Guarded(sys.stderr)
        self.console = console or Console(file=cast(IO[str], self._stderr))
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self.bars.start()

    @property
    def on_closed(self) -> Callable[[], None] | None:
        """Called once when stderr's reader is gone (from rich's refresh thread, maybe)."""
        return self._stderr.on_closed

    @on_closed.setter
    def on_closed(self, callback: Callable[[], None] | None) -> None:
        self._stderr.on_closed = callback

    def stop(self) -> None:
        self.bars.stop()

    def note(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def offer(self, offer: dict[str, Any]) -> None:
        self.note(describe_offer(offer))

    def progress(self, snapshot: dict[str, Any], transport: str) -> None:
        tid = snapshot["transfer_id"]
        label = escape(f"{snapshot['filename']} [{transport}]")
        task = self._tasks.get(tid)
        if task is None:
            task = self._tasks[tid] = self.bars.add_task(label, total=snapshot["file_size"])
        self.bars.update(task, completed=snapshot["bytes_transferred"], description=label)

    def finished(self, result: Result) -> None:
        task = self._tasks.get(result.transfer_id)
        if task is None and result.file_size:  # over before the first progress tick
            task = self._tasks[result.transfer_id] = self.bars.add_task(
                escape(f"{result.filename} [{result.transport}]"),
                total=result.file_size,
                completed=result.bytes_transferred,
            )
        if task is not None:
            label = escape(f"{result.filename} [{result.transport}]")
            if result.ok:
                self.bars.update(task, completed=result.file_size, description=label)
            else:
                self.bars.update(task, description=label)
            self.bars.stop_task(task)
        if result.ok:
            where = f" -> {result.saved_path}" if result.saved_path else ""
            resumed = (
                f", {human_size(result.resumed_bytes)} were already there"
                if result.resumed_bytes
                else ""
            )
            self.note(
                f"done: {result.filename} ({human_size(result.file_size)}) via "
                f"{result.transport} in {result.elapsed_s:.1f} s{resumed}{where}"
            )
        else:
            self.note(f"{result.status}: {result.filename}: {result.error or result.status}")
