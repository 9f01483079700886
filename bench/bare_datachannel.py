"""A bare aiortc data channel between two processes: the P2P baseline of ``bench/commands.py``.

    .venv/bin/python bench/bare_datachannel.py receive DEST SIZE   # the answerer
    .venv/bin/python bench/bare_datachannel.py send SOURCE          # the offerer

No roomdrop: one ``RTCPeerConnection`` per process (uvloop), ``RTCConfiguration(iceServers=[])``
so nothing but the host candidate exists, and ICE pinned to 127.0.0.1 (``aioice`` never
offers loopback by itself, so ``aioice.ice.get_host_addresses`` is replaced before the peer
connection is made). Signalling is the parent's: each side prints its session description
as one JSON line on stdout and reads the other's as one JSON line on stdin. The receiver
prints ``{"ready": true}`` first, once aiortc is imported and its peer connection exists.

The sender opens one reliable, ordered channel, reads the file in 64 KiB blocks and sends
each block as two messages of 32,840 bytes (a dummy 72-byte header + 32,768 bytes of data),
the way roomdrop fits a 64 KiB chunk into aiortc's 65,536-byte messages. Flow control: when
more than 1 MiB minus one block is buffered it waits for ``bufferedamountlow``
(``bufferedAmountLowThreshold`` = 512 KiB), so at most ~1 MiB is ever buffered. The receiver
writes each message's data (header dropped) to DEST; on the last byte it notes the time and
sends ``done``; the sender then closes. No hashing on either side, nothing fsynced.

Each side ends by printing one JSON line: the sender ``{"open": T}`` (the channel's open
event), the receiver ``{"end": T, "bytes": N}`` (the last byte written), on the system-wide
monotonic clock, so ``end - open`` is the transfer time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aioice.ice
import uvloop
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

BLOCK = 64 * 1024
PART = 32 * 1024
HEADER = bytes(72)  # stands in for roomdrop's frame header, for equal bytes on the wire
HIGH = 1024 * 1024 - 2 * (len(HEADER) + PART)  # wait above this, so <= 1 MiB is buffered
LOW = 512 * 1024
TIMEOUT = 600.0


def now() -> float:
    """System-wide monotonic clock, comparable between processes on one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def pin_loopback() -> None:
    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = loopback_only


def new_peer_connection() -> RTCPeerConnection:
    pin_loopback()
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def read_description() -> RTCSessionDescription:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise RuntimeError("stdin closed before a session description came")
    desc = json.loads(line)
    return RTCSessionDescription(sdp=desc["sdp"], type=desc["type"])


def emit_description(pc: RTCPeerConnection) -> None:
    desc = pc.localDescription
    emit({"type": desc.type, "sdp": desc.sdp})


async def send(source: Path) -> dict[str, Any]:
    pc = new_peer_connection()
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[float] = loop.create_future()
    done: asyncio.Future[None] = loop.create_future()
    try:
        channel = pc.createDataChannel("bench")  # reliable and ordered
        channel.bufferedAmountLowThreshold = LOW
        low = asyncio.Event()
        channel.on("open", lambda: opened.done() or opened.set_result(now()))
        channel.on("bufferedamountlow", low.set)
        channel.on("message", lambda m: done.done() or done.set_result(None))
        await pc.setLocalDescription(await pc.createOffer())  # gathers the one candidate
        emit_description(pc)
        await pc.setRemoteDescription(await read_description())
        start = await asyncio.wait_for(opened, 60)
        with source.open("rb") as f:
            while block := f.read(BLOCK):
                channel.send(HEADER + block[:PART])
                if len(block) > PART:
                    channel.send(HEADER + block[PART:])
                if channel.bufferedAmount > HIGH:
                    low.clear()
                    await asyncio.wait_for(low.wait(), TIMEOUT)
        await asyncio.wait_for(done, TIMEOUT)
    finally:
        await pc.close()
    return {"open": start}


async def receive(dest: Path, size: int) -> dict[str, Any]:
    pc = new_peer_connection()
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[float] = loop.create_future()
    closed = asyncio.Event()
    got = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            def on_message(message: bytes | str) -> None:
                nonlocal got
                if not isinstance(message, bytes):
                    raise RuntimeError(f"unexpected text message {message!r}")
                got += os.write(fd, memoryview(message)[len(HEADER) :])
                if got >= size and not finished.done():
                    finished.set_result(now())
                    channel.send(b"done")

            channel.on("message", on_message)
            channel.on("close", closed.set)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("closed", "failed"):
                closed.set()

        emit({"ready": True})
        await pc.setRemoteDescription(await read_description())
        await pc.setLocalDescription(await pc.createAnswer())
        emit_description(pc)
        end = await asyncio.wait_for(finished, TIMEOUT)
        # the sender closes once it has the "done"; a missed close only costs this wait
        await asyncio.wait_for(closed.wait(), 10)
    finally:
        os.close(fd)
        await pc.close()
    return {"end": end, "bytes": got}


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "send" and len(sys.argv) == 3:
        result = uvloop.run(send(Path(sys.argv[2])))
    elif role == "receive" and len(sys.argv) == 4:
        result = uvloop.run(receive(Path(sys.argv[2]), int(sys.argv[3])))
    else:
        raise SystemExit(__doc__.split("\n\n")[1])
    emit(result)


if __name__ == "__main__":
    main()
