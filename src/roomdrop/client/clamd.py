"""A client of clamd, ClamAV's scanning daemon: a file handed to it with ``INSTREAM``
over a unix socket (``unix:///run/clamav/clamd.ctl``) or TCP (``tcp://127.0.0.1:3310``),
read and sent in 1 MiB pieces, so memory stays bounded whatever its size.

The protocol (clamd(8)): the command ``zINSTREAM\\0``; then the data as chunks, each a
4-byte big-endian length and that many bytes, ended by a zero length; then one reply,
ended by ``\\0``: ``stream: OK``, ``stream: <signature> FOUND``, or ``<why> ERROR``.
Past its ``StreamMaxLength`` clamd answers ``INSTREAM size limit exceeded. ERROR`` and
closes the connection while the file is still being sent, so the reply is read from the
start, beside the sending. ``zVERSION\\0`` gets the daemon's version.

Whatever keeps clamd from answering (no socket, refused, reset, a timeout, a reply that
says ERROR or is not understood) is one :class:`ClamdError`, with a message that names
the daemon and the reason: the caller fails closed on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "PIECE",
    "Address",
    "ClamdError",
    "Verdict",
    "parse_reply",
    "parse_url",
    "scan_file",
    "version",
]

PIECE: Final = 1024 * 1024
"""Bytes read from the file and sent as one INSTREAM chunk."""
CONNECT_TIMEOUT: Final = 5.0
_END: Final = b"\0\0\0\0"
_REPLY_LIMIT: Final = 4096


class ClamdError(Exception):
    """clamd cannot be reached, did not answer in time, or answered with an error."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where clamd listens: a unix socket ``path``, or ``host`` and ``port``."""

    url: str
    path: str | None = None
    host: str | None = None
    port: int | None = None


def parse_url(url: str) -> Address:
    """``unix:///PATH/TO/clamd.sock`` or ``tcp://HOST:PORT``; ValueError otherwise."""
    usage = f"{url!r} is no clamd address: unix:///PATH/TO/clamd.sock or tcp://HOST:PORT"
    parts = urlsplit(url.strip())
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(usage + " (the socket's absolute path after unix://)")
        return Address(url, path=parts.path)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            raise ValueError(usage + " (the port is a number, 1-65535)") from None
        if not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ValueError(usage)
        return Address(url, host=parts.hostname, port=port)
    raise ValueError(usage)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What clamd said of a stream."""

    signature: str | None
    """The signature it found; None: nothing found."""

    @property
    def clean(self) -> bool:
        return self.signature is None


def parse_reply(reply: bytes) -> Verdict:
    """clamd's reply to ``INSTREAM`` (its trailing ``\\0`` or not). ClamdError for an
    ``ERROR`` reply, or one that says neither OK nor FOUND."""
    text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
    body = text.removeprefix("stream:").strip()
    if body.endswith(" FOUND") and body[: -len(" FOUND")].strip():
        return Verdict(body[: -len(" FOUND")].strip())
    if body == "OK":
        return Verdict(None)
    if body.endswith("ERROR"):
        said = body.removesuffix("ERROR").strip() or "ERROR"
        if "size limit exceeded" in said:
            said += " (the file is larger than its StreamMaxLength)"
        raise ClamdError(f"clamd answered {said}")
    raise ClamdError(f"clamd answered {text!r}, which is neither OK nor FOUND")


async def scan_file(address: Address, path: Path, *, timeout: float) -> Verdict:
    """Stream the file at ``path`` to clamd and return its verdict. ClamdError if it
    cannot be had within ``timeout`` seconds (the connection, the sending and the scan);
    OSError if the file cannot be read."""
    try:
        async with asyncio.timeout(timeout):
            return await _scan(address, path)
    except TimeoutError:
        raise ClamdError(f"clamd at {address.url} gave no answer within {timeout:g} s") from None


async def version(address: Address, *, timeout: float = CONNECT_TIMEOUT) -> str:
    """The daemon's version (``ClamAV 1.4.6/…``): whether it answers at all."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(address)
            try:
                writer.write(b"zVERSION\0")
                await writer.drain()
                return (await _read_reply(address, reader)).rstrip(b"\0").decode(errors="replace")
            finally:
                await _close(writer)
    except TimeoutError:
        raise ClamdError(f"clamd at {address.url} gave no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ClamdError(f"lost clamd at {address.url}: {_why(exc)}") from None


async def _scan(address: Address, path: Path) -> Verdict:
    reader, writer = await _connect(address)
    # read from the start: past StreamMaxLength clamd answers (and closes) mid-stream
    reply = asyncio.ensure_future(_read_reply(address, reader))
    try:
        with path.open("rb") as source:
            writer.write(b"zINSTREAM\0")
            while not reply.done():
                piece = await asyncio.to_thread(source.read, PIECE)
                try:
                    writer.write(struct.pack("!I", len(piece)) if piece else _END)
                    if piece:
                        writer.write(piece)
                    await writer.drain()
                except OSError:
                    break  # clamd closed the connection: its reply, if any, says why
                if not piece:
                    break
        return parse_reply(await reply)
    finally:
        if not reply.done():
            reply.cancel()
        elif not reply.cancelled():
            reply.exception()  # retrieved (a file that could not be read raised instead)
        await _close(writer)


async def _connect(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if address.path is not None:
                return await asyncio.open_unix_connection(address.path, limit=_REPLY_LIMIT)
            return await asyncio.open_connection(address.host, address.port, limit=_REPLY_LIMIT)
    except TimeoutError:
        raise ClamdError(
            f"cannot reach clamd at {address.url}: no connection within {CONNECT_TIMEOUT:g} s"
        ) from None
    except OSError as exc:
        raise ClamdError(f"cannot reach clamd at {address.url}: {_why(exc)}") from None


async def _read_reply(address: Address, reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\0")
    except asyncio.IncompleteReadError as exc:
        said = exc.partial.decode(errors="replace").strip()
        raise ClamdError(
            f"clamd at {address.url} closed the connection "
            + (f"after {said!r}" if said else "without an answer")
        ) from None
    except asyncio.LimitOverrunError:
        raise ClamdError(f"clamd at {address.url} answered more than a reply") from None
    except OSError as exc:
        raise ClamdError(f"lost clamd at {address.url}: {_why(exc)}") from None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
