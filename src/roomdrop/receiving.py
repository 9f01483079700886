"""The receiving end of one transfer: its part file, storing a verified chunk, the
whole-file check and, when that check fails, the repair. :class:`FileTransferManager`
keeps the transfer's state and calls this for the file work.

**Resume.** :meth:`ReceivingEnd.open` resumes the part file of the same content if there
is one (:meth:`PartFile.open`, which re-reads the chunks it holds once and drops those
whose data fail the sha256 the record has for them), else starts one.

**Repair.** When every chunk is in and the whole file's sha256 is not the offer's, the
part file is read once more and each held chunk checked against its recorded sha256
(the sender's, carried in its frame and checked when it arrived). The chunks that fail,
and any held without a digest (a record of the previous version's format), are dropped
and :class:`DamagedChunks` names them, for the client to ask for again with reason
``bad-checksum``. If every chunk matches (the file is what the sender sent chunk by
chunk, yet not what it offered), or after :data:`MAX_REPAIR_ROUNDS` repairs, the part
file is deleted and :class:`IntegrityError` raised.

**Scanning.** A receiving end given a ``scan`` hook (the client's malware scanner) hands
it the verified part file before placing it: a file the hook finds infected
(:class:`Infected`) is deleted, never placed; one it cannot scan
(:class:`ScanUnavailable`) stays, with its record, for a later scan.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

from roomdrop.e2e import ChunkCipher
from roomdrop.exceptions import (
    BadChecksum,
    ChunkRejected,
    ChunkSizeMismatch,
    DamagedChunks,
    E2EError,
    Infected,
    IntegrityError,
)
from roomdrop.protocol.chunks import ChunkSet, chunk_length
from roomdrop.protocol.frames import TAG_SIZE, ZERO_CHECKSUM, Chunk, decode_frame
from roomdrop.protocol.transfer import Transfer
from roomdrop.storage import ContentKey, PartFile, find_part, remove_part

__all__ = [
    "MAX_REPAIR_ROUNDS",
    "FileScan",
    "ReceivingEnd",
    "check_shape",
    "chunk_of",
    "remove_earlier_part",
    "run_chunk_work",
]

MAX_REPAIR_ROUNDS: Final = 3
"""Repairs of one transfer before its whole-file mismatch fails it."""
_T = TypeVar("_T")
FileScan = Callable[[Transfer, Path], Awaitable[None]]
"""``scan(record, path)``: look at the verified whole file at ``path`` before it is
placed; raise :class:`Infected` to refuse it, :class:`ScanUnavailable` when it cannot."""


async def run_chunk_work(nbytes: int, inline_limit: int, work: Callable[..., _T], *args: Any) -> _T:
    """Run one chunk's file work inline if it is small, else in a worker thread.

    A chunk's own work (one ``pread`` or ``pwrite`` of 64 KiB into the page cache and one
    sha256, ~40-80 us) runs inline on the event loop, because handing it to a worker
    thread costs more than the work itself (``asyncio.to_thread`` measured ~180 us per
    hop on these machines, which held the engine to a fifth of plain file copying).
    Chunks larger than the manager's ``inline_io_limit`` and everything that scales with
    the file (the offer's scan, the resume's re-verification, the whole-file check and
    repair, fsync, placement, cleanup) run in worker threads."""
    if nbytes <= inline_limit:
        return work(*args)
    return await asyncio.to_thread(work, *args)


def check_shape(r: Transfer, chunk: Chunk) -> None:
    """A chunk must say the offer's ``total_chunks`` and ``chunk_size``."""
    if (chunk.total_chunks, chunk.chunk_size) != (r.total_chunks, r.chunk_size):
        raise ChunkRejected(
            r.transfer_id,
            chunk.chunk_index,
            f"chunk says total_chunks={chunk.total_chunks} chunk_size={chunk.chunk_size}, "
            f"the offer {r.total_chunks} and {r.chunk_size}",
        )


def chunk_of(
    r: Transfer,
    chunk_index: int,
    data: bytes | bytearray | memoryview,
    checksum: str | None,
) -> Chunk:
    """The chunk ``receive_chunk`` was given: a binary frame (``checksum`` None) for
    chunk ``chunk_index`` of ``r``, or its raw bytes and their sha256 hex."""
    tid = r.transfer_id
    if checksum is not None:
        return Chunk(tid, chunk_index, r.total_chunks, r.chunk_size, data, checksum.lower())
    frame = decode_frame(data)
    if (frame.transfer_id, frame.chunk_index) != (tid, chunk_index):
        raise ChunkRejected(
            tid, chunk_index, f"frame is for chunk {frame.chunk_index} of {frame.transfer_id}"
        )
    if not frame.is_whole:
        raise ChunkSizeMismatch(tid, chunk_index, "frame holds only a fragment")
    return frame.to_chunk()


async def remove_earlier_part(directory: Path, r: Transfer, in_use: Iterable[Path]) -> None:
    """Delete the part file (and record) of ``r``'s content an earlier run left in
    download ``directory``, if there is one that is not ``in_use``."""
    key = ContentKey(r.sha256, r.file_size, r.chunk_size)
    found = await asyncio.to_thread(find_part, directory, key, in_use)
    if found is not None:
        await asyncio.to_thread(remove_part, found[0])


class ReceivingEnd:
    """One transfer's part file, as the receiving end uses it; with a ``cipher`` (end-to-end
    encrypted) each chunk is decrypted, which is its verification, before it is written."""

    def __init__(
        self,
        part: PartFile,
        r: Transfer,
        inline_io_limit: int,
        cipher: ChunkCipher | None = None,
        check: Callable[[Transfer, bytes], None] | None = None,
        scan: FileScan | None = None,
    ) -> None:
        self.part = part
        self.record = r
        self.inline_io_limit = inline_io_limit
        self.cipher = cipher
        self.check = check
        """Sees chunk 0's plaintext before it is written (it may raise to refuse it)."""
        self.scan = scan
        """Sees the whole verified file before it is placed (:data:`FileScan`)."""
        self.repairs = 0

    @classmethod
    async def open(
        cls,
        directory: Path,
        r: Transfer,
        in_use: Iterable[Path],
        inline_io_limit: int,
        cipher: ChunkCipher | None = None,
        check: Callable[[Transfer, bytes], None] | None = None,
        scan: FileScan | None = None,
    ) -> ReceivingEnd:
        """Resume (re-verifying what it holds) or start ``r``'s part file. Raises OSError."""
        key = ContentKey(r.sha256, r.file_size, r.chunk_size)
        part = await asyncio.to_thread(PartFile.open, directory, r.filename, key, in_use)
        return cls(part, r, inline_io_limit, cipher, check, scan)

    @property
    def path(self) -> Path:
        return self.part.path

    @property
    def held(self) -> ChunkSet:
        return self.part.held

    async def store(self, chunk: Chunk) -> bool:
        """Verify and write a chunk of the right size; False if it is held already.
        Raises ChunkSizeMismatch, BadChecksum (a sealed chunk that does not decrypt is
        one), ChunkRejected (a chunk in the clear for an encrypted transfer), OSError, or
        what :attr:`check` raises for chunk 0."""
        r, index = self.record, chunk.chunk_index
        expected = chunk_length(index, r.file_size, r.chunk_size)
        if self.cipher is not None:
            return await self._store_sealed(chunk, expected)
        if chunk.sealed:
            raise ChunkRejected(r.transfer_id, index, "sealed chunk for a transfer in the clear")
        if len(chunk.data) != expected:
            raise ChunkSizeMismatch(
                r.transfer_id, index, f"{len(chunk.data)} bytes, expected {expected}"
            )
        if index in self.part.held:
            return False
        return await run_chunk_work(
            len(chunk.data), self.inline_io_limit, self._verify_and_write, chunk
        )

    async def _store_sealed(self, chunk: Chunk, expected: int) -> bool:
        r, index = self.record, chunk.chunk_index
        if len(chunk.data) != expected + TAG_SIZE:
            raise ChunkSizeMismatch(
                r.transfer_id,
                index,
                f"{len(chunk.data)} bytes of ciphertext, expected {expected + TAG_SIZE}",
            )
        # the seed's JSON form: its checksum is the ciphertext's sha256
        json_form = not chunk.sealed and chunk.checksum != ZERO_CHECKSUM
        if json_form and hashlib.sha256(chunk.data).hexdigest() != chunk.checksum:
            raise BadChecksum(r.transfer_id, index, "sha256 does not match the data")
        if index in self.part.held:
            return False
        return await run_chunk_work(expected, self.inline_io_limit, self._open_and_write, chunk)

    def _open_and_write(self, chunk: Chunk) -> bool:
        assert self.cipher is not None
        try:
            data = self.cipher.open(chunk.chunk_index, chunk.data)
        except E2EError as exc:
            raise BadChecksum(chunk.transfer_id, chunk.chunk_index, exc.message) from None
        return self._write(chunk.chunk_index, data, hashlib.sha256(data).digest())

    def _verify_and_write(self, chunk: Chunk) -> bool:
        digest = hashlib.sha256(chunk.data).digest()
        if digest.hex() != chunk.checksum:
            raise BadChecksum(
                chunk.transfer_id, chunk.chunk_index, "sha256 does not match the data"
            )
        return self._write(chunk.chunk_index, chunk.data, digest)

    def _write(self, index: int, data: bytes | bytearray | memoryview, digest: bytes) -> bool:
        if index == 0 and self.check is not None:
            self.check(self.record, bytes(data[:8192]))
        return self.part.write_chunk(index, data, digest)

    async def finish(self) -> Path:
        """Every chunk is in: check the whole file, have it scanned, and put it in place
        (its path).

        Raises :class:`DamagedChunks` (those chunks are missing again),
        :class:`IntegrityError` or :class:`Infected` (the part file was deleted),
        :class:`ScanUnavailable` (the part file and its record stay, unplaced) or
        OSError."""
        digest = await asyncio.to_thread(self.part.verify)
        if digest != self.record.sha256:
            await self._repair(digest)
        if self.scan is not None:
            try:
                await self.scan(self.record, self.part.path)
            except Infected:
                await asyncio.to_thread(self.part.remove)
                raise
        return await asyncio.to_thread(self.part.place, self.record.filename)

    async def _repair(self, digest: str) -> None:
        r = self.record
        message = f"file sha256 {digest} does not match the offer's {r.sha256}"
        damaged = await asyncio.to_thread(self.part.damaged, undigested=True)
        if damaged and self.repairs < MAX_REPAIR_ROUNDS:
            self.repairs += 1
            await asyncio.to_thread(self.part.drop, damaged)
            raise DamagedChunks(
                r.transfer_id,
                damaged,
                f"{message}: {len(damaged)} chunk(s) of the part file fail their sha256 "
                "check or have none; asking for them again",
            )
        await asyncio.to_thread(self.part.remove)
        if damaged:
            message += f" (still, after {self.repairs} repairs)"
        raise IntegrityError(r.transfer_id, message)

    def close(self) -> None:
        self.part.close()

    def remove(self) -> None:
        """Delete the part file and its record (blocking)."""
        self.part.remove()
