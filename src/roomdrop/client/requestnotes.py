"""What a sender says about the receiver's chunk requests (:mod:`.outgoing`): each one,
unless it repeats the last one shown while every chunk it names still waits to be sent
(a receiver asking every ``ROOMDROP_STALL_TIMEOUT`` while no path is chosen yet): that
one is counted, and the count shown once the wait is over."""

from __future__ import annotations

from roomdrop.client.transfers import Host, SendState
from roomdrop.protocol.chunks import indexes_in
from roomdrop.protocol.messages import ChunkRequest

__all__ = ["RequestNotes"]

_Key = tuple[str, tuple[tuple[int, int], ...]]


class RequestNotes:
    """The requests shown, per transfer."""

    def __init__(self, host: Host) -> None:
        self.host = host
        #: per transfer: the last request shown (its reason and ranges), and how many
        #: times it came again since, changing nothing
        self._shown: dict[str, tuple[_Key, int]] = {}

    def show(self, out: SendState, request: ChunkRequest) -> None:
        """Note the request, unless it repeats the last one shown and every chunk it
        names still waits in the queue (it changes nothing): then it is counted."""
        key = (request.reason, tuple((start, end) for start, end in request.ranges))
        shown = self._shown.get(out.tid)
        if (
            shown is not None
            and shown[0] == key
            and all(index in out.queue for index in indexes_in(request.ranges))
        ):
            self._shown[out.tid] = (key, shown[1] + 1)
            return
        self.repeats(out)
        count = sum(end - start for start, end in request.ranges)
        self.host.reporter.note(f"{out.peer} asks for {count} chunk(s) ({request.reason})")
        self._shown[out.tid] = (key, 0)

    def repeats(self, out: SendState) -> None:
        """Note how many times the last request shown came again, if it did."""
        shown = self._shown.get(out.tid)
        if shown is None or not shown[1]:
            return
        (reason, ranges), times = shown
        count = sum(end - start for start, end in ranges)
        self.host.reporter.note(
            f"{out.peer} asked again for the same {count} chunk(s) ({reason}), {times} more time(s)"
        )
        self._shown[out.tid] = (shown[0], 0)

    def forget(self, tid: str) -> None:
        self._shown.pop(tid, None)
