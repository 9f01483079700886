"""The sender's file, read once before it is offered: its size, sha256 and MIME type
(the sender's part of the file-system adapter, beside :mod:`roomdrop.storage`).

Only the standard library is imported here (``filetype`` when a type is sniffed), so
``roomdrop send`` can begin hashing before it has imported the rest of roomdrop
(:mod:`roomdrop.client.scans`). :mod:`roomdrop.storage` re-exports these names.
"""

from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["SourceInfo", "guess_mime_type", "scan_source", "sniff_mime_type"]

_SCAN_BLOCK: Final = 1024 * 1024
_MAGIC_BYTES: Final = 8192


@dataclass(frozen=True, slots=True)
class SourceInfo:
    path: Path
    filename: str
    file_size: int
    sha256: str
    mime_type: str
    mtime_ns: int


def scan_source(path: Path) -> SourceInfo:
    """Read ``path`` once, in 1 MiB blocks: size, sha256 and MIME type."""
    digest = hashlib.sha256()
    head = b""
    with path.open("rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
        size = 0
        while block := f.read(_SCAN_BLOCK):
            if not head:
                head = block[:_MAGIC_BYTES]
            digest.update(block)
            size += len(block)
    return SourceInfo(
        path=path,
        filename=path.name,
        file_size=size,
        sha256=digest.hexdigest(),
        mime_type=guess_mime_type(path.name, head),
        mtime_ns=st.st_mtime_ns,
    )


def guess_mime_type(name: str, head: bytes) -> str:
    """From the content's magic bytes first, then the name, else octet-stream."""
    guessed = sniff_mime_type(head) or mimetypes.guess_type(name, strict=False)[0]
    return guessed or "application/octet-stream"


def sniff_mime_type(head: bytes | bytearray | memoryview) -> str | None:
    """The MIME type the content's first bytes show (``filetype``), or None."""
    import filetype  # here: a command that sends nothing needs none of it

    kind = filetype.guess(bytes(head[:_MAGIC_BYTES])) if len(head) else None
    return str(kind.mime) if kind is not None else None
