"""``--json``: one JSON object per line on stdout, for programs (no rich imported).
A stdout whose reader is gone is silenced and said to :attr:`JsonReporter.on_closed`
(:mod:`.output`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from roomdrop.client.output import Guarded
from roomdrop.client.transfers import Result

__all__ = ["JsonReporter"]


class JsonReporter:
    """One JSON object per line on stdout: ``note``, ``progress`` (the transfer object
    with ``transport``; at most every ``every`` seconds per transfer) and ``result``."""

    def __init__(self, stream: TextIO | None = None, every: float = 0.5) -> None:
        self.stream = Guarded(stream or sys.stdout)
        self.every = every
        self._last: dict[str, float] = {}
        self._waits: set[str] = set()

    @property
    def on_closed(self) -> Callable[[], None] | None:
        """Called once when stdout's reader is gone."""
        return self.stream.on_closed

    @on_closed.setter
    def on_closed(self, callback: Callable[[], None] | None) -> None:
        self.stream.on_closed = callback

    def _emit(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self._emit({"event": "note", "message": text})

    def offer(self, offer: dict[str, Any]) -> None:
        self._emit({"event": "offer", **offer, "e2e": bool(offer.get("e2e"))})

    @contextmanager
    def asking(self, offer: dict[str, Any], before: Callable[[], None]) -> Iterator[None]:
        """The offer as a line on stdout; the question on stderr (the answer on stdin).
        ``before`` is called right before the offer's line is written."""
        before()
        self.offer(offer)
        print("accept? [y/N] ", end="", file=sys.stderr, flush=True)
        yield

    def progress(self, snapshot: dict[str, Any], transport: str) -> None:
        now = time.monotonic()
        tid = snapshot["transfer_id"]
        if now - self._last.get(tid, 0.0) < self.every:
            return
        self._last[tid] = now
        # whether it is end to end, not the sealed keys themselves
        self._emit(
            {
                "event": "progress",
                "transport": transport,
                **snapshot,
                "e2e": bool(snapshot.get("e2e")),
            }
        )

    def waiting(self, text: str, elapsed: float | None) -> None:
        """One note when a wait begins (a program needs no clock)."""
        if elapsed is None:
            self._waits.discard(text)
        elif text not in self._waits:
            self._waits.add(text)
            self.note(text)

    def finished(self, result: Result) -> None:
        self._emit(result.to_dict())
