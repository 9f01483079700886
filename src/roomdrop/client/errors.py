"""The client's connection errors (kept apart so that importing them costs nothing)."""

from __future__ import annotations

__all__ = ["LinkDown", "NotConnected"]


class NotConnected(ConnectionError):
    """The WebSocket is down at the moment (the client is reconnecting)."""


class LinkDown(ConnectionError):
    """The data channel is not open (never opened, or closed since)."""
