"""Trust on first use: the device keys this CLI has trusted, per server and user id, in
``trusted-keys.json`` beside the device key (:mod:`.keys`), written atomically under a
lock (two commands at once lose neither's change).

**Threat model.** The server hands out every participant's device key, so a server that
wants to read a transfer can hand out a key of its own instead. This file is what
catches it doing so *later*: the first key seen for a user on a server is trusted and
remembered; a different key for that user afterwards is refused (``key-changed``) by
``send`` and ``receive`` alike, and kept here as *pending*, until the person says to
trust it (``roomdrop keys trust USER``, or ``--trust-new-key`` for one command) — after
comparing the new safety number with that user, which is the only way to tell a new
device or a reinstall from someone in the middle. It cannot catch a key swapped from the
very first contact: comparing the safety number once, out of band, does. Trust is per
server (its URL, ``ws``/``http`` alike): user ids are the server's, and a user ``bob``
on one server is no one in particular on another. The file holds public keys and user
ids only (no secret), but whoever can write it can make this CLI trust a key, so it is
kept with the device key, mode 0600.

A user may have several trusted keys (several devices, or a key trusted anew); trusting
adds a key, it forgets none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from roomdrop.client.configdir import ConfigError, locked, read_private, replace

__all__ = ["TRUST_FILE", "PeerKeys", "Seen", "Trusted", "server_id"]

TRUST_FILE: Final = "trusted-keys.json"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def server_id(url: str) -> str:
    """The server a URL names, as trust is kept for it: ``http``/``https`` (for ``ws``
    and ``wss`` too), the host in lower case, the port unless it is the scheme's
    default, and the path without its trailing ``/``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


class Seen(Enum):
    """What :meth:`PeerKeys.check` made of a key."""

    KNOWN = "known"
    """trusted already"""
    FIRST = "first"
    """the first key seen for that user on that server: trusted from now on"""
    CHANGED = "changed"
    """not one of the user's trusted keys: refused, and kept as pending"""


@dataclass
class Trusted:
    """One user's keys on one server."""

    trusted: list[str] = field(default_factory=list)
    pending: str | None = None


class PeerKeys:
    """The trusted keys file of one config directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / TRUST_FILE

    def _read(self) -> dict[str, dict[str, Trusted]]:
        raw = read_private(self.path)
        if raw is None:
            return {}
        try:
            document = json.loads(raw)
            servers = document["servers"]
            return {
                server: {
                    user: Trusted(list(entry.get("trusted", [])), entry.get("pending"))
                    for user, entry in users.items()
                }
                for server, users in servers.items()
            }
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(
                f"the trusted keys file {self.path} is damaged; it is not used. Move it "
                "away to start trusting anew (every peer's next key is then a first one)"
            ) from None

    def _write(self, servers: dict[str, dict[str, Trusted]]) -> None:
        document: dict[str, Any] = {
            "version": 1,
            "servers": {
                server: {
                    user: {"trusted": entry.trusted, "pending": entry.pending}
                    for user, entry in sorted(users.items())
                }
                for server, users in sorted(servers.items())
            },
        }
        replace(self.path, (json.dumps(document, indent=2) + "\n").encode())

    def all(self) -> dict[str, dict[str, Trusted]]:
        """Every server's users and their keys."""
        return self._read()

    def get(self, server: str, user: str) -> Trusted:
        return self._read().get(server_id(server), {}).get(user, Trusted())

    def check(self, server: str, user: str, key: str) -> Seen:
        """Whether ``key`` is trusted for ``user`` on ``server``; a first key is trusted
        (and written down) now, a changed one kept as pending."""
        sid = server_id(server)
        with locked(self.path):
            servers = self._read()
            entry = servers.setdefault(sid, {}).setdefault(user, Trusted())
            if key in entry.trusted:
                return Seen.KNOWN
            if not entry.trusted:
                entry.trusted.append(key)
                entry.pending = None
                self._write(servers)
                return Seen.FIRST
            if entry.pending != key:
                entry.pending = key
                self._write(servers)
            return Seen.CHANGED

    def trust(self, server: str, user: str, key: str) -> None:
        """Trust ``key`` for ``user`` on ``server`` (besides the keys trusted already)."""
        sid = server_id(server)
        with locked(self.path):
            servers = self._read()
            entry = servers.setdefault(sid, {}).setdefault(user, Trusted())
            if key not in entry.trusted:
                entry.trusted.append(key)
            if entry.pending == key:
                entry.pending = None
            self._write(servers)

    def trust_pending(self, user: str, server: str | None = None) -> list[tuple[str, str]]:
        """Trust the pending key of ``user`` (on ``server``, else on every server where it
        has one): the (server, key) pairs trusted now."""
        wanted = server_id(server) if server is not None else None
        done: list[tuple[str, str]] = []
        with locked(self.path):
            servers = self._read()
            for sid, users in servers.items():
                entry = users.get(user)
                if entry is None or entry.pending is None or wanted not in (None, sid):
                    continue
                if entry.pending not in entry.trusted:
                    entry.trusted.append(entry.pending)
                done.append((sid, entry.pending))
                entry.pending = None
            if done:
                self._write(servers)
        return done
