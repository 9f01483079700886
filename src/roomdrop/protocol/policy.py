"""What files may travel: the MIME allow and deny lists (``ROOMDROP_MIME_ALLOW`` /
``ROOMDROP_MIME_DENY`` on the server, which publishes them in ``room-state``), applied by
the server to the declared type of an offer and by the receiving client (the only side
that sees plaintext) to what the first decrypted chunk shows the content to be."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Final

from roomdrop.exceptions import MimeTypeNotAllowed

__all__ = ["MimePolicy"]

GENERIC_TYPES: Final = frozenset({"application/octet-stream", "binary/octet-stream", ""})


class MimePolicy:
    """The allow and deny lists (shell-style patterns, case-insensitive; deny wins, an
    empty allow list allows everything not denied)."""

    def __init__(self, allow: Sequence[str], deny: Sequence[str]) -> None:
        self.allow = [pattern.lower() for pattern in allow]
        self.deny = [pattern.lower() for pattern in deny]

    def allowed(self, mime: str) -> bool:
        mime = mime.lower()
        if any(fnmatch.fnmatchcase(mime, pattern) for pattern in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(mime, pattern) for pattern in self.allow)

    def check(self, mime: str) -> None:
        """Refuse a declared type the lists do not allow."""
        if not self.allowed(mime):
            raise MimeTypeNotAllowed(f"files of type {mime.lower()} are not allowed here")

    def objection(self, declared: str, sniffed: str | None) -> str | None:
        """Why content recognised as ``sniffed`` may not travel as ``declared``, or None.
        It must pass the lists too, and must not contradict a specific declared type
        (``text/plain`` that is really ``application/x-msdownload``). Aliases within one
        top-level type (``image/jpg`` and ``image/jpeg``) and a generic declaration
        (``application/octet-stream``) are not contradictions."""
        declared = declared.lower()
        if sniffed is None or sniffed == declared:
            return None
        message = f"declared {declared}, but the content is {sniffed}"
        if not self.allowed(sniffed):
            return message + ", which is not allowed here"
        if declared in GENERIC_TYPES or declared.split("/")[0] == sniffed.split("/")[0]:
            return None
        return message
