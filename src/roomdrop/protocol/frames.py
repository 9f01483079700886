"""Chunks on the wire: the seed's JSON form and the binary frame.

A *chunk* is ``chunk_size`` bytes of the file (the last one may be shorter) with the
sha256 of exactly those bytes. It travels in one of two encodings with the same fields:

* **JSON** — the seed's object ``{transfer_id, chunk_index, total_chunks, chunk_size,
  data (base64), checksum (sha256 hex)}``, carried as the payload of a
  ``file-share-chunk`` message. Accepted everywhere; 33 % larger and much slower.
* **Binary frame** — a fixed 72-byte header followed by raw bytes. All integers are
  unsigned big-endian::

      offset size field
           0    2 magic            b"RD"
           2    1 version          1
           3    1 flags            bit 0: SEALED (the data is ciphertext); other bits
                                   reserved (non-zero is refused)
           4   16 transfer_id      the UUID's 16 bytes
          20    4 chunk_index
          24    4 total_chunks
          28    4 chunk_size       the transfer's nominal chunk size
          32    4 chunk_length     bytes in this chunk (chunk_size, or less for the last)
          36    4 fragment_offset  where this frame's data starts inside the chunk
          40   32 checksum         sha256 of the *whole chunk's* data; zero when SEALED
          72    n data             n >= 1, fragment_offset + n <= chunk_length

A **sealed** frame (end-to-end encrypted, :mod:`roomdrop.e2e`) carries the chunk's
AES-256-GCM ciphertext, ``TAG_SIZE`` bytes longer than its plaintext: its
``chunk_length`` may exceed ``chunk_size`` by that much, and its checksum is 32 zero
bytes, because the GCM tag is what the receiver verifies and the sha256 of a plaintext
chunk would let whoever relays it confirm a guess of the content.

A frame carries a whole chunk (``fragment_offset == 0`` and ``n == chunk_length``) or a
*fragment* of one. Fragments exist because a frame must fit one data-channel message
to an aiortc peer, whose maximum message size is 65,536 bytes, and the default chunk
is 65,536 bytes too: a chunk whose frame would exceed the transport's message size is
split into the fewest frames that fit, of near-equal size (a 64 KiB chunk becomes two
frames of 32 KiB + 72 bytes each). The receiver reassembles the fragments of a chunk
with :class:`ChunkAssembler` before it verifies the checksum. Over the WebSocket relay
a chunk is a single frame.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from roomdrop.exceptions import ProtocolError

__all__ = [
    "DATA_CHANNEL_MAX_MESSAGE",
    "FLAG_SEALED",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "TAG_SIZE",
    "VERSION",
    "Chunk",
    "ChunkAssembler",
    "Frame",
    "JsonChunk",
    "decode_frame",
    "decode_json_chunk",
    "encode_frame_into",
    "encode_frames",
    "encode_json_chunk",
    "fragment_bounds",
    "split_frame",
]

MAGIC: Final = b"RD"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBB16sIIIII32s")
HEADER_SIZE: Final = HEADER.size  # 72
DATA_CHANNEL_MAX_MESSAGE: Final = 65_536
"""aiortc's maximum data-channel message size; the default frame budget."""
MAX_CHUNK_SIZE: Final = 1024 * 1024
"""Largest chunk a transfer may use; frames and offers naming more are refused."""

FLAG_SEALED: Final = 0x01
"""Frame flag: the data is the chunk's AES-256-GCM ciphertext (end-to-end encrypted)."""
TAG_SIZE: Final = 16
"""Bytes a sealed chunk is longer than its plaintext (the GCM tag)."""
ZERO_CHECKSUM: Final = "0" * 64
"""The checksum a sealed chunk carries."""

_U32_MAX: Final = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Chunk:
    """One whole chunk, as both encodings carry it."""

    transfer_id: str
    chunk_index: int
    total_chunks: int
    chunk_size: int
    data: bytes | bytearray | memoryview
    checksum: str
    """sha256 of ``data``, 64 lowercase hex digits (zeros when ``sealed``)."""
    sealed: bool = False
    """``data`` is ciphertext (a SEALED frame)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded binary frame: a whole chunk or a fragment of one."""

    transfer_id: str
    chunk_index: int
    total_chunks: int
    chunk_size: int
    chunk_length: int
    fragment_offset: int
    checksum: str
    data: memoryview
    sealed: bool = False

    @property
    def is_whole(self) -> bool:
        return self.fragment_offset == 0 and len(self.data) == self.chunk_length

    def to_chunk(self) -> Chunk:
        if not self.is_whole:
            raise ProtocolError(f"frame for chunk {self.chunk_index} is a fragment")
        return Chunk(
            self.transfer_id,
            self.chunk_index,
            self.total_chunks,
            self.chunk_size,
            self.data,
            self.checksum,
            self.sealed,
        )


def _uuid_bytes(transfer_id: str) -> bytes:
    try:
        return uuid.UUID(transfer_id).bytes
    except ValueError:
        raise ProtocolError(f"transfer_id {transfer_id!r} is not a UUID") from None


def fragment_bounds(chunk_length: int, max_frame_size: int | None) -> list[tuple[int, int]]:
    """Split ``chunk_length`` bytes into the fewest near-equal ``(offset, length)`` parts
    whose frames fit ``max_frame_size`` bytes (``None``: no limit, one part)."""
    if max_frame_size is None or chunk_length + HEADER_SIZE <= max_frame_size:
        return [(0, chunk_length)]
    room = max_frame_size - HEADER_SIZE
    if room < 1:
        raise ValueError(f"max_frame_size {max_frame_size} leaves no room for data")
    parts = -(-chunk_length // room)
    base, extra = divmod(chunk_length, parts)
    bounds: list[tuple[int, int]] = []
    offset = 0
    for i in range(parts):
        length = base + (1 if i < extra else 0)
        bounds.append((offset, length))
        offset += length
    return bounds


def encode_frame_into(
    buffer: bytearray | memoryview,
    chunk: Chunk,
    *,
    chunk_length: int | None = None,
    fragment_offset: int = 0,
) -> None:
    """Write the header for ``chunk`` into ``buffer[:HEADER_SIZE]``.

    The caller has put the frame's data at ``buffer[HEADER_SIZE:]`` already; this
    lets a sender read a chunk straight into its frame with no copy.
    """
    HEADER.pack_into(
        buffer,
        0,
        MAGIC,
        VERSION,
        FLAG_SEALED if chunk.sealed else 0,
        _uuid_bytes(chunk.transfer_id),
        chunk.chunk_index,
        chunk.total_chunks,
        chunk.chunk_size,
        len(chunk.data) if chunk_length is None else chunk_length,
        fragment_offset,
        bytes(32) if chunk.sealed else bytes.fromhex(chunk.checksum),
    )


def encode_frames(chunk: Chunk, max_frame_size: int | None = None) -> Iterator[bytes]:
    """Yield the frame(s) that carry ``chunk``, each at most ``max_frame_size`` bytes."""
    data = memoryview(chunk.data)
    for offset, length in fragment_bounds(len(data), max_frame_size):
        frame = bytearray(HEADER_SIZE + length)
        frame[HEADER_SIZE:] = data[offset : offset + length]
        encode_frame_into(frame, chunk, chunk_length=len(data), fragment_offset=offset)
        yield bytes(frame)


_FRAGMENT_OFFSET = struct.Struct(">I")
_FRAGMENT_OFFSET_AT: Final = 36


def split_frame(frame: bytes, max_frame_size: int | None) -> list[bytes]:
    """Cut one whole frame (as :func:`encode_frames` or a sender's ``send_chunk`` makes
    it) into the frames that fit ``max_frame_size``, as :func:`encode_frames` would:
    each repeats the header with its own ``fragment_offset``. A frame that fits is
    returned as it is."""
    data = memoryview(frame)[HEADER_SIZE:]
    bounds = fragment_bounds(len(data), max_frame_size)
    if len(bounds) == 1:
        return [frame]
    header = memoryview(frame)[:HEADER_SIZE]
    parts: list[bytes] = []
    for offset, length in bounds:
        part = bytearray(HEADER_SIZE + length)
        part[:HEADER_SIZE] = header
        _FRAGMENT_OFFSET.pack_into(part, _FRAGMENT_OFFSET_AT, offset)
        part[HEADER_SIZE:] = data[offset : offset + length]
        parts.append(bytes(part))
    return parts


def decode_frame(buffer: bytes | bytearray | memoryview) -> Frame:
    """Parse one binary frame; raise :class:`ProtocolError` saying what is wrong."""
    view = memoryview(buffer)
    if len(view) < HEADER_SIZE:
        raise ProtocolError(
            f"frame of {len(view)} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    (
        magic,
        version,
        flags,
        tid,
        index,
        total,
        chunk_size,
        chunk_length,
        offset,
        checksum,
    ) = HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise ProtocolError(f"frame magic {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"frame version {version} is not supported (expected {VERSION})")
    if flags & ~FLAG_SEALED:
        raise ProtocolError(f"frame flags {flags:#04x}: only bit 0 (sealed) is defined")
    sealed = bool(flags & FLAG_SEALED)
    data = view[HEADER_SIZE:]
    if index >= total:
        raise ProtocolError(f"chunk_index {index} is not below total_chunks {total}")
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ProtocolError(f"chunk_size {chunk_size} is not in 1..{MAX_CHUNK_SIZE}")
    longest = chunk_size + TAG_SIZE if sealed else chunk_size
    if sealed and chunk_length <= TAG_SIZE:
        raise ProtocolError(f"sealed chunk_length {chunk_length} leaves no room for data")
    if sealed and checksum != bytes(32):
        raise ProtocolError("a sealed frame's checksum must be zero")
    if chunk_length == 0 or chunk_length > longest:
        raise ProtocolError(f"chunk_length {chunk_length} must be between 1 and {longest}")
    if len(data) == 0 or offset + len(data) > chunk_length:
        raise ProtocolError(
            f"frame data [{offset}, {offset + len(data)}) does not fit in a chunk of "
            f"{chunk_length} bytes"
        )
    return Frame(
        str(uuid.UUID(bytes=tid)),
        index,
        total,
        chunk_size,
        chunk_length,
        offset,
        checksum.hex(),
        data,
        sealed,
    )


class JsonChunk(BaseModel):
    """The seed's JSON chunk object (payload of ``file-share-chunk``), fully checked:
    the index is below the total, ``data`` is valid base64 of 1..chunk_size bytes (up to
    TAG_SIZE more for an end-to-end encrypted transfer, whose ``data`` is ciphertext and
    ``checksum`` that ciphertext's sha256)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transfer_id: uuid.UUID
    chunk_index: StrictInt = Field(ge=0, le=_U32_MAX)
    total_chunks: StrictInt = Field(ge=1, le=_U32_MAX)
    chunk_size: StrictInt = Field(ge=1, le=MAX_CHUNK_SIZE)
    data: StrictStr
    checksum: StrictStr = Field(pattern=r"^[0-9a-f]{64}$")
    _raw: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.chunk_index >= self.total_chunks:
            raise ValueError(
                f"chunk_index {self.chunk_index} is not below total_chunks {self.total_chunks}"
            )
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("data is not valid base64") from None
        if not 0 < len(raw) <= self.chunk_size + TAG_SIZE:
            raise ValueError(f"{len(raw)} bytes of data for chunk_size {self.chunk_size}")
        self._raw = raw
        return self

    def to_chunk(self) -> Chunk:
        return Chunk(
            str(self.transfer_id),
            self.chunk_index,
            self.total_chunks,
            self.chunk_size,
            self._raw,
            self.checksum,
        )


def encode_json_chunk(chunk: Chunk) -> dict[str, Any]:
    """The seed's JSON object for ``chunk``."""
    return {
        "transfer_id": chunk.transfer_id,
        "chunk_index": chunk.chunk_index,
        "total_chunks": chunk.total_chunks,
        "chunk_size": chunk.chunk_size,
        "data": base64.b64encode(chunk.data).decode("ascii"),
        "checksum": chunk.checksum,
    }


def decode_json_chunk(obj: Any) -> Chunk:
    """Parse the seed's JSON chunk object; raise :class:`ProtocolError` if malformed."""
    if isinstance(obj, JsonChunk):
        return obj.to_chunk()
    try:
        return JsonChunk.model_validate(obj).to_chunk()
    except ValidationError as exc:
        raise ProtocolError(f"file-share-chunk: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


class ChunkAssembler:
    """Joins the fragments of chunks back into whole chunks.

    Feed it every decoded frame; it returns a :class:`Chunk` when one is complete and
    ``None`` otherwise. At most ``max_partial`` chunks are held half-built (64 KiB
    each by default); past that the oldest is dropped, and that chunk will be reported
    missing and sent again. Fragments of one chunk may arrive in any order and twice.
    A fragment of a chunk longer than ``max_chunk_size`` (the transfer's chunk size) is
    refused, so a hostile frame cannot make it allocate more than
    ``max_partial * max_chunk_size`` bytes.
    """

    def __init__(self, max_partial: int = 4, max_chunk_size: int = 64 * 1024) -> None:
        self.max_partial = max_partial
        self.max_chunk_size = max_chunk_size
        self._partial: dict[tuple[str, int], _Partial] = {}

    def __len__(self) -> int:
        return len(self._partial)

    def feed(self, frame: Frame) -> Chunk | None:
        if frame.is_whole:
            return frame.to_chunk()
        if frame.chunk_length > self.max_chunk_size + (TAG_SIZE if frame.sealed else 0):
            raise ProtocolError(
                f"fragment of a {frame.chunk_length}-byte chunk; this channel takes chunks "
                f"of at most {self.max_chunk_size} bytes"
            )
        key = (frame.transfer_id, frame.chunk_index)
        partial = self._partial.get(key)
        if partial is not None and not partial.matches(frame):
            del self._partial[key]  # the sender changed its mind: start over
            partial = None
        if partial is None:
            while len(self._partial) >= self.max_partial:
                del self._partial[next(iter(self._partial))]
            partial = self._partial[key] = _Partial(frame)
        if not partial.add(frame):
            return None
        del self._partial[key]
        return Chunk(
            frame.transfer_id,
            frame.chunk_index,
            frame.total_chunks,
            frame.chunk_size,
            partial.buffer,
            frame.checksum,
            frame.sealed,
        )

    def discard(self, transfer_id: str) -> None:
        """Forget every half-built chunk of ``transfer_id``."""
        for key in [k for k in self._partial if k[0] == transfer_id]:
            del self._partial[key]


class _Partial:
    __slots__ = ("buffer", "checksum", "covered", "sealed", "total_chunks")

    def __init__(self, frame: Frame) -> None:
        self.buffer = bytearray(frame.chunk_length)
        self.checksum = frame.checksum
        self.sealed = frame.sealed
        self.total_chunks = frame.total_chunks
        self.covered: list[tuple[int, int]] = []

    def matches(self, frame: Frame) -> bool:
        return (
            frame.checksum == self.checksum
            and frame.sealed == self.sealed
            and frame.chunk_length == len(self.buffer)
            and frame.total_chunks == self.total_chunks
        )

    def add(self, frame: Frame) -> bool:
        """Store the fragment; return True once the whole chunk is covered."""
        start, end = frame.fragment_offset, frame.fragment_offset + len(frame.data)
        self.buffer[start:end] = frame.data
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted([*self.covered, (start, end)]):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.covered = merged
        return merged == [(0, len(self.buffer))]
