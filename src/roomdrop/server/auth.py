"""Tokens: HS256 JWTs (PyJWT) whose ``sub`` is the user id.

The secret comes from ``ROOMDROP_SECRET`` or, when that is unset, from
``DATA_DIR/secret.key``, generated once by ``roomdrop serve`` (mode 0600) and reused, so
that ``roomdrop token`` and ``roomdrop serve`` on one machine agree without any
configuration. ``roomdrop token`` never makes a secret: one it made where the server
does not look would sign tokens the server refuses (:class:`NoSecret` names where it
looked instead). Instances sharing Redis (``ROOMDROP_REDIS_URL``) without
``ROOMDROP_SECRET`` keep it in Redis instead, for the same reason.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt

from roomdrop.exceptions import Unauthorized
from roomdrop.server.settings import Settings

__all__ = ["NoSecret", "TokenAuthority", "load_secret"]

ALGORITHM = "HS256"


class NoSecret(Exception):
    """There is no secret where it was looked for, and none may be made here."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path


def load_secret(settings: Settings, *, create: bool = True) -> str:
    """The signing secret; with ``create`` (the server), made on first use."""
    if settings.secret is not None:
        return settings.secret.get_secret_value()
    if settings.redis_url:  # every instance of the deployment needs the same one
        from roomdrop.server.redisbackend import shared_secret

        return shared_secret(settings.redis_url, settings.redis_prefix)
    path = settings.data_dir / "secret.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise NoSecret(path.absolute()) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return Path(path).read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


class TokenAuthority:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def issue(self, user_id: str, ttl: int) -> str:
        now = int(time.time())
        return jwt.encode(
            {"sub": user_id, "iat": now, "exp": now + ttl}, self._secret, algorithm=ALGORITHM
        )

    def verify(self, token: str | None) -> str:
        """The token's user id, or :class:`Unauthorized` saying what is wrong."""
        if not token:
            raise Unauthorized("missing token")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(
                "token signature is invalid: it was not made with this server's secret"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not 0 < len(sub) <= 256:
            raise Unauthorized("token 'sub' is not a user id")
        return sub
