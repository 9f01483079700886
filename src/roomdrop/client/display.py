"""What ``send`` and ``receive`` show a person: rich progress bars on stderr (``--json``
prints JSON lines instead: :mod:`roomdrop.client.jsonlines`). A stderr whose reader is
gone is silenced and said to :attr:`RichReporter.on_closed` (:mod:`.output`).

The only module that imports ``rich``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, cast

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from roomdrop.client.output import Guarded
from roomdrop.client.transfers import Result

__all__ = ["QUESTION", "RichReporter", "describe_offer", "human_size"]

QUESTION = "accept? [y/N] "


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


class SpeedOrPaused(TransferSpeedColumn):
    """The speed; ``paused`` while the transfer is (not the last speed it had)."""

    def render(self, task: Task) -> Text:
        if task.fields.get("paused"):
            return Text("paused", style="yellow")
        return super().render(task)


class TimeOrNothing(TimeRemainingColumn):
    """The time remaining; nothing while the transfer is paused."""

    def render(self, task: Task) -> Text:
        if task.fields.get("paused"):
            return Text("")
        return super().render(task)


class Bars(Progress):
    """The bars, under a line of what is being waited for, if anything (redrawn in
    place with the bars)."""

    status: str | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        if self.status is not None:
            yield Text(self.status)
        yield from super().get_renderables()


class RichReporter:
    """A progress bar per file on stderr: bytes, percentage, speed, ETA and the path the
    data takes; a line per note and per finished file."""

    def __init__(self, console: Console | None = None, *, receivers: bool = False) -> None:
        self.receivers = receivers
        """Name the receiver on each file's line (``send`` to several at once)."""
        self._stderr = Guarded(sys.stderr)
        self.console = console or Console(file=cast(IO[str], self._stderr))
        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            SpeedOrPaused(),
            TimeOrNothing(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._held: list[str] | None = None
        self._waits: set[str] = set()
        self._waited = 0.0
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
        if self._held is not None:  # a question is on screen: after the answer
            self._held.append(text)
            return
        self.bars.console.print(text, highlight=False, markup=False)

    def offer(self, offer: dict[str, Any]) -> None:
        self.note(describe_offer(offer))

    def waiting(self, text: str, elapsed: float | None) -> None:
        """On a terminal, ``text`` with the time waited, updated in place; elsewhere
        ``text`` once. When the wait is over, one line says how long it was."""
        if elapsed is None:
            if text in self._waits:
                self._waits.discard(text)
                self.bars.status = None
                if self.console.is_terminal:
                    self.note(f"{text}: waited {self._waited:.0f} s")
            return
        self._waited = elapsed
        if text not in self._waits:
            self._waits.add(text)
            if not self.console.is_terminal:
                self.note(text)
        if self.console.is_terminal:
            self.bars.status = f"{text}: {elapsed:.0f} s"
            self.bars.refresh()

    @contextmanager
    def asking(self, offer: dict[str, Any], before: Callable[[], None]) -> Iterator[None]:
        """The offer and ``accept? [y/N]`` on screen, the bars taken off it (their live
        refresh would overwrite the question and the answer being typed) and notes held
        until the answer; then the bars again, below. ``before`` is called right before
        the question shows."""
        live = self.bars.live
        live.transient = True
        self.bars.stop()
        live.transient = False
        live._live_render._shape = None  # nothing of the bars above to redraw over
        before()
        self.console.print(describe_offer(offer), highlight=False, markup=False)
        self.console.print(QUESTION, highlight=False, markup=False, end="")
        self.console.file.flush()
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for text in held:
                self.note(text)
            self.bars.start()

    def progress(self, snapshot: dict[str, Any], transport: str) -> None:
        tid = snapshot["transfer_id"]
        label = self._label(snapshot["filename"], snapshot.get("receiver_id", ""), transport)
        paused = snapshot.get("status") == "paused"
        task = self._tasks.get(tid)
        if task is None:
            task = self._tasks[tid] = self.bars.add_task(label, total=snapshot["file_size"])
        self.bars.update(
            task, completed=snapshot["bytes_transferred"], description=label, paused=paused
        )

    def finished(self, result: Result) -> None:
        task = self._tasks.get(result.transfer_id)
        if task is None and result.file_size:  # over before the first progress tick
            task = self._tasks[result.transfer_id] = self.bars.add_task(
                self._label(result.filename, result.peer, result.transport),
                total=result.file_size,
                completed=result.bytes_transferred,
            )
        if task is not None:
            label = self._label(result.filename, result.peer, result.transport)
            if result.ok:
                self.bars.update(task, completed=result.file_size, description=label, paused=False)
            else:
                self.bars.update(task, description=label, paused=False)
            self.bars.stop_task(task)
        if result.ok:
            where = f" -> {result.saved_path}" if result.saved_path else ""
            resumed = (
                f", {human_size(result.resumed_bytes)} were already there"
                if result.resumed_bytes
                else ""
            )
            to = f" to {result.peer}" if self.receivers else ""
            self.note(
                f"done: {result.filename}{to} ({human_size(result.file_size)}) via "
                f"{result.transport} in {result.elapsed_s:.1f} s{resumed}{where}"
            )
        else:
            to = f" to {result.peer}" if self.receivers else ""
            why = result.error or result.status
            self.note(f"{result.status}: {result.filename}{to}: {why}")

    def _label(self, filename: str, receiver: str, transport: str) -> str:
        to = f" to {receiver}" if self.receivers else ""
        return escape(f"{filename}{to} [{transport}]")
