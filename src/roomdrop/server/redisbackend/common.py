"""What every part of the Redis backend shares: key names, and Redis errors as
:class:`~roomdrop.exceptions.BackendUnavailable`."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import RedisError

from roomdrop.exceptions import BackendUnavailable

__all__ = ["Keys", "text", "unavailable"]

P = ParamSpec("P")
R = TypeVar("R")


def unavailable(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis out of reach is :class:`BackendUnavailable` (HTTP 503), never a 500."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except RedisError as exc:
            raise BackendUnavailable(f"the shared state (Redis) is out of reach: {exc}") from None

    return guarded


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Keys:
    """The deployment's key and channel names (the map in the package docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.changed = f"{prefix}:changed".encode()
        """The channel of record changes."""

    def k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def user_channel(self, room_id: str, user_id: str) -> bytes:
        return self.k("u", room_id, user_id).encode()

    def room_channel(self, room_id: str) -> bytes:
        return self.k("r", room_id).encode()

    @staticmethod
    def who(room_id: str, user_id: str) -> str:
        """A participant as a member of the grace and hosted sets."""
        return json.dumps([room_id, user_id])
