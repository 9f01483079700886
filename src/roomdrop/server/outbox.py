"""One WebSocket's writer: control messages first, relay frames as the socket takes them.

The hub never awaits a slow socket while handling someone else's message: control
messages are queued (a socket that lets ``max_control`` pile up is closed as too slow,
code 4408), relay frames wait for room in a small queue, and that wait is the relay's
back-pressure.

Relay frames pass here once per chunk, so their path is kept short: two deques and two
events, no :class:`asyncio.Queue` bookkeeping, and the frame the hub hands over is the
object the socket sends (no copy).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from roomdrop.protocol.messages import Message

__all__ = ["CLOSE_TOO_SLOW", "Outbox", "Socket"]

CLOSE_TOO_SLOW = 4408


class Socket(Protocol):
    """What the hub needs of a WebSocket."""

    async def send_text(self, data: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class Outbox:
    """One socket's writer: control messages first, then frames, one send at a time."""

    def __init__(self, socket: Socket, max_control: int = 1000, max_frames: int = 16) -> None:
        self.socket = socket
        self.max_control = max_control
        self.max_frames = max_frames
        self._control: deque[str] = deque()
        self._frames: deque[bytes] = deque()
        self._wake = asyncio.Event()  # something to send (or closed)
        self._room = asyncio.Event()  # a frame went out (or closed): send_frame may go on
        self.closed = False

    def send(self, message: Message) -> None:
        self.send_text(message.to_json())

    def send_text(self, text: str) -> None:
        """Queue a control message already serialised (one from another instance)."""
        if self.closed:
            return
        if len(self._control) >= self.max_control:
            self.closed = True
            self._wake.set()
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

    async def run(self) -> None:
        """The writer task; returns when the socket fails or the outbox is closed."""
        control, frames = self._control, self._frames
        try:
            while not self.closed:
                if control:
                    await self.socket.send_text(control.popleft())
                elif frames:
                    frame = frames.popleft()
                    self._room.set()
                    await self.socket.send_bytes(frame)
                else:
                    self._wake.clear()
                    await self._wake.wait()
            if len(control) >= self.max_control:
                await self.socket.close(CLOSE_TOO_SLOW, "too slow to read its messages")
        except Exception:  # the socket is gone; the reader will notice too
            self.closed = True
        finally:
            self.closed = True
            frames.clear()
            self._room.set()
