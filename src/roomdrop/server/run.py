"""Run the server under uvicorn, with JSON-lines logs."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from roomdrop.allocator import tune_allocator
from roomdrop.server.app import create_app
from roomdrop.server.hub import Hub
from roomdrop.server.routes import ABORT
from roomdrop.server.settings import Settings

__all__ = ["JsonFormatter", "serve"]

MAX_WS_MESSAGE = 2 * 1024 * 1024
"""Largest WebSocket message uvicorn accepts (a 1 MiB chunk in JSON is ~1.4 MB); larger
ones are closed with 1009, everything below is checked by the hub."""


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


class WebSockets(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, and a way to drop a connection at once: the scope's
    ``roomdrop.abort`` extension. ASGI can only send a close frame, which waits behind
    everything unsent; a peer that reads nothing would keep the connection forever."""

    async def run_asgi(self) -> None:
        self.scope.setdefault("extensions", {})[ABORT] = {"abort": self.transport.abort}
        await super().run_asgi()


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
        ws=WebSockets,
        ws_per_message_deflate=False,
        ws_max_size=MAX_WS_MESSAGE,
        log_config=log_config(settings.log_level),
        timeout_graceful_shutdown=5,
        loop="uvloop",
    )
    _Server(config, app.state.hub).run()
