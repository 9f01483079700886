"""The server's WebSocket, for a client (websockets): control messages both ways, relay
frames out and in, and reconnection with backoff when the connection drops, to the same
server or, when it does not answer, to the next of the servers the client was given.

The only module that imports ``websockets`` on the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

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
#: The longest one connection attempt (TCP, then the WebSocket handshake) may take.
ATTEMPT_TIMEOUT = 5.0


def websocket_url(server: str, room: str, token: str, key: str | None = None) -> str:
    """``http://host:port`` (or ``ws://``, ``https://``, ``wss://``) to the room's socket;
    ``key``: the device key this participant publishes (docs/protocol.md §14.1)."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server URL: {server!r} (expected http://host:port)")
    path = parts.path.rstrip("/") + f"/webrtc/ws/{quote(room, safe='')}"
    query = f"token={quote(token, safe='')}"
    if key is not None:
        query += f"&key={quote(key, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


class Signalling:
    """One participant's connection to a room, through one of several servers.

    ``urls`` are the room's socket on each server (one URL: a single server, or a load
    balancer in front of several); ``names`` say them to people (the server URLs as
    given). :meth:`run` connects, hands every message to the callbacks in order, and
    when the connection drops connects again. An attempt tries the URLs in rotation,
    starting with the last one that worked (the first one the first time); after a
    round in which none answered it waits, 0.2 s doubling to 5 s, and tries again, for
    at most ``reconnect_timeout`` seconds (``connect_timeout`` the first time; an
    attempt under way then, at most ``ATTEMPT_TIMEOUT``, is let finish), and ends with
    :class:`ServerUnreachable` naming every URL tried. A close that reconnecting cannot
    mend (docs/protocol.md §11.1: bad token 4401, bad room 4400, replaced by a newer
    connection 4409) ends it with the matching error.

    A server that stops answering (stopped, its host gone, the network cut) closes
    nothing: a ping every ``ping_timeout / 2`` seconds that gets no answer within
    ``ping_timeout`` (:meth:`_keepalive`) counts the connection as lost, unless something
    else came from the server meanwhile (a busy connection's pong waits behind its data;
    a relay upload hears the server's progress every 0.25 s). Only what comes in counts:
    what goes out lands in socket buffers whether the server reads it or not. The pings
    are this module's own, not websockets' keepalive, whose wait for the answer only
    starts once the ping is written: with the socket's buffers full (a relay upload to a
    server that stopped reading) it never starts, and the client waited for ever.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        on_connect: Callable[[RoomState], Awaitable[None]],
        on_message: Callable[[Message], Awaitable[None]],
        on_frame: Callable[[bytes], Awaitable[None]],
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        connect_timeout: float = 2.0,
        reconnect_timeout: float = 120.0,
        ping_timeout: float = 20.0,
        names: Sequence[str] | None = None,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("no server URL")
        self.names = list(names) if names is not None else [u.split("?", 1)[0] for u in self.urls]
        if len(self.names) != len(self.urls):
            raise ValueError("one name per server URL")
        self._on_connect = on_connect
        self._on_message = on_message
        self._on_frame = on_frame
        self._on_disconnect = on_disconnect
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.ping_timeout = ping_timeout
        self._ws: ClientConnection | None = None
        self._heard = 0.0  # loop time something last came from the server
        self._current = 0
        self.connected = asyncio.Event()
        self.connections = 0
        self._closing = False

    @property
    def url(self) -> str:
        """The socket URL this client is connected to (or last was; the first before)."""
        return self.urls[self._current]

    @property
    def name(self) -> str:
        """:attr:`url`'s name: the server this client is (or last was) connected to."""
        return self.names[self._current]

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
        failures: dict[int, str] = {}  # this attempt's: URL index -> why
        order = self._rotation()
        while True:
            if not order:  # a whole round failed
                waited = loop.time() - lost_at
                if waited + delay > limit:
                    raise ServerUnreachable(self._unreachable(failures)) from None
                if self._closing:
                    return
                log.info("no server reachable; retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                order = self._rotation()
            index = order.pop(0)
            try:
                ws = await asyncio.wait_for(
                    self._connect(self.urls[index]), timeout=ATTEMPT_TIMEOUT
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                # refused, timed out, or an answer that is not a WebSocket handshake (a
                # server dying mid-handshake, a proxy's error page)
                failures[index] = describe(exc)
                log.info("server at %s unreachable (%s)", self.names[index], describe(exc))
                continue
            except InvalidURI as exc:
                raise ServerUnreachable(f"bad server URL: {exc}") from None
            if self._closing:
                await ws.close()
                return
            joined = self.connections
            if await self._serve(ws, index):
                return
            if self.connections == joined:  # closed before the room-state: not working
                failures[index] = f"closed with {ws.close_code} before joining the room"
                continue
            # a connection that worked was lost: a new attempt, the same server first
            lost_at, limit, delay = loop.time(), self.reconnect_timeout, 0.2
            failures = {}
            order = self._rotation()

    def _rotation(self) -> list[int]:
        """The URLs' indexes in the order to try them: the last one that worked first."""
        count = len(self.urls)
        return [(self._current + step) % count for step in range(count)]

    def _unreachable(self, failures: dict[int, str]) -> str:
        tried = [(self.names[i], failures[i]) for i in sorted(failures)]
        if len(self.urls) == 1 and len(tried) == 1:
            name, why = tried[0]
            return f"cannot reach the server at {name} ({why})"
        listed = ", ".join(f"{name} ({why})" for name, why in tried)
        return f"cannot reach any server: {listed}"

    async def _connect(self, url: str) -> ClientConnection:
        return await connect(
            url,
            compression=None,
            max_size=MAX_INCOMING,
            open_timeout=ATTEMPT_TIMEOUT,
            ping_interval=None,  # the pings are _keepalive's
            # keep a slow receiver's relay frames from piling up in our own buffer
            max_queue=16,
        )

    async def _serve(self, ws: ClientConnection, index: int) -> bool:
        """Read one connection (to ``urls[index]``) until it closes; True if we closed
        it ourselves."""
        first = True
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        keepalive = asyncio.create_task(self._keepalive(ws), name="keepalive")
        try:
            async for raw in ws:
                self._heard = loop.time()
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
                    self._current = index  # it works: the one to try first from now on
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
            keepalive.cancel()
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

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping every ``ping_timeout / 2`` seconds; a ping not answered within
        ``ping_timeout`` (the wait includes writing the ping out), with nothing else
        heard from the server meanwhile, aborts the connection, which the reader then
        sees closed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_timeout / 2)
            sent = loop.time()
            try:
                async with asyncio.timeout(self.ping_timeout):
                    pong = await ws.ping()
                    await pong
            except TimeoutError:
                if self._heard > sent:
                    continue  # busy, not gone: the pong waits behind our data
                log.info(
                    "the server at %s did not answer for %g s; reconnecting",
                    self.name,
                    self.ping_timeout,
                )
                ws.transport.abort()
                return
            except ConnectionClosed:
                return


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    text = str(exc) or exc.__class__.__name__
    return text
