"""The room page (``GET /`` and ``/static/…``) and guest sign-in (``/webrtc/guest``).

Guests sign in with a display name instead of a token; the server signs a token for the
user id ``<name>#<4 hex digits>``. Guest sign-in is on by default only when the server
listens on a loopback address (a machine's own users), and ``ROOMDROP_GUESTS=false``
turns it off (``true`` turns it on anywhere).
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from roomdrop.exceptions import Forbidden
from roomdrop.server.auth import TokenAuthority
from roomdrop.server.routes import refusals
from roomdrop.server.settings import Settings

__all__ = ["STATIC", "PageFiles", "build_page_router", "guests_allowed"]

STATIC = Path(__file__).with_name("static")
#: the browser revalidates the page's files (ETag) on every load, so an upgraded server
#: never runs with stale modules
REVALIDATE = {"Cache-Control": "no-cache"}


class PageFiles(StaticFiles):
    """``/static``: the page's modules, styles and vendored code."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(REVALIDATE)
        return response


class GuestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._ -]+$", description="display name"
    )


class GuestToken(BaseModel):
    token: str
    user_id: str


class GuestPolicy(BaseModel):
    enabled: bool


def guests_allowed(settings: Settings) -> bool:
    if settings.guests is not None:
        return settings.guests
    if settings.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        return False


def build_page_router(settings: Settings, authority: TokenAuthority) -> APIRouter:
    router = APIRouter()
    allowed = guests_allowed(settings)

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=REVALIDATE)

    @router.get("/webrtc/guest", tags=["page"])
    async def guest_policy() -> GuestPolicy:
        """Whether guest sign-in (a display name instead of a token) is allowed here."""
        return GuestPolicy(enabled=allowed)

    @router.post("/webrtc/guest", tags=["page"], responses=refusals(403, 422))
    async def guest_sign_in(body: GuestRequest) -> GuestToken:
        """A token for the guest user ``<name>#<4 hex digits>`` (403 when guests are off)."""
        if not allowed:
            raise Forbidden("guest sign-in is off on this server: use a token")
        user = f"{body.name.strip() or 'guest'}#{secrets.token_hex(2)}"
        return GuestToken(token=authority.issue(user, settings.token_ttl), user_id=user)

    return router
