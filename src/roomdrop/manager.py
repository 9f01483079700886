"""FileTransferManager: the seed's transfer API, async, over the protocol core.

One manager may hold the sending end of a transfer (it has the file: ``create_offer``),
the receiving end (an offer that arrived from elsewhere: ``register_offer``), or both
(the seed's server-side use: ``create_offer`` then ``accept_transfer``, and every
``send_chunk(i)`` fed to ``receive_chunk(i)``). A manager receives only if it has a
``download_dir`` (the default is ``$TMPDIR/roomdrop_transfers``); pass
``download_dir=None`` for a manager that only sends.

The manager keeps each transfer's state; the file work is the sending end's
(:mod:`roomdrop.sending`) and the receiving end's (:mod:`roomdrop.receiving`: resume,
verify and write, the whole-file check and its repair), a chunk's inline on the event
loop and what scales with the file in worker threads (``run_chunk_work`` says why). A
per-transfer lock orders the receiving end's writes, completion and cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from uuid import UUID, uuid4

from roomdrop.clock import Clock, SystemClock
from roomdrop.e2e import ChunkCipher, DeviceKey, open_offer, seal_offer
from roomdrop.exceptions import (
    ChunkOutOfRange,
    DamagedChunks,
    E2EError,
    Infected,
    IntegrityError,
    PolicyError,
    ProtocolError,
    ScanUnavailable,
    StorageError,
    TransferError,
    TransferNotActive,
    UnknownTransfer,
)
from roomdrop.protocol.chunks import ChunkSet
from roomdrop.protocol.frames import MAX_CHUNK_SIZE, Chunk
from roomdrop.protocol.messages import E2E, Offer
from roomdrop.protocol.state import Event, Status
from roomdrop.protocol.transfer import Limits, Transfer
from roomdrop.receiving import FileScan, ReceivingEnd, check_shape, chunk_of, remove_earlier_part
from roomdrop.sending import SendingEnd, offered
from roomdrop.storage import SourceInfo, describe_os_error, remove_stale_parts, scan_source

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_DOWNLOAD_DIR", "FileTransferManager"]

ContentCheck = Callable[[Transfer, bytes], None]
MB: Final = 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = 64 * 1024
DEFAULT_DOWNLOAD_DIR: Final = Path(tempfile.gettempdir()) / "roomdrop_transfers"


@dataclass(slots=True)
class _Local:
    """One transfer and the files this manager holds for it."""

    record: Transfer
    source: SendingEnd | None = None
    sent: ChunkSet | None = None
    part: ReceivingEnd | None = None
    cipher: ChunkCipher | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def close_files(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
        if self.part is not None:
            self.part.close()
            self.part = None


class FileTransferManager:
    """Chunked, verified, resumable transfers (the seed's ``FileTransferManager``)."""

    def __init__(
        self,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        download_dir: str | Path | None = DEFAULT_DOWNLOAD_DIR,
        max_file_size: int = 500 * MB,
        max_transfers_per_user: int = 5,
        max_transfers_per_room: int = 10,
        idle_timeout: float = 30.0,
        expiry: float = 3600.0,
        store_ttl: float = 7 * 86_400.0,
        keep_finished: float = 3600.0,
        part_ttl: float = 24 * 3600.0,
        inline_io_limit: int = 256 * 1024,
        clock: Clock | None = None,
        content_check: ContentCheck | None = None,
        scan: FileScan | None = None,
    ) -> None:
        """``content_check(record, head)``, if given, sees the plaintext of each received
        transfer's chunk 0 before it is written and may refuse the file by raising a
        PolicyError (the receiver's MIME check): the transfer then fails with its code
        and its part file is removed. ``scan(record, path)``, if given, sees each verified
        file before it is placed (the malware scan: ``ReceivingEnd.finish``)."""
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}")
        self.chunk_size = chunk_size
        self.download_dir = Path(download_dir) if download_dir is not None else None
        self.max_file_size = max_file_size
        self.max_transfers_per_user = max_transfers_per_user
        self.max_transfers_per_room = max_transfers_per_room
        self.idle_timeout = idle_timeout
        self.expiry = expiry
        self.store_ttl = store_ttl
        self.keep_finished = keep_finished
        self.part_ttl = part_ttl
        self.inline_io_limit = inline_io_limit
        self.clock: Clock = clock or SystemClock()
        self.content_check = content_check
        self.scan = scan
        self._transfers: dict[str, _Local] = {}

    # --- offers --------------------------------------------------------------------

    async def create_offer(
        self,
        file_path: str | Path,
        sender_id: str,
        receiver_id: str,
        room_id: str,
        *,
        transfer_id: str | None = None,
        scanned: SourceInfo | None = None,
        device: DeviceKey | None = None,
        receiver_key: str | None = None,
        e2e: E2E | None = None,
    ) -> dict[str, Any]:
        """Offer a local file: read it once for size, sha256 and MIME type.

        Returns the transfer object; :meth:`offer` gives the ``file-share-offer`` payload.
        ``transfer_id`` (default: a new UUID4) lets a sender that restarted take up a
        transfer the server still holds; ``scanned`` is ``scan_source(file_path)`` if the
        caller has it already (the file is then not read again).

        End to end: with this ``device``'s key and the receiver's ``receiver_key``, a new
        content key is sealed into the offer and every chunk encrypted under it; with
        ``device`` and the ``e2e`` part of a transfer taken up, its key is opened from
        the sender's own sealed copy (E2EError if it does not open).
        """
        path = Path(file_path)
        size = (await asyncio.to_thread(path.stat)).st_size
        self._check_policy(size, sender_id, receiver_id, room_id)
        info = scanned if scanned is not None else await asyncio.to_thread(scan_source, path)
        self._check_policy(info.file_size, sender_id, receiver_id, room_id)
        tid = str(UUID(transfer_id)) if transfer_id is not None else str(uuid4())
        if tid in self._transfers:
            raise ProtocolError(f"transfer {tid} is already known here")
        mono = self.clock.monotonic()
        local = _Local(offered(tid, info, self.chunk_size, sender_id, receiver_id, room_id, mono))
        r = local.record
        if device is not None and e2e is not None:
            r.e2e = e2e
            local.cipher = ChunkCipher(open_offer(r, e2e, device, as_sender=True), tid)
        elif device is not None and receiver_key is not None:
            r.e2e, key = seal_offer(r, device, receiver_key)
            local.cipher = ChunkCipher(key, tid)
        local.source = SendingEnd(info, r, self.inline_io_limit, local.cipher)
        local.sent = ChunkSet(local.record.total_chunks)
        self._transfers[local.record.transfer_id] = local
        return local.record.snapshot()

    async def register_offer(
        self,
        offer: Offer | Mapping[str, Any],
        sender_id: str,
        room_id: str,
        *,
        device: DeviceKey | None = None,
    ) -> dict[str, Any]:
        """Take the receiving end of an offer that arrived from elsewhere. An end-to-end
        offer's content key is opened with this ``device``'s key (E2EError if it does
        not open, or if there is none and this manager receives: the offer is then not
        registered). A manager that does not receive (no ``download_dir``: the server's
        record keeper) registers it without a ``device``, its key left sealed."""
        model = offer if isinstance(offer, Offer) else Offer.model_validate(offer)
        tid = str(model.transfer_id)
        if tid in self._transfers:
            raise ProtocolError(f"transfer {tid} is already known here")
        self._check_policy(model.file_size, sender_id, model.receiver_id, room_id)
        record = Transfer.from_offer(model, sender_id, room_id, mono=self.clock.monotonic())
        local = _Local(record)
        if model.e2e is not None and device is not None:
            local.cipher = ChunkCipher(open_offer(record, model.e2e, device), tid)
        elif model.e2e is not None and self.download_dir is not None:
            raise E2EError(f"transfer {tid} is end-to-end encrypted; this side has no key")
        self._transfers[tid] = local
        return record.snapshot()

    def offer(self, transfer_id: str) -> Offer:
        """The ``file-share-offer`` payload for a transfer."""
        return self._local(transfer_id).record.offer()

    # --- state changes -------------------------------------------------------------

    async def accept_transfer(self, transfer_id: str) -> bool:
        """Accept; a receiving manager opens (or resumes) the part file now."""
        local = self._local(transfer_id)
        async with local.lock:
            if self.download_dir is not None and local.part is None:
                await self._open_part(local)
            self._apply(local, Event.ACCEPT)
            if local.part is not None:
                self._note_progress(local)
                if local.part.held.complete:
                    # chunks found damaged are missing again: the accept asks for them
                    with contextlib.suppress(DamagedChunks):
                        await self._finish(local)
        return True

    async def reject_transfer(self, transfer_id: str, reason: str = "") -> bool:
        """Reject; a part file of the same content left by an earlier run is removed."""
        local = self._local(transfer_id)
        async with local.lock:
            self._apply(local, Event.REJECT)
            local.record.error = reason or None
            await self._discard(local)
            await self._discard_earlier_part(local.record)
        return True

    async def pause_transfer(self, transfer_id: str) -> bool:
        local = self._local(transfer_id)
        self._apply(local, Event.PAUSE)
        return True

    async def resume_transfer(self, transfer_id: str) -> bool:
        local = self._local(transfer_id)
        self._apply(local, Event.RESUME)
        return True

    async def cancel_transfer(self, transfer_id: str, reason: str = "") -> bool:
        """Cancel and remove partial files and records."""
        local = self._local(transfer_id)
        async with local.lock:
            self._apply(local, Event.CANCEL)
            local.record.error = reason or None
            await self._discard(local)
        return True

    async def store_transfer(self, transfer_id: str) -> bool:
        """Every chunk of a transfer kept for later is in the server's store."""
        self._apply(self._local(transfer_id), Event.STORE)
        return True

    async def fail_transfer(self, transfer_id: str, code: str, message: str) -> bool:
        """Fail a live transfer (e.g. the peer reported an error). Partial files stay."""
        local = self._local(transfer_id)
        async with local.lock:
            self._fail(local, code, message)
        return True

    # --- chunks --------------------------------------------------------------------

    async def send_chunk(self, transfer_id: str, chunk_index: int) -> bytes:
        """Read chunk ``chunk_index`` and return it as one binary frame (header with
        its sha256, then the data; see docs/protocol.md)."""
        local = self._local(transfer_id)
        r = local.record
        if local.source is None:
            raise TransferNotActive(transfer_id, chunk_index, "this manager does not hold the file")
        self._check_chunk(r, chunk_index)
        source = local.source
        try:
            frame = await source.frame(chunk_index)
        except OSError as exc:
            async with local.lock:
                raise self._storage_error(local, exc, f"reading {r.filename}") from exc
        if local.part is None and local.sent is not None and local.sent.add(chunk_index):
            self._note_progress(local)
        return frame

    async def receive_chunk(
        self,
        transfer_id: str,
        chunk_index: int,
        data: bytes | bytearray | memoryview,
        checksum: str | None = None,
    ) -> bool:
        """Verify and store one chunk.

        ``data`` is a binary frame as :meth:`send_chunk` returns it, or, when
        ``checksum`` (sha256 hex) is given, the chunk's raw bytes. Returns True when
        the chunk was stored, False when it was held already (a duplicate is a no-op).
        Raises (and counts nothing) :class:`UnknownTransfer` for an unknown transfer,
        :class:`ProtocolError` for a malformed frame, and a :class:`ChunkRejected`
        subclass for an index out of range, a wrong size, a bad checksum or a transfer
        that is not active. If this chunk completed the file and the file's sha256 is
        wrong: :class:`DamagedChunks` (a BadChecksum) naming the chunks of the part file
        that fail their own sha256, missing again (this chunk was stored), or, if none
        does or after a few such repairs, :class:`IntegrityError` (transfer failed, part
        file deleted). :class:`StorageError` if the disk refused the write. The
        PolicyError of a ``content_check`` that refused chunk 0 (transfer failed, part
        file deleted).
        """
        local = self._local(transfer_id)
        return await self.receive(chunk_of(local.record, chunk_index, data, checksum))

    async def receive(self, chunk: Chunk) -> bool:
        """Verify and store a decoded chunk (from either encoding); see receive_chunk."""
        tid, index = chunk.transfer_id, chunk.chunk_index
        local = self._local(tid)
        r = local.record
        check_shape(r, chunk)
        async with local.lock:
            self._check_chunk(r, index)
            part = local.part
            if part is None:
                raise TransferNotActive(tid, index, "this manager is not receiving it")
            try:
                stored = await part.store(chunk)
            except OSError as exc:
                raise self._storage_error(local, exc, f"writing {part.path.name}") from exc
            except PolicyError as exc:  # content_check refused the file
                await self._discard(local)
                self._fail(local, exc.code, exc.message)
                raise
            if stored:
                self._note_progress(local)
                if part.held.complete:
                    await self._finish(local)
            return stored

    async def mark_completed(self, transfer_id: str, sha256: str) -> bool:
        """The sending end learns that the receiver verified the whole file
        (``file-share-complete``); ``sha256`` must be the offer's."""
        local = self._local(transfer_id)
        r = local.record
        if local.part is not None:
            raise TransferError(transfer_id, "the receiving end completes by itself")
        r.check_reported_sha256(sha256)
        async with local.lock:
            self._apply(local, Event.COMPLETE)
            r.set_progress(r.total_chunks, r.file_size, mono=self.clock.monotonic())
            local.close_files()
        return True

    async def sync_progress(self, transfer_id: str, missing: Iterable[int]) -> None:
        """The sending end learns every chunk the receiver still needs (the ``missing``
        of ``file-share-accept``: a complete list, not a chunk request's); the others
        count as transferred, so a resumed transfer's progress starts where the receiver
        stands."""
        local = self._local(transfer_id)
        if local.sent is None:
            raise TransferNotActive(transfer_id, -1, "this manager does not hold the file")
        if not local.record.live:
            raise TransferNotActive(transfer_id, -1, f"transfer is {local.record.status.value}")
        needed, total = set(missing), local.record.total_chunks
        local.sent = ChunkSet(total, (i for i in range(total) if i not in needed))
        self._note_progress(local)

    async def missing_chunks(self, transfer_id: str) -> list[int]:
        """Indexes of the chunks the receiving end still needs (all of them if it has not
        opened its part file, none once the transfer completed)."""
        local = self._local(transfer_id)
        if local.part is not None:
            return local.part.held.missing()
        if local.record.status is Status.COMPLETED:
            return []
        return list(range(local.record.total_chunks))

    # --- reading state -------------------------------------------------------------

    async def get_progress(self, transfer_id: str) -> dict[str, Any]:
        """The seed's transfer object, plus ``speed_bps``, ``eta_seconds``, ``saved_path``."""
        return self._local(transfer_id).record.snapshot()

    def get_transfer(self, transfer_id: str) -> Transfer:
        return self._local(transfer_id).record

    def records(self) -> list[Transfer]:
        """Every transfer this manager knows, live or ended (until forgotten)."""
        return [local.record for local in self._transfers.values()]

    async def get_user_transfers(
        self, user_id: str, status: Status | str | None = None
    ) -> list[dict[str, Any]]:
        """Transfer objects of the transfers ``user_id`` sends or receives."""
        wanted = Status(status) if status is not None else None
        return [
            local.record.snapshot()
            for local in self._transfers.values()
            if local.record.involves(user_id) and wanted in (None, local.record.status)
        ]

    # --- housekeeping --------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """End transfers whose time is up and tidy up. Returns the ids it ended.

        * an ``active`` transfer with no chunk or state change for ``idle_timeout`` is
          cancelled, and its part file removed (the seed's "no activity 30 s");
        * any live transfer older than ``expiry`` fails with ``expired``; its verified
          chunks stay on disk, so a new offer of the same content resumes them;
        * part files untouched for ``part_ttl`` (a day) that no transfer uses are removed;
        * ended transfers are forgotten ``keep_finished`` seconds after they ended.
        """
        now = self.clock.monotonic()
        ended: list[str] = []
        limits = self.limits
        for tid, local in list(self._transfers.items()):
            r = local.record
            due = limits.overdue(r, now)
            if due is not None:
                event, code, message = due
                async with local.lock:
                    if limits.overdue(r, self.clock.monotonic()) is None:
                        continue
                    if event is Event.FAIL:  # its part file stays: a new offer resumes it
                        self._fail(local, code, message)
                    else:
                        self._apply(local, event)
                        r.error_code, r.error = code, message
                        await self._discard(local)
                    ended.append(tid)
            elif r.ended and now - r.last_activity > self.keep_finished:
                del self._transfers[tid]
        if self.download_dir is not None and self.download_dir.is_dir():
            older_than = self.clock.time() - self.part_ttl
            await asyncio.to_thread(
                remove_stale_parts, self.download_dir, older_than, self._parts()
            )
        return ended

    async def run_sweeper(self, interval: float = 1.0) -> None:
        """Call :meth:`sweep` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.sweep()

    async def close(self) -> None:
        """Close every open file. Part files and records stay for a later resume."""
        for local in self._transfers.values():
            async with local.lock:
                local.close_files()

    # --- internals -----------------------------------------------------------------

    def _local(self, transfer_id: str) -> _Local:
        try:
            return self._transfers[str(transfer_id)]
        except KeyError:
            raise UnknownTransfer(str(transfer_id)) from None

    @property
    def limits(self) -> Limits:
        return Limits(
            self.max_file_size,
            self.max_transfers_per_user,
            self.max_transfers_per_room,
            self.idle_timeout,
            self.expiry,
            self.store_ttl,
        )

    def _check_policy(self, size: int, sender_id: str, receiver_id: str, room_id: str) -> None:
        limits = self.limits
        limits.check_size(size)
        live = [lo.record for lo in self._transfers.values() if lo.record.live]
        per_user = {u: sum(r.involves(u) for r in live) for u in (sender_id, receiver_id)}
        limits.check_counts(per_user, room_id, sum(r.room_id == room_id for r in live))

    def _check_chunk(self, r: Transfer, index: int) -> None:
        if not 0 <= index < r.total_chunks:
            raise ChunkOutOfRange(r.transfer_id, index, f"index not in 0..{r.total_chunks - 1}")
        if r.status is not Status.ACTIVE:
            raise TransferNotActive(r.transfer_id, index, f"transfer is {r.status.value}")

    def _apply(self, local: _Local, event: Event) -> None:
        local.record.apply(event, wall=self.clock.time(), mono=self.clock.monotonic())

    def _fail(self, local: _Local, code: str, message: str) -> None:
        local.record.fail(code, message, wall=self.clock.time(), mono=self.clock.monotonic())
        local.close_files()

    def _storage_error(self, local: _Local, exc: OSError, action: str) -> StorageError:
        """Fail the transfer for a file operation the system refused; the error to raise."""
        what = describe_os_error(exc, action)
        self._fail(local, StorageError.code, what)
        return StorageError(local.record.transfer_id, what)

    def _parts(self) -> list[Path]:
        """The part files open transfers use."""
        return [lo.part.path for lo in self._transfers.values() if lo.part is not None]

    def _note_progress(self, local: _Local) -> None:
        r = local.record
        held = local.part.held if local.part is not None else local.sent
        assert held is not None
        nbytes = held.bytes_held(r.file_size, r.chunk_size)
        r.set_progress(len(held), nbytes, mono=self.clock.monotonic())

    async def _open_part(self, local: _Local) -> None:
        assert self.download_dir is not None
        r = local.record
        if r.status is not Status.PENDING:
            return  # apply() will refuse the event with a precise error
        directory = self.download_dir
        try:
            hooks = (self.content_check, self.scan)
            local.part = await ReceivingEnd.open(
                directory, r, self._parts(), self.inline_io_limit, local.cipher, *hooks
            )
        except OSError as exc:
            raise self._storage_error(local, exc, f"preparing {r.filename} in {directory}") from exc

    async def _discard_earlier_part(self, r: Transfer) -> None:
        """A rejected offer's content is unwanted: drop a part file an earlier run left."""
        if self.download_dir is not None:
            await remove_earlier_part(self.download_dir, r, self._parts())

    async def _finish(self, local: _Local) -> None:
        """Every chunk is in: verify the whole file (and scan it), then put it in place;
        or repair it (DamagedChunks), or fail it (IntegrityError, Infected,
        ScanUnavailable)."""
        part, r = local.part, local.record
        assert part is not None
        try:
            dest = await part.finish()
        except DamagedChunks:
            self._note_progress(local)
            raise
        except (IntegrityError, Infected) as exc:
            local.part = None  # deleted
            self._fail(local, exc.code, exc.message)
            raise
        except ScanUnavailable as exc:  # the part file and its record stay, unplaced
            self._fail(local, exc.code, exc.message)
            raise
        except OSError as exc:
            raise self._storage_error(local, exc, f"finishing {r.filename}") from exc
        local.part = None
        r.saved_path = str(dest)
        self._apply(local, Event.COMPLETE)
        local.close_files()

    async def _discard(self, local: _Local) -> None:
        """Close files and remove the receiving end's part file and record."""
        part = local.part
        local.part = None
        local.close_files()
        if part is not None:
            await asyncio.to_thread(part.remove)
