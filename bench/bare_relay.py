"""A bare FastAPI + uvicorn WebSocket relay: the baseline server of ``bench/relay.py``.

    .venv/bin/python bench/bare_relay.py --port 8765

``/ws/receiver`` registers the receiving socket; every message that arrives on
``/ws/sender`` is forwarded to it as it is, one at a time, with no parsing, checking or
staging. With ``--verify``, each message's sha256 (the first 32 bytes of its 72-byte
header) is checked before it is forwarded: the hashing roomdrop's server does per chunk,
and nothing else. ``GET /healthz`` answers once the server is up. uvicorn runs with the
options ``roomdrop serve`` uses (:func:`roomdrop.server.run.serve`): the sans-I/O
websockets backend, permessage-deflate off, uvloop and the same ``ws_max_size``, and the
same malloc settings (``roomdrop.allocator.tune_allocator``, copied here). It imports
nothing of roomdrop, so its memory is FastAPI's and uvicorn's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import sys

import uvicorn
from fastapi import FastAPI, WebSocket

MAX_WS_MESSAGE = 2 * 1024 * 1024
"""roomdrop.server.run.MAX_WS_MESSAGE (``bench/relay.py`` passes that one in); not imported
here, so that this server's memory is FastAPI's and uvicorn's only."""


def tune_allocator() -> bool:
    """A copy of ``roomdrop.allocator.tune_allocator`` (glibc: buffers up to 4 MiB from
    the heap, up to 16 MiB of freed heap kept), so both servers run with one malloc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(-3, 4 * 1024 * 1024)) and bool(mallopt(-1, 16 * 1024 * 1024))


HEADER_SIZE = 72
"""roomdrop.protocol.frames.HEADER_SIZE: the sender puts this many bytes in front of each
block; with ``--verify`` the first 32 are the block's sha256."""


def create_app(verify: bool = False) -> FastAPI:
    """The relay; with ``verify``, each block's sha256 is checked against the one in its
    header before it is forwarded (the work roomdrop's server does per chunk, nothing
    else), and a mismatch closes the sender's socket."""
    app = FastAPI()
    receivers: list[WebSocket] = []
    receiver_joined = asyncio.Event()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws/receiver")
    async def receiver(websocket: WebSocket) -> None:
        await websocket.accept()
        receivers[:] = [websocket]
        receiver_joined.set()
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the receiver sends nothing; wait for it to leave

    @app.websocket("/ws/sender")
    async def sender(websocket: WebSocket) -> None:
        await websocket.accept()
        await receiver_joined.wait()
        target = receivers[0]
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is not None:
                if verify and hashlib.sha256(memoryview(data)[HEADER_SIZE:]).digest() != data[:32]:
                    await websocket.close(1007, "bad sha256")
                    break
                await target.send_bytes(data)
            elif message.get("text") is not None:
                await target.send_text(message["text"])

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws-max-size", type=int, default=MAX_WS_MESSAGE)
    parser.add_argument("--verify", action="store_true", help="check each block's sha256")
    args = parser.parse_args()
    tune_allocator()
    uvicorn.run(
        create_app(args.verify),
        host=args.host,
        port=args.port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=args.ws_max_size,
        log_level="warning",
        timeout_graceful_shutdown=5,
        loop="uvloop",
    )


if __name__ == "__main__":
    main()
