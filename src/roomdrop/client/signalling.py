"""The server's WebSocket, for a client (websockets): control messages both ways, relay
frames out and in, and reconnection with backoff when the connection drops.

The only module that imports ``websockets`` on the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from roomdrop.client.errors import NotConnected
from roomdrop.exceptions import (
    Forbidden,
    ProtocolError,
    ServerUnreachable,
    Unauthorized,
)
from roomdrop.protocol.messages import Message, MessageType, RoomState, parse_message

__all__ = ["Signalling", "websocket_url"]

log = logging.getLogger("roomdrop.client")

#: Frames of up to 2 MiB come from the server (a relayed chunk of the largest chunk size).
MAX_INCOMING = 4 * 1024 * 1024


def websocket_url(server: str, room: str, token: str) -> str:
    """``http://host:port`` (or ``ws://``, ``https://``, ``wss://``) to the room's socket."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server URL: {server!r} (expected http://host:port)")
    path = parts.path.rstrip("/") + f"/webrtc/ws/{quote(room, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, f"token={quote(token, safe='')}", ""))


class Signalling:
    """One participant's connection to a room.

    :meth:`run` connects, hands every message to the callbacks in order, and when the
    connection drops connects again with exponential backoff (0.2 s doubling to 5 s),
    for at most ``reconnect_timeout`` seconds (``connect_timeout`` the first time). A
    close that reconnecting cannot mend (docs/protocol.md §11.1: bad token 4401, bad room
    4400, replaced by a newer connection 4409) ends it with the matching error.
    """

    def __init__(
        self,
        url: str,
        *,
        on_connect: Callable[[RoomState], Awaitable[None]],
        on_message: Callable[[Message], Awaitable[None]],
        on_frame: Callable[[bytes], Awaitable[None]],
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        connect_timeout: float = 2.0,
        reconnect_timeout: float = 120.0,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.name = name or url.split("?", 1)[0]
        self._on_connect = on_connect
        self._on_message = on_message
        self._on_frame = on_frame
        self._on_disconnect = on_disconnect
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self._ws: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self._closing = False

    # --- sending ---------------------------------------------------------------------

    async def send(self, kind: MessageType, payload: BaseModel | dict[str, Any]) -> None:
        """Send one control message; :class:`NotConnected` while reconnecting."""
        await self._send(Message.build(kind, payload).to_json())

    async def send_frame(self, frame: bytes) -> None:
        """Send one binary relay frame. Waits while the socket's buffer is full, so a
        slow server (or receiver behind it) slows the sender down."""
        await self._send(frame)

    async def _send(self, data: str | bytes) -> None:
        ws = self._ws
        if ws is None:
            raise NotConnected("not connected to the server")
        try:
            await ws.send(data)
        except ConnectionClosed as exc:
            self.connected.clear()  # at once: the reader may not have run yet
            raise NotConnected(f"connection to the server lost ({exc})") from exc

    async def close(self) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    # --- receiving -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, read, reconnect; returns only when :meth:`close` was called."""
        loop = asyncio.get_running_loop()
        lost_at = loop.time()
        limit = self.connect_timeout
        delay = 0.2
        while True:
            try:
                ws = await asyncio.wait_for(self._connect(), timeout=5.0)
            except (OSError, TimeoutError, InvalidStatus) as exc:
                waited = loop.time() - lost_at
                if waited + delay > limit:
                    raise ServerUnreachable(
                        f"cannot reach the server at {self.name} ({describe(exc)})"
                    ) from None
                log.info("server unreachable (%s); retrying in %.1f s", describe(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except InvalidURI as exc:
                raise ServerUnreachable(f"bad server URL: {exc}") from None
            delay = 0.2
            if self._closing:
                await ws.close()
                return
            if await self._serve(ws):
                return
            lost_at, limit = loop.time(), self.reconnect_timeout

    async def _connect(self) -> ClientConnection:
        return await connect(
            self.url,
            compression=None,
            max_size=MAX_INCOMING,
            open_timeout=5.0,
            ping_interval=10.0,
            ping_timeout=20.0,
            # keep a slow receiver's relay frames from piling up in our own buffer
            max_queue=16,
        )

    async def _serve(self, ws: ClientConnection) -> bool:
        """Read one connection until it closes; True if we closed it ourselves."""
        first = True
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    await self._on_frame(raw)
                    continue
                try:
                    msg = parse_message(raw)
                except ProtocolError as exc:
                    log.warning("ignoring a malformed message from the server: %s", exc)
                    continue
                if first and msg.type is MessageType.ROOM_STATE:
                    first = False
                    self._ws = ws
                    self.connections += 1
                    self.connected.set()
                    assert isinstance(msg.payload, RoomState)
                    await self._on_connect(msg.payload)
                    continue
                await self._on_message(msg)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self.connected.clear()
            if not first and not self._closing and self._on_disconnect is not None:
                await self._on_disconnect()
        code = ws.close_code
        if self._closing:
            return True
        reason = ws.close_reason or f"closed with {code}"
        if code == 4401:
            raise Unauthorized(reason)
        if code == 4400:
            raise ProtocolError(f"the server refused the room: {reason}")
        if code == 4409:
            raise Forbidden("another connection of the same user joined the room")
        log.info("connection to the server lost (code %s); reconnecting", code)
        return False


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    text = str(exc) or exc.__class__.__name__
    return text
