"""``--json``: one JSON object per line on stdout, for programs (no rich imported).
A stdout whose reader is gone is silenced and said to :attr:`JsonReporter.on_closed`
(:mod:`.output`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
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
        self._emit({"event": "offer", **offer})

    def progress(self, snapshot: dict[str, Any], transport: str) -> None:
        now = time.monotonic()
        tid = snapshot["transfer_id"]
        if now - self._last.get(tid, 0.0) < self.every:
            return
        self._last[tid] = now
        self._emit({"event": "progress", "transport": transport, **snapshot})

    def finished(self, result: Result) -> None:
        self._emit(result.to_dict())
