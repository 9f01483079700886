"""One stored file on its way from the store to its receiver (see :mod:`.keeping`).

The object holds the sender's frames back to back, each ``HEADER_SIZE + length +
TAG_SIZE`` bytes, so chunk *i*'s frame starts at ``i · (HEADER_SIZE + chunk_size +
TAG_SIZE)`` (:func:`frame_offset`). A :class:`Delivery` reads runs of consecutive
wanted frames, at most :data:`READ_BYTES` at a time, and hands each frame to the
receiver's socket as it takes them (the socket's back-pressure bounds what waits in
memory to one read). Chunks asked for again (a chunk request) join the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from roomdrop.exceptions import StoreError
from roomdrop.protocol.chunks import chunk_length, indexes_in
from roomdrop.protocol.frames import HEADER_SIZE, TAG_SIZE
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.participant import Participant
from roomdrop.server.store import ObjectStore

__all__ = ["READ_BYTES", "Delivery", "frame_length", "frame_offset"]

log = logging.getLogger("roomdrop.server")

READ_BYTES: Final = 4 * 1024 * 1024
"""The most one read from the store asks for."""
RETRIES: Final = 3
"""Reads of one run the store may fail before the delivery stops (the receiver asks
again when it stalls)."""


def frame_offset(index: int, chunk_size: int) -> int:
    """Where chunk ``index``'s frame starts in a stored object."""
    return index * (HEADER_SIZE + chunk_size + TAG_SIZE)


def frame_length(index: int, file_size: int, chunk_size: int) -> int:
    """The length of chunk ``index``'s sealed frame."""
    return HEADER_SIZE + chunk_length(index, file_size, chunk_size) + TAG_SIZE


class Delivery:
    """The chunks of ``record`` still to go to its receiver, and the task sending them."""

    def __init__(
        self,
        record: Transfer,
        store: ObjectStore,
        present: Callable[[str, str], Participant | None],
        progressed: Callable[[Transfer, int, int], None],
        gone: Callable[[str], None],
        throttle: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> None:
        self.record = record
        self.store = store
        self._present = present
        self._progressed = progressed
        self._gone = gone
        self._throttle = throttle
        """The room's relay bandwidth (ROOMDROP_ROOM_BANDWIDTH), which a delivery from
        the store counts against too."""
        self._queue: dict[int, None] = {}
        self._task: asyncio.Task[None] | None = None
        self.done = False

    def add(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Queue these chunk ranges (again), and send them."""
        for index in indexes_in(list(ranges)):
            self._queue[index] = None
        if self._task is None or self._task.done():
            tid = self.record.transfer_id
            self._task = asyncio.create_task(self._run(), name=f"deliver-{tid}")

    async def stop(self) -> None:
        self.done = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _next_run(self) -> list[int]:
        """The first queued chunks that are consecutive, up to READ_BYTES of frames."""
        r = self.record
        run: list[int] = []
        size = 0
        for index in sorted(self._queue):
            length = frame_length(index, r.file_size, r.chunk_size)
            if run and (index != run[-1] + 1 or size + length > READ_BYTES):
                break
            run.append(index)
            size += length
        return run

    async def _run(self) -> None:
        r = self.record
        failures = 0
        try:
            while self._queue and not self.done:
                run = self._next_run()
                start = frame_offset(run[0], r.chunk_size)
                lengths = [frame_length(i, r.file_size, r.chunk_size) for i in run]
                try:
                    data = await self.store.read(r.transfer_id, start, sum(lengths))
                except StoreError as exc:
                    failures += 1
                    log.warning("reading %s from the store failed: %s", r.transfer_id, exc)
                    if failures >= RETRIES:
                        return
                    await asyncio.sleep(0.5 * failures)
                    continue
                failures = 0
                view = memoryview(data)
                offset = 0
                for index, length in zip(run, lengths, strict=True):
                    if self._throttle is not None:
                        await self._throttle(r.room_id, length)
                    receiver = self._present(r.room_id, r.receiver_id)
                    if receiver is None:
                        return  # gone: a new accept (or its chunk requests) starts over
                    await receiver.outbox.send_frame(bytes(view[offset : offset + length]))
                    offset += length
                    self._queue.pop(index, None)
                    chunks = min(r.total_chunks, r.chunks_sent + 1)
                    self._progressed(r, chunks, min(r.file_size, chunks * r.chunk_size))
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("the delivery of %s from the store failed", r.transfer_id)
        finally:
            if not self._queue:
                self.done = True
            self._gone(r.transfer_id)
