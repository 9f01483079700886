"""The server's REST endpoints a client needs (httpx): the ICE servers to use, a
transfer's current record, the caller's transfers, and cancelling one.

The only module that imports ``httpx``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from roomdrop.exceptions import RoomdropError, ServerUnreachable, Unauthorized

__all__ = ["ServerApi", "api_base"]


def api_base(server: str) -> str:
    """``http://host:port`` (or ``ws://``, ``https://``, ``wss://``) to its ``/webrtc``."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/webrtc"


class ServerApi:
    """REST calls to one of ``servers``: first the one ``preferred()`` names (the server
    the client's WebSocket is connected to), then the others in order, moving on only
    when one cannot be reached at all (a transport error)."""

    def __init__(
        self,
        servers: str | Sequence[str],
        token: str,
        *,
        timeout: float = 10.0,
        preferred: Callable[[], str | None] | None = None,
    ) -> None:
        listed = [servers] if isinstance(servers, str) else list(servers)
        if not listed:
            raise ValueError("no server URL")
        self.bases = {server: api_base(server) for server in listed}
        self._preferred = preferred
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=timeout, trust_env=False
        )

    @property
    def base(self) -> str:
        """The ``/webrtc`` base URL a call tries first."""
        return self.bases[self._order()[0]]

    def _order(self) -> list[str]:
        first = self._preferred() if self._preferred is not None else None
        servers = list(self.bases)
        if first in self.bases:
            servers.remove(first)
            servers.insert(0, first)
        return servers

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

    async def transfers(self, status: str | None = None) -> list[dict[str, Any]]:
        """``GET /webrtc/file-transfers``: the caller's transfers (of one ``status``)."""
        body = await self._get("/file-transfers", params={"status": status} if status else None)
        return [t for t in body if isinstance(t, dict)] if isinstance(body, list) else []

    async def cancel(self, room: str, transfer_id: str, reason: str) -> dict[str, Any]:
        """``DELETE`` a transfer (either party): its record as the server left it. A
        refusal raises :class:`~roomdrop.exceptions.RoomdropError` with the server's code
        and reason (``not-found``, ``invalid-transition``, ...)."""
        path = f"/rooms/{quote(room, safe='')}/file-transfer/{transfer_id}"
        body = await self._get(path, method="DELETE", params={"reason": reason}, refused=True)
        return body if isinstance(body, dict) else {}

    async def _get(
        self,
        path: str,
        *,
        missing_ok: bool = False,
        method: str = "GET",
        params: dict[str, str] | None = None,
        refused: bool = False,
    ) -> Any:
        """``refused``: a 4xx answer raises the server's own code and reason."""
        failures: list[tuple[str, httpx.HTTPError]] = []
        for server in self._order():
            base = self.bases[server]
            try:
                response = await self._client.request(method, base + path, params=params)
            except httpx.HTTPError as exc:
                failures.append((base, exc))
                continue
            if response.status_code == 401:
                raise Unauthorized(response.json().get("detail", "unauthorized"))
            if missing_ok and response.status_code in (403, 404):
                return None
            if refused and 400 <= response.status_code < 500:
                raise refusal(response)
            response.raise_for_status()
            return response.json()
        if len(failures) == 1:
            base, error = failures[0]
            raise ServerUnreachable(f"cannot reach the server at {base}: {describe(error)}")
        listed = ", ".join(f"{base} ({describe(error)})" for base, error in failures)
        raise ServerUnreachable(f"cannot reach any server: {listed}")

    async def close(self) -> None:
        await self._client.aclose()


def refusal(response: httpx.Response) -> RoomdropError:
    """The server's refusal (``{"detail", "code"}``) as an error with its code."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    error = RoomdropError(str(detail or f"HTTP {response.status_code}"))
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, str):
        error.code = code
    return error


def describe(exc: httpx.HTTPError) -> str:
    return str(exc) or exc.__class__.__name__
