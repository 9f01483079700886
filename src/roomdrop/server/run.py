"""Run the server under uvicorn, with JSON-lines logs."""

from __future__ import annotations

import ctypes
import json
import logging
import re
import socket
import sys
import time
from typing import Any

import uvicorn

from roomdrop.server.app import create_app
from roomdrop.server.hub import Hub
from roomdrop.server.settings import Settings

__all__ = ["JsonFormatter", "serve", "tune_allocator"]

MAX_WS_MESSAGE = 2 * 1024 * 1024
"""Largest WebSocket message uvicorn accepts (a 1 MiB chunk in JSON is ~1.4 MB); larger
ones are closed with 1009, everything below is checked by the hub."""


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_BUFFERS_UP_TO = 4 * 1024 * 1024
KEEP_FREED_HEAP = 16 * 1024 * 1024


def tune_allocator() -> bool:
    """glibc's malloc: serve buffers up to 4 MiB from the heap, and keep up to 16 MiB of
    freed heap instead of handing it back to the kernel at once. True if glibc took it.

    A relayed chunk passes through buffers of 64 KiB to a few hundred KiB (the WebSocket
    reader's, the frame's, the staging's). Past glibc's default threshold (128 KiB) each
    one was a fresh mmap, page-faulted in and unmapped again: thousands of page faults
    per 100 MB relayed. The memory kept is bounded (it does not grow with what is relayed).
    Elsewhere (another libc, another OS) this does nothing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BUFFERS_UP_TO)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_FREED_HEAP)
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class RedactTokens(logging.Filter):
    """Tokens travel in the WebSocket URL's query; never write them to a log."""

    PATTERN = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1<redacted>", message), None
        return True


def log_config(level: str) -> dict[str, Any]:
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
        "filters": ["redact"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactTokens}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING"},
        },
    }


class _Server(uvicorn.Server):
    """uvicorn, but the hub pauses every transfer (and says so) before sockets close."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.hub.shutdown()
        await super().shutdown(sockets)


def serve(settings: Settings) -> None:
    tune_allocator()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=MAX_WS_MESSAGE,
        log_config=log_config(settings.log_level),
        timeout_graceful_shutdown=5,
        loop="uvloop",
    )
    _Server(config, app.state.hub).run()
