"""A recording, tampering TCP proxy on 127.0.0.1, for tests that look at what really
crosses the wire between a ``roomdrop`` command and ``roomdrop serve``.

:class:`Proxy` listens on a port of its own and opens one connection to the server for
each connection a client makes to it. Every byte is recorded as it arrived
(:attr:`Proxy.raw`, per direction). A connection whose first request is a WebSocket
upgrade is parsed frame by frame after the handshake (RFC 6455 §5.2) in both directions:
:attr:`Proxy.messages` holds every frame's payload as its endpoint sees it (a client's
frames unmasked), and each frame from the server to the client can be replaced before
it goes on (``tamper``), or held back (:meth:`Proxy.hold`): a held proxy stops reading
from the server, so what the server sends waits in its own buffers, as for a client
that stopped reading. Anything else (plain HTTP) is copied as it is.

The proxy's socket to the server has a small receive buffer (``rcvbuf``), so that a
hold backs the server up after a little data, not after the megabytes a loopback
socket's buffer grows to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["DOWN", "OP_BINARY", "OP_TEXT", "UP", "Proxy", "WsFrame", "parse_frame"]

DOWN: Final = "down"
"""From the server to the client."""
UP: Final = "up"
"""From the client to the server."""
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
_HEAD_END: Final = b"\r\n\r\n"
_READ: Final = 256 * 1024

Tamper = Callable[[int, bytes], bytes | None]
"""``tamper(n, payload)``, for the ``n``-th binary frame from the server (from 1): a
payload of the same length to forward instead, or None to forward it as it came."""


@dataclass(frozen=True, slots=True)
class WsFrame:
    """One WebSocket frame the proxy passed on."""

    direction: str
    opcode: int
    fin: bool
    payload: bytes
    """As its endpoint sent it (unmasked)."""
    forwarded: bytes
    """As the proxy passed it on (``payload`` unless tampered with)."""
    number: int
    """Its rank among the binary frames from the server (from 1); 0 for any other."""


def parse_frame(buffer: bytes | bytearray) -> tuple[int, int, int, bool, bytes | None] | None:
    """The WebSocket frame at the start of ``buffer``: ``(total length, header length,
    opcode, fin, masking key or None)``, or None while it is incomplete."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    length, at = second & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack_from(">H", buffer, 2)
        at = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack_from(">Q", buffer, 2)
        at = 10
    key = None
    if second & 0x80:
        if len(buffer) < at + 4:
            return None
        key = bytes(buffer[at : at + 4])
        at += 4
    total = at + length
    if len(buffer) < total:
        return None
    return total, at, first & 0x0F, bool(first & 0x80), key


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class Proxy:
    """``await Proxy(server.port).start()``; clients connect to :attr:`url`."""

    def __init__(
        self,
        target_port: int,
        *,
        tamper: Tamper | None = None,
        hold_after: int | None = None,
        rcvbuf: int = 32 * 1024,
    ) -> None:
        self.target_port = target_port
        self.tamper = tamper
        self.hold_after = hold_after
        """Hold (:meth:`hold`) once this many binary frames from the server went on."""
        self.rcvbuf = rcvbuf
        self.raw: dict[str, bytearray] = {DOWN: bytearray(), UP: bytearray()}
        """Every byte that arrived, per direction, of every connection, in order."""
        self.messages: list[WsFrame] = []
        self.errors: list[BaseException] = []
        """What went wrong inside the proxy (a failed ``tamper``, say): a test checks
        it is empty, since the proxy can only drop the connection then."""
        self.binary_down = 0
        self.connections = 0
        self.upgraded = 0
        self.held = asyncio.Event()
        """Set while the proxy holds what comes from the server."""
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def hold(self) -> None:
        """Stop passing on (and reading) what the server sends."""
        self._flowing.clear()
        self.held.set()

    def release(self) -> None:
        self.held.clear()
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and drop every connection (each one's pumps end by themselves
        once their sockets are gone)."""
        self.release()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def frames(self, direction: str, opcode: int | None = None) -> list[WsFrame]:
        return [
            m
            for m in self.messages
            if m.direction == direction and (opcode is None or m.opcode == opcode)
        ]

    # --- one connection -----------------------------------------------------------

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._writers.append(cwriter)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
            except OSError:
                sock.close()
                cwriter.transport.abort()
                return
            sreader, swriter = await asyncio.open_connection(sock=sock, limit=_READ)
            self._writers.append(swriter)
            websocket: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            pumps = [
                asyncio.create_task(self._up(creader, swriter, websocket)),
                asyncio.create_task(self._down(sreader, cwriter, websocket)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                # one side ended: let the other pass on what it still has, briefly
                await asyncio.wait(pumps, timeout=1.0)
            finally:
                for pump in pumps:
                    pump.cancel()
                for outcome in await asyncio.gather(*pumps, return_exceptions=True):
                    if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                        self.errors.append(outcome)
                for writer in (swriter, cwriter):
                    writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _up(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        websocket: asyncio.Future[bool],
    ) -> None:
        try:
            head = await reader.readuntil(_HEAD_END)
        except asyncio.IncompleteReadError as exc:
            head = exc.partial
        except (ConnectionError, asyncio.LimitOverrunError):
            head = b""
        self.raw[UP] += head
        upgrade = b"\r\nupgrade: websocket" in head.lower()
        websocket.set_result(upgrade)
        if not head:
            return
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
            if upgrade:
                await self._frames(reader, writer, UP)
            else:
                await self._copy(reader, writer, UP)

    async def _down(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        websocket: asyncio.Future[bool],
    ) -> None:
        upgrade = await websocket
        with contextlib.suppress(ConnectionError):
            if upgrade:
                try:
                    head = await reader.readuntil(_HEAD_END)
                except asyncio.IncompleteReadError as exc:
                    head = exc.partial
                self.raw[DOWN] += head
                writer.write(head)
                await writer.drain()
                if not head.startswith(b"HTTP/1.1 101"):
                    await self._copy(reader, writer, DOWN)
                    return
                self.upgraded += 1
                await self._frames(reader, writer, DOWN)
            else:
                await self._copy(reader, writer, DOWN)

    async def _copy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        while data := await reader.read(_READ):
            self.raw[direction] += data
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        down = direction == DOWN
        buffer = bytearray()
        while True:
            if down:
                await self._flowing.wait()
            data = await reader.read(_READ)
            if not data:
                break
            self.raw[direction] += data
            buffer += data
            while (parsed := parse_frame(buffer)) is not None:
                total, header, opcode, fin, key = parsed
                frame = bytes(buffer[:total])
                del buffer[:total]
                payload = frame[header:] if key is None else unmask(frame[header:], key)
                forwarded, number = payload, 0
                if down and opcode == OP_BINARY:
                    self.binary_down += 1
                    number = self.binary_down
                    if self.tamper is not None:
                        replaced = self.tamper(number, payload)
                        if replaced is not None:
                            assert key is None, "the server's frames are not masked"
                            assert len(replaced) == len(payload), "tamper keeps the length"
                            forwarded = bytes(replaced)
                            frame = frame[:header] + forwarded
                self.messages.append(WsFrame(direction, opcode, fin, payload, forwarded, number))
                if down:
                    await self._flowing.wait()
                writer.write(frame)
                await writer.drain()
                if down and number and number == self.hold_after:
                    self.hold()
        if buffer:
            writer.write(bytes(buffer))
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()
