"""One WebSocket's writer: control messages first, relay frames as the socket takes them.

The hub never awaits a slow socket while handling someone else's message: control
messages are queued, relay frames wait for room in a small queue, and that wait is the
relay's back-pressure.

A socket that does not keep up is closed as too slow (4408) when ``max_control``
control messages pile up, or when it takes nothing for ``stall_timeout`` seconds while
something waits for it (its peer stopped reading: its buffers and ours are full). The
writer is then stuck in a send that cannot finish, so it is cancelled out of it; it logs
one line saying who and why, and closes the socket (which, if even the close frame
cannot go out, drops the connection: see ``routes.StarletteSocket.close``).

Relay frames pass here once per chunk, so their path is kept short: two deques and two
events, no :class:`asyncio.Queue` bookkeeping, one clock reading per send (the stall
watch reads it once a quarter of ``stall_timeout``), and the frame the hub hands over is
the object the socket sends (no copy).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from roomdrop.protocol.messages import Message

__all__ = ["CLOSE_TOO_SLOW", "Outbox", "Socket"]

log = logging.getLogger("roomdrop.server")

CLOSE_TOO_SLOW = 4408
TOO_SLOW = "too slow to read its messages"


class Socket(Protocol):
    """What the hub needs of a WebSocket."""

    async def send_text(self, data: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class Outbox:
    """One socket's writer: control messages first, then frames, one send at a time."""

    def __init__(
        self,
        socket: Socket,
        max_control: int = 1000,
        max_frames: int = 16,
        *,
        stall_timeout: float = 15.0,
        name: str = "a socket",
    ) -> None:
        self.socket = socket
        self.max_control = max_control
        self.max_frames = max_frames
        self.stall_timeout = stall_timeout
        self.name = name
        """Who is at the other end, for the log (``room=R user=U``)."""
        self._control: deque[str] = deque()
        self._frames: deque[bytes] = deque()
        self._wake = asyncio.Event()  # something to send (or closed)
        self._room = asyncio.Event()  # a frame went out (or closed): send_frame may go on
        self._sending_since = 0.0  # loop time the send under way began; 0: none
        self._writer: asyncio.Task[None] | None = None
        self._watching: asyncio.TimerHandle | None = None
        self.closed = False
        self.too_slow: str | None = None
        """Why the socket was closed as too slow, if it was."""

    def send(self, message: Message) -> None:
        self.send_text(message.to_json())

    def send_text(self, text: str) -> None:
        """Queue a control message already serialised (one from another instance)."""
        if self.closed:
            return
        if len(self._control) >= self.max_control:
            self._give_up(f"{self.max_control} control messages wait for it")
            return
        self._control.append(text)
        self._wake.set()

    def send_first(self, message: Message) -> None:
        """Queue ``message`` ahead of everything queued so far (a newcomer's
        ``room-state``, computed after the socket could already receive)."""
        if not self.closed:
            self._control.appendleft(message.to_json())
            self._wake.set()

    def close(self) -> None:
        """Stop: nothing more is queued, the writer ends, waiting frame senders wake."""
        self.closed = True
        self._wake.set()
        self._room.set()

    def try_send_frame(self, frame: bytes) -> bool:
        """Queue a binary frame if the socket keeps up; False (nothing queued) if not."""
        if self.closed or len(self._frames) >= self.max_frames:
            return False
        self._frames.append(frame)
        self._wake.set()
        return True

    async def send_frame(self, frame: bytes) -> None:
        """Queue a binary frame; waits while the socket is behind (back-pressure).
        Raises :class:`ConnectionError` if the socket is or gets closed meanwhile."""
        while not self.closed and len(self._frames) >= self.max_frames:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise ConnectionError("socket closed")
        self._frames.append(frame)
        self._wake.set()

    def _give_up(self, why: str) -> None:
        """Close as too slow: log it, stop queueing, and get the writer out of the send
        it may be stuck in (it is suspended inside its loop, since ``closed`` was
        False), so that it closes the socket."""
        if self.closed:
            return
        log.warning("closing %s with %d: %s (%s)", self.name, CLOSE_TOO_SLOW, TOO_SLOW, why)
        self.too_slow = why
        self.close()
        if self._writer is not None:
            self._writer.cancel()

    def _watch(self) -> None:
        """Every quarter of ``stall_timeout``: has a send been under way that long?"""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        since = self._sending_since
        if since and loop.time() - since >= self.stall_timeout:
            self._give_up(f"it took nothing for {self.stall_timeout:g} s")
            return
        self._watching = loop.call_later(self.stall_timeout / 4, self._watch)

    async def run(self) -> None:
        """The writer task; returns when the socket fails or the outbox is closed."""
        control, frames = self._control, self._frames
        loop = asyncio.get_running_loop()
        writer = self._writer = asyncio.current_task()
        self._watching = loop.call_later(self.stall_timeout / 4, self._watch)
        try:
            try:
                while not self.closed:
                    if control:
                        self._sending_since = loop.time()
                        await self.socket.send_text(control.popleft())
                    elif frames:
                        frame = frames.popleft()
                        self._room.set()
                        self._sending_since = loop.time()
                        await self.socket.send_bytes(frame)
                    else:
                        self._sending_since = 0.0
                        self._wake.clear()
                        await self._wake.wait()
            except asyncio.CancelledError:
                if self.too_slow is None or writer is None:
                    raise
                writer.uncancel()  # our own doing (_give_up): close the socket below
            except Exception:  # the socket is gone; the reader will notice too
                self.closed = True
            if self.too_slow is not None:
                await self.socket.close(CLOSE_TOO_SLOW, TOO_SLOW)
        finally:
            if self._watching is not None:
                self._watching.cancel()
            self._writer = None
            self._sending_since = 0.0
            self.closed = True
            frames.clear()
            self._room.set()
