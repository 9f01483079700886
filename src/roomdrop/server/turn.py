"""TURN credentials that expire: the TURN REST API scheme (coturn's ``use-auth-secret``).

The server and the TURN server share a secret; a client gets the username
``<expiry unix time>:<user id>`` and the password base64(HMAC-SHA1(secret, username)),
valid until the expiry. No long-lived TURN password ever reaches a client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

__all__ = ["turn_credentials", "turn_server"]


def turn_credentials(secret: str, user: str, *, now: float, ttl: int) -> tuple[str, str]:
    """(username, credential) for ``user``, valid for ``ttl`` seconds from ``now``."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def turn_server(urls: list[str], secret: str, user: str, *, now: float, ttl: int) -> dict[str, Any]:
    """The RTCIceServer entry for ``urls`` with fresh credentials for ``user``."""
    username, credential = turn_credentials(secret, user, now=now, ttl=ttl)
    return {"urls": urls, "username": username, "credential": credential}
