"""The server's REST endpoints a client needs (httpx): the ICE servers to use, and a
transfer's current record.

The only module that imports ``httpx``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from roomdrop.exceptions import ServerUnreachable, Unauthorized

__all__ = ["ServerApi"]


class ServerApi:
    def __init__(self, server: str, token: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(server if "://" in server else f"http://{server}")
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        self.base = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/webrtc"
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=timeout, trust_env=False
        )

    async def ice_servers(self) -> list[dict[str, Any]]:
        """``GET /webrtc/config``: the RTCIceServer list the server hands out."""
        body = await self._get("/config")
        servers = body.get("ice_servers", []) if isinstance(body, dict) else []
        return [s for s in servers if isinstance(s, dict) and "urls" in s]

    async def transfer(self, room: str, transfer_id: str) -> dict[str, Any] | None:
        """The server's record of a transfer, or None if it does not know it."""
        path = f"/rooms/{quote(room, safe='')}/file-transfer/{transfer_id}/progress"
        body = await self._get(path, missing_ok=True)
        return body if isinstance(body, dict) else None

    async def _get(self, path: str, *, missing_ok: bool = False) -> Any:
        try:
            response = await self._client.get(self.base + path)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(f"cannot reach the server at {self.base}: {exc}") from None
        if response.status_code == 401:
            raise Unauthorized(response.json().get("detail", "unauthorized"))
        if missing_ok and response.status_code in (403, 404):
            return None
        response.raise_for_status()
        return response.json()

    async def close(self) -> None:
        await self._client.aclose()
