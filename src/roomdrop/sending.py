"""The sending end of one transfer: the offered file, read chunk by chunk into frames.
:class:`FileTransferManager` keeps the transfer's state and calls this for the file
work (the counterpart of :mod:`roomdrop.receiving`)."""

from __future__ import annotations

import hashlib

from roomdrop.e2e import ChunkCipher
from roomdrop.protocol.chunks import chunk_length, count_chunks
from roomdrop.protocol.frames import HEADER_SIZE, ZERO_CHECKSUM, Chunk, encode_frame_into
from roomdrop.protocol.names import sanitize_filename
from roomdrop.protocol.transfer import Transfer
from roomdrop.receiving import run_chunk_work
from roomdrop.storage import SourceFile, SourceInfo

__all__ = ["SendingEnd", "offered"]


def offered(
    tid: str,
    info: SourceInfo,
    chunk_size: int,
    sender_id: str,
    receiver_id: str,
    room_id: str,
    mono: float,
) -> Transfer:
    """The record of a transfer that offers the scanned file ``info`` (at monotonic time
    ``mono``)."""
    return Transfer(
        transfer_id=tid,
        room_id=room_id,
        sender_id=sender_id,
        receiver_id=receiver_id,
        filename=sanitize_filename(info.filename),
        file_size=info.file_size,
        chunk_size=chunk_size,
        total_chunks=count_chunks(info.file_size, chunk_size),
        sha256=info.sha256,
        mime_type=info.mime_type,
        created_mono=mono,
    )


class SendingEnd:
    """The file a transfer offers, open for reading its chunks; with a ``cipher``
    (end-to-end encrypted) each chunk is sealed into its frame."""

    def __init__(
        self,
        info: SourceInfo,
        r: Transfer,
        inline_io_limit: int,
        cipher: ChunkCipher | None = None,
    ) -> None:
        self.source = SourceFile(info)
        self.record = r
        self.inline_io_limit = inline_io_limit
        self.cipher = cipher

    async def frame(self, index: int) -> bytes:
        """Chunk ``index`` as one binary frame (header with its sha256, then the data;
        sealed: header, then the ciphertext). Raises OSError (the file changed since it
        was offered, or is unreadable)."""
        r = self.record
        length = chunk_length(index, r.file_size, r.chunk_size)
        return await run_chunk_work(length, self.inline_io_limit, self._read_frame, index, length)

    def _read_frame(self, index: int, length: int) -> bytes:
        r = self.record
        data = self.source.read(index * r.chunk_size, length)
        header = bytearray(HEADER_SIZE)
        if self.cipher is not None:
            sealed = self.cipher.seal(index, data)
            chunk = Chunk(
                r.transfer_id, index, r.total_chunks, r.chunk_size, sealed, ZERO_CHECKSUM, True
            )
            encode_frame_into(header, chunk)
            return bytes(header) + sealed
        checksum = hashlib.sha256(data).hexdigest()
        encode_frame_into(
            header, Chunk(r.transfer_id, index, r.total_chunks, r.chunk_size, data, checksum)
        )
        return bytes(header) + data

    def close(self) -> None:
        self.source.close()
