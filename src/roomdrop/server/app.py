"""The FastAPI application: ``create_app(settings)`` wires the routers to one Hub.

Every refused request gets the one error body (``routes.ErrorBody``, protocol.md §11.9):
a :class:`~roomdrop.exceptions.RoomdropError` the hub raised, with the status
:func:`status_for` gives it; a request that fails validation, and a body that is not
JSON or not UTF-8, with 422 and ``protocol-error``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from roomdrop import __version__
from roomdrop.exceptions import (
    BackendUnavailable,
    E2EError,
    Forbidden,
    InvalidTransition,
    PolicyError,
    ProtocolError,
    RoomdropError,
    TransferError,
    Unauthorized,
    UnknownTransfer,
)
from roomdrop.server.auth import TokenAuthority, load_secret
from roomdrop.server.backend import Backend
from roomdrop.server.hub import Hub
from roomdrop.server.memorybackend import MemoryBackend
from roomdrop.server.page import STATIC, PageFiles, build_page_router
from roomdrop.server.routes import build_router, refusals
from roomdrop.server.settings import Settings
from roomdrop.server.staging import RelayStaging

__all__ = ["create_app"]

log = logging.getLogger("roomdrop.server")


def status_for(exc: RoomdropError) -> int:
    """The HTTP status of a refused request."""
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, BackendUnavailable):
        return 503
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, UnknownTransfer):
        return 404
    if isinstance(exc, InvalidTransition):
        return 409
    if isinstance(exc, E2EError):
        return 422
    if isinstance(exc, PolicyError):
        return (
            429
            if exc.code in ("too-many-transfers", "rate-limited")
            else 413
            if (exc.code == "file-too-large")
            else 422
        )
    if isinstance(exc, ProtocolError | TransferError):
        return 422
    return 400


def describe(errors: list[Any]) -> str:
    """A failed validation in one line: the first error (``body.file_size: Input should
    be a valid integer``), and how many more there are."""
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    if first.get("type") == "json_invalid":
        text = f"invalid JSON: {(first.get('ctx') or {}).get('error', 'JSON decode error')}"
    else:
        loc = first.get("loc", ())
        where = ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else ""
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        text = f"{where}: {msg}" if where else msg
    return text if len(errors) <= 1 else f"{text} (and {len(errors) - 1} more)"


def install_refusals(app: FastAPI) -> None:
    """Answer every refusal with the error body."""

    @app.exception_handler(RoomdropError)
    async def refused(request: Request, exc: RoomdropError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(
            {"detail": exc.message, "code": exc.code},
            status_code=status_for(exc),
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors())
        body = {"detail": describe(errors), "code": ProtocolError.code, "errors": errors}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI could not read the body as JSON and said only 400 "There was an
            # error parsing the body": a UnicodeDecodeError (not UTF-8), or another
            # ValueError of json.loads that is not a JSONDecodeError
            body = {"detail": f"invalid JSON: {exc.__cause__}", "code": ProtocolError.code}
            return JSONResponse(body, status_code=422)
        return await http_exception_handler(request, exc)


def make_backend(settings: Settings, secret: str) -> Backend:
    """Redis if ``ROOMDROP_REDIS_URL`` is set, else this process's memory."""
    if settings.redis_url:
        from roomdrop.server.redisbackend import RedisBackend

        return RedisBackend(settings, secret)
    return MemoryBackend(settings)


def describe_backend(settings: Settings) -> str:
    if not settings.redis_url:
        return "in memory (this instance only)"
    parts = urlsplit(settings.redis_url)
    where = parts.hostname or "localhost"
    return f"shared in Redis at {where}:{parts.port or 6379}{parts.path or ''}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    secret = load_secret(settings)
    authority = TokenAuthority(secret)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        relay_root = settings.data_dir / "relay"
        purged = RelayStaging.purge(relay_root)
        if purged:
            log.info("purged %d relay staging dirs left by the last run", purged)
        await hub.start()
        sweeper = asyncio.create_task(hub.run_sweeper(), name="roomdrop-sweeper")
        log.info(
            "roomdrop %s serving; data dir %s; state %s",
            __version__,
            settings.data_dir.resolve(),
            describe_backend(settings),
        )
        try:
            yield
        finally:
            sweeper.cancel()
            await hub.close()
            await hub.backend.close()

    hub = Hub(settings, authority, backend=make_backend(settings, secret))
    # the API docs (/docs) load Swagger UI from the package's own copy
    # (fastapi-offline), not from a CDN a server may not reach; no /redoc (ReDoc's
    # bundle still fetches its logo from a CDN)
    app = FastAPIOffline(
        redoc_url=None,
        title="roomdrop",
        version=__version__,
        summary="Rooms, signalling and verified, resumable file transfers (P2P or relayed).",
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.settings = settings

    install_refusals(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, object]:
        """Liveness: the server answers, with its room and connection counts."""
        return {"status": "ok", "version": __version__, **hub.counts()}

    @app.get(
        "/metrics", tags=["operations"], response_class=PlainTextResponse, responses=refusals(503)
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics."""
        await hub.update_gauges()
        return PlainTextResponse(
            generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    app.include_router(build_router(hub), prefix="/webrtc")
    app.include_router(build_page_router(settings, authority))
    app.mount("/static", PageFiles(directory=STATIC), name="static")
    return app
