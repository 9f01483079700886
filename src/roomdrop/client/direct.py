"""The direct path to one remote CLI: a TCP connection beside the WebRTC data channel,
for peers that can reach each other (asyncio streams; the handshake, its threat model
and the records are :mod:`roomdrop.handshake`, the wire docs/protocol.md §15).

One :class:`DirectLink` per attempt with one remote user, the shape of magic-wormhole's
transit hints:

* :meth:`DirectLink.start` listens on an ephemeral port of each address this client may
  use (``ROOMDROP_ICE_HOSTS``, else the machine's addresses as ICE finds them) and sends
  them with a fresh token to the peer through the server (``direct-hints``);
* :meth:`DirectLink.on_hints` takes the peer's hints and dials every candidate at once,
  while the peer dials ours;
* every connection that forms, either way, runs the handshake; one that cannot prove it
  is the expected peer is dropped (:attr:`DirectLink.refused` counts them). Of those
  that prove it, the leader (:func:`~roomdrop.handshake.leader`) takes the first and
  says ``go`` on it; the follower takes the one it hears ``go`` on; the rest are closed;
* the chosen connection carries whole binary frames, one per record, with TCP's flow
  control: the reader hands a frame over before it reads the next.

It has the interface of :class:`~roomdrop.client.rtc.PeerLink` that the roles use
(``opened``, ``down``, ``is_open``, ``wait_open``, ``send``, ``close``, ``took``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from roomdrop.client.errors import LinkDown
from roomdrop.e2e import DeviceKey
from roomdrop.exceptions import RoomdropError
from roomdrop.handshake import (
    GO,
    HELLO_SIZE,
    LENGTH,
    Channel,
    DirectRefused,
    Handshake,
    leader,
    record_length,
)
from roomdrop.protocol.messages import DirectHints

__all__ = ["DirectLink"]

log = logging.getLogger("roomdrop.client")

#: Seconds a dial may take to connect, and a connection to complete its handshake.
CONNECT_TIMEOUT = 3.0
HANDSHAKE_TIMEOUT = 5.0
#: Seconds a connection that came in before the peer's hints waits for them.
HINTS_WAIT = 5.0
#: The sender waits when this much is buffered for the socket.
HIGH_WATER = 1024 * 1024
#: A connection that takes nothing for this long counts as dead.
DRAIN_TIMEOUT = 10.0

Signal = Callable[[dict[str, Any]], Awaitable[None]]
FrameHandler = Callable[[str, bytes], Awaitable[None]]


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    where: str

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class DirectLink:
    """One attempt at a direct connection to ``remote``, and the connection it found."""

    def __init__(
        self,
        remote: str,
        *,
        me: str,
        room: str,
        device: DeviceKey,
        peer_key: str,
        addresses: list[str],
        signal: Signal,
        on_frame: FrameHandler,
        on_down: Callable[[DirectLink], None],
    ) -> None:
        self.remote, self._me, self._room = remote, me, room
        self._device, self._peer_key = device, peer_key
        self._addresses = addresses
        self._signal, self._on_frame, self._on_down = signal, on_frame, on_down
        self.token = secrets.token_urlsafe(16)
        self.peer_token: str | None = None
        self.hinted = asyncio.Event()
        """The peer's hints arrived: it is a CLI that tries the direct path too."""
        self.opened = asyncio.Event()
        self.down = asyncio.Event()
        self.started: float | None = None
        self.took: float | None = None
        self.refused = 0
        """Connections dropped because they could not prove they are ``remote``."""
        self.where: str | None = None
        """The chosen connection's peer address, ``host:port``."""
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[_Connection] = set()
        self._chosen: tuple[_Connection, Channel] | None = None

    @property
    def is_open(self) -> bool:
        return self.opened.is_set() and not self.down.is_set()

    # --- setting up ------------------------------------------------------------------

    async def start(self, answers: str | None = None) -> None:
        """Listen, then send this side's hints (``answers``: the peer's token, when this
        replies to its hints)."""
        self.started = time.monotonic()
        candidates = []
        for address in self._addresses:
            try:
                server = await asyncio.start_server(self._accepted, host=address, port=0)
            except OSError as exc:
                log.info("cannot listen for a direct connection on %s: %s", address, exc)
                continue
            self._servers.append(server)
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                candidates.append({"host": host, "port": port})
        payload = DirectHints(
            target_id=self.remote, token=self.token, answers=answers, candidates=candidates
        )
        await self._signal(payload.model_dump(mode="json"))

    def on_hints(self, hints: DirectHints) -> None:
        """The peer's hints: dial each of its candidates."""
        if self.peer_token is not None or self.down.is_set():
            return
        self.peer_token = hints.token
        self.hinted.set()
        for candidate in hints.candidates:
            self._spawn(self._dial(candidate.host, candidate.port))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, host: str, port: int) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            log.debug("direct connection to %s at %s:%d: %s", self.remote, host, port, exc)
            return
        conn = _Connection(reader, writer, f"{host}:{port}")
        self._conns.add(conn)
        try:
            await self._run(conn)
        finally:
            self._conns.discard(conn)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        conn = _Connection(reader, writer, where)
        self._conns.add(conn)
        try:
            async with asyncio.timeout(HINTS_WAIT):
                await self.hinted.wait()
            await self._run(conn)
        except TimeoutError:
            self._refuse(conn, DirectRefused(f"no direct-hints from {self.remote} came"))
        except asyncio.CancelledError:  # asyncio (3.11) logs a handler that ends cancelled
            conn.close()
        finally:
            self._conns.discard(conn)

    async def _run(self, conn: _Connection) -> None:
        """Handshake on ``conn``; if it is the one chosen, read frames from it."""
        if self._chosen is not None or self.down.is_set():
            conn.close()
            return
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                channel = await self._handshake(conn)
                if leader(self._me, self.remote):
                    if self._chosen is not None:
                        conn.close()
                        return
                    conn.writer.write(channel.seal(GO))
                elif await _read_record(conn.reader, channel) != GO:
                    raise DirectRefused("the peer's first word is not go")
        except DirectRefused as exc:
            self._refuse(conn, exc)
            return
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.debug("direct connection %s to %s ended early: %r", conn.where, self.remote, exc)
            conn.close()
            return
        if self._chosen is not None or self.down.is_set():
            conn.close()
            return
        self._choose(conn, channel)
        await self._read(conn, channel)

    async def _handshake(self, conn: _Connection) -> Channel:
        assert self.peer_token is not None
        handshake = Handshake(
            self._device,
            self._peer_key,
            room=self._room,
            me=self._me,
            peer=self.remote,
            my_token=self.token,
            peer_token=self.peer_token,
        )
        conn.writer.write(handshake.hello)
        conn.writer.write(handshake.confirm(await conn.reader.readexactly(HELLO_SIZE)))
        length = record_length(await conn.reader.readexactly(LENGTH.size))
        return handshake.finish(await conn.reader.readexactly(length))

    def _refuse(self, conn: _Connection, exc: RoomdropError) -> None:
        self.refused += 1
        log.warning("refused a direct connection %s as %s: %s", conn.where, self.remote, exc)
        conn.close()

    def _choose(self, conn: _Connection, channel: Channel) -> None:
        self._chosen = (conn, channel)
        self.where = conn.where
        conn.writer.transport.set_write_buffer_limits(high=HIGH_WATER)
        if self.started is not None:
            self.took = time.monotonic() - self.started
        for server in self._servers:
            server.close()
        log.debug("direct connection to %s at %s", self.remote, conn.where)
        self.opened.set()

    async def _read(self, conn: _Connection, channel: Channel) -> None:
        try:
            while True:
                frame = await _read_record(conn.reader, channel)
                try:
                    await self._on_frame(self.remote, frame)
                except Exception:
                    log.exception("handling a frame from %s failed", self.remote)
        except DirectRefused as exc:
            log.warning("direct connection to %s dropped: %s", self.remote, exc)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("direct connection to %s ended: %r", self.remote, exc)
        self._mark_down()

    async def wait_open(self, timeout: float) -> bool:
        """True once a connection is chosen; False if none is within ``timeout``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.opened.wait()
        return self.is_open

    def _mark_down(self) -> None:
        if self.down.is_set():
            return
        self.down.set()
        if self._chosen is not None:
            self._chosen[0].close()
        for server in self._servers:
            server.close()
        if self.opened.is_set():
            log.info("direct connection to %s closed", self.remote)
            self._on_down(self)

    # --- sending ---------------------------------------------------------------------

    async def send(self, frames: Iterable[bytes]) -> None:
        """Write frames, one record each, then wait while more than HIGH_WATER bytes
        wait for the socket. :class:`LinkDown` if the connection is not open."""
        chosen = self._chosen
        if chosen is None or not self.is_open:
            raise LinkDown(f"no direct connection to {self.remote}")
        conn, channel = chosen
        try:
            for frame in frames:
                conn.writer.write(channel.seal(frame))
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await conn.writer.drain()
        except TimeoutError:
            self._mark_down()
            raise LinkDown(
                f"direct connection to {self.remote} took nothing for {DRAIN_TIMEOUT:g} s"
            ) from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: written after close
            self._mark_down()
            raise LinkDown(f"direct connection to {self.remote} failed: {exc}") from exc

    async def close(self) -> None:
        """Close every connection and listener; the attempt is down."""
        self._mark_down()
        for conn in list(self._conns):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _read_record(reader: asyncio.StreamReader, channel: Channel) -> bytes:
    length = record_length(await reader.readexactly(LENGTH.size))
    return channel.open(await reader.readexactly(length))
