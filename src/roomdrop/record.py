"""The receiver's resume record, as text: which chunks a part file holds, and the sha256
of each one's data. Pure format (no I/O); :mod:`roomdrop.storage` reads and writes it.

``<name>.part.jsonl``, UTF-8, one item per line::

    {"roomdrop_part": 2, "sha256": ..., "file_size": ..., "chunk_size": ..., ...}
    0 Rk9P...                 a chunk held: its index, a space, the sha256 of its data
    2 x1Zq...                 (32 bytes in base64url without padding: 43 characters)
    7                         a chunk held without a digest (a record of format 1)

A line is appended as each chunk is written: one write of ~50 bytes, whatever the file's
size. Format 1 (the version before per-chunk digests) has index lines only; such a
record is still read, its chunks held without a digest. A line whose digest is not 43
base64url characters naming 32 bytes is ignored (the chunk counts as missing), and the
last line of an index wins.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from roomdrop.protocol.chunks import ChunkSet, count_chunks

__all__ = [
    "DIGEST_SIZE",
    "READABLE_FORMATS",
    "RECORD_FORMAT",
    "ContentKey",
    "Digests",
    "parse_record",
    "record_line",
    "render_record",
]

RECORD_FORMAT: Final = 2
READABLE_FORMATS: Final = (1, 2)
DIGEST_SIZE: Final = 32
_DIGEST_CHARS: Final = 43  # base64 of 32 bytes, without the "=" padding


@dataclass(frozen=True, slots=True)
class ContentKey:
    """What makes two offers the same content, for resume."""

    sha256: str
    file_size: int
    chunk_size: int

    @property
    def total_chunks(self) -> int:
        return count_chunks(self.file_size, self.chunk_size)


class Digests:
    """The sha256 of each held chunk that has one: 32 bytes a chunk in one table (256 KB
    for the 8,000 chunks of a 500 MB file)."""

    __slots__ = ("_known", "_table", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self._table = bytearray(DIGEST_SIZE * total)
        self._known = ChunkSet(total)

    def __contains__(self, index: object) -> bool:
        return index in self._known

    def __len__(self) -> int:
        return len(self._known)

    def set(self, index: int, digest: bytes) -> None:
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a sha256 digest is {DIGEST_SIZE} bytes, not {len(digest)}")
        self._table[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE] = digest
        self._known.add(index)

    def get(self, index: int) -> bytes | None:
        if index not in self._known:
            return None
        return bytes(self._table[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE])

    def forget(self, indexes: Iterable[int]) -> None:
        gone = set(indexes)
        self._known = ChunkSet(self.total, (i for i in self._known if i not in gone))


def record_line(index: int, digest: bytes | None) -> bytes:
    """One chunk's line, ``b"12 <digest>\\n"`` (``b"12\\n"`` without a digest)."""
    if digest is None:
        return b"%d\n" % index
    return b"%d %s\n" % (index, base64.urlsafe_b64encode(digest)[:_DIGEST_CHARS])


def _header(key: ContentKey, filename: str) -> dict[str, Any]:
    return {
        "roomdrop_part": RECORD_FORMAT,
        "sha256": key.sha256,
        "file_size": key.file_size,
        "chunk_size": key.chunk_size,
        "total_chunks": key.total_chunks,
        "filename": filename,
    }


def render_record(key: ContentKey, filename: str, held: ChunkSet, digests: Digests) -> bytes:
    """A whole, compact record: the header, then one line per chunk held."""
    head = json.dumps(_header(key, filename)).encode() + b"\n"
    return head + b"".join(record_line(i, digests.get(i)) for i in held)


def parse_record(text: str, key: ContentKey) -> tuple[ChunkSet, Digests] | None:
    """The chunks a record holds and their digests, if it names ``key``'s content, else
    None. A torn last line (no newline) is dropped."""
    first, _, rest = text.partition("\n")
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        return None
    if not isinstance(header, dict) or header.get("roomdrop_part") not in READABLE_FORMATS:
        return None
    if (header.get("sha256"), header.get("file_size"), header.get("chunk_size")) != (
        key.sha256,
        key.file_size,
        key.chunk_size,
    ):
        return None
    total = key.total_chunks
    lines: dict[int, bytes | None] = {}
    complete_lines = rest[: rest.rfind("\n") + 1]
    for line in complete_lines.splitlines():
        index, _, token = line.partition(" ")
        if not (index.isascii() and index.isdigit()) or int(index) >= total:
            continue
        if not token:
            lines[int(index)] = None
            continue
        digest = _decode_digest(token)
        if digest is not None:
            lines[int(index)] = digest
        else:
            lines.pop(int(index), None)  # a line this version did not write: not held
    held, digests = ChunkSet(total), Digests(total)
    for i, digest in lines.items():
        held.add(i)
        if digest is not None:
            digests.set(i, digest)
    return held, digests


def _decode_digest(token: str) -> bytes | None:
    if len(token) != _DIGEST_CHARS or not token.isascii():
        return None
    try:
        digest = base64.b64decode(token + "=", altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == DIGEST_SIZE else None
