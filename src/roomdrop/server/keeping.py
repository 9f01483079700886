"""Files kept for a receiver who is not there (``send --store``): into the store as the
sender's chunks arrive, out of it when the receiver joins.

Theory of operation
-------------------
**Consent.** Nothing is kept beyond the relay's transient staging unless the sender
asked for it: an offer with ``store`` is the sender's explicit choice (the plan's "no
permanent storage without explicit consent"). Only an end-to-end encrypted offer may be
kept, sealed to the device key the receiver last published in this room (the server
saw it; :meth:`~roomdrop.server.backend.Backend.seen`): what the store holds is
ciphertext under a key only the two devices can open.

**The upload.** The server accepts such an offer on the store's behalf and the sender
sends its chunks through the relay as usual; each verified frame (header, ciphertext,
GCM tag, exactly as it came) is written to the object of the transfer's id as a
multipart upload (:class:`_Upload`): part *n* is the frames of chunks
``[(n-1)·k, n·k)``, with ``k`` chunks making at least :data:`~.store.MIN_PART` bytes.
Memory is bounded per transfer: the frames of the part being filled (and of the next,
for chunks that overtake each other), and at most :data:`PARTS_IN_FLIGHT` parts on their
way; the sender's socket waits when the store is slower (back-pressure). An upload that
stops (the sender dropped, the server restarted) goes on from the parts already stored:
the server lists them and asks the sender for the rest. When the last part is in, the
upload is finished, the record says ``stored`` and the sender is told
(``file-share-stored``). An upload whose transfer ends without being stored is aborted;
the sweep aborts any other (an instance that died with one open) once it is older than
``ROOMDROP_EXPIRY``.

**The delivery.** When the receiver joins (on any instance: the object is in the store
all instances share), each file kept for them is offered as it was, from its sender;
they accept (with the chunks they already hold, if an earlier delivery stopped) or
reject. The instance the receiver is connected to reads the frames from the store in
pieces of a few parts' worth and sends them as the receiver's socket takes them
(:mod:`.delivery`); chunk requests (a bad tag, a resume) read those chunks again.
The receiver verifies and completes exactly as for a relayed transfer; then, or when it
rejects it, when the sender withdraws it (cancel) or when it expires
(``ROOMDROP_STORE_TTL``), the object is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Final, Protocol
from uuid import UUID

from roomdrop.clock import Clock
from roomdrop.exceptions import (
    RoomdropError,
    StoreError,
    TransferNotActive,
)
from roomdrop.protocol.chunks import ranges_of
from roomdrop.protocol.messages import (
    Accept,
    ChunkRequest,
    FileShareError,
    Message,
    MessageType,
    Offer,
    TransferRef,
)
from roomdrop.protocol.state import Event, Status
from roomdrop.protocol.transfer import Transfer
from roomdrop.server import keptrecords
from roomdrop.server.backend import Backend
from roomdrop.server.consent import check_kept_offer
from roomdrop.server.delivery import Delivery, frame_length
from roomdrop.server.keptrecords import offer_of
from roomdrop.server.participant import Participant
from roomdrop.server.rooms import Rooms
from roomdrop.server.settings import Settings
from roomdrop.server.store import MIN_PART, ObjectStore, Part

__all__ = ["PARTS_IN_FLIGHT", "Keeping", "KeepingHost", "chunks_per_part"]

log = logging.getLogger("roomdrop.server")
T = MessageType

PARTS_IN_FLIGHT: Final = 2
"""Parts of one upload on their way to the store at once."""


class KeepingHost(Protocol):
    """What keeping needs of the hub."""

    backend: Backend
    settings: Settings
    rooms: Rooms
    clock: Clock

    def present(self, room_id: str, user: str) -> Participant | None: ...

    def progressed(self, record: Transfer, chunks: int, nbytes: int) -> None: ...


def chunks_per_part(chunk_size: int) -> int:
    """Chunks whose frames make a part of at least :data:`MIN_PART` bytes."""
    return math.ceil(MIN_PART / chunk_size)


@dataclass(eq=False)
class _Upload:
    """One transfer's multipart upload, on the instance its sender is connected to."""

    record: Transfer
    upload_id: str
    per_part: int
    parts: dict[int, Part] = field(default_factory=dict)
    """Stored parts by number."""
    frames: dict[int, bytes] = field(default_factory=dict)
    """Frames of the parts not yet on their way, by chunk index."""
    next_part: int = 1
    """The first part not yet on its way."""
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    ahead: set[int] = field(default_factory=set)
    """Chunks that came too far ahead of the part being filled: dropped, and asked for
    again once the parts before them are on their way."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failed: BaseException | None = None

    def part_range(self, number: int) -> range:
        start = (number - 1) * self.per_part
        return range(start, min(start + self.per_part, self.record.total_chunks))

    @property
    def last_part(self) -> int:
        return max(1, math.ceil(self.record.total_chunks / self.per_part))

    @property
    def next_index(self) -> int:
        return (self.next_part - 1) * self.per_part


class Keeping:
    """The files kept for later on this instance: uploads from senders connected here,
    deliveries to receivers connected here (see the module docstring)."""

    def __init__(self, host: KeepingHost, store: ObjectStore) -> None:
        self.host = host
        self.store = store
        self.backend = host.backend
        self.settings = host.settings
        self.clock = host.clock
        self._uploads: dict[str, _Upload] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._started = False
        self._restored = False
        self._start_lock = asyncio.Lock()

    async def ready(self) -> ObjectStore:
        """The store, checked once (again after a failure: it may be back)."""
        async with self._start_lock:
            if not self._started:
                await self.store.start()
                self._started = True
        return self.store

    async def close(self) -> None:
        for delivery in list(self._deliveries.values()):
            await delivery.stop()
        for upload in list(self._uploads.values()):
            for task in upload.in_flight:
                task.cancel()
        if self._started:
            await self.store.close()

    # --- the offer -------------------------------------------------------------------

    async def check_offer(self, room_id: str, user: str, offer: Offer) -> None:
        """May this offer be kept? The refusal says why not (:mod:`.consent`)."""
        await check_kept_offer(self.backend, self.settings, room_id, user, offer)
        await self.ready()

    async def begin(self, record: Transfer) -> None:
        """The offer was recorded: accept it on the store's behalf and ask the sender for
        the chunks the store lacks (all, or those after the parts an earlier upload of
        this transfer stored)."""
        tid = record.transfer_id
        upload = await self._open(record)
        record = await self.backend.apply(tid, Event.ACCEPT)
        missing = self._missing(upload)
        accept = Accept(transfer_id=UUID(tid), missing=missing)
        self.host.rooms.send_to(
            record.room_id,
            record.sender_id,
            Message.build(T.FILE_SHARE_ACCEPT, accept, sender_id=None, room_id=record.room_id),
        )
        held = upload.next_index
        self.host.progressed(record, held, min(record.file_size, held * record.chunk_size))

    def _missing(self, upload: _Upload) -> list[tuple[int, int]] | None:
        if upload.next_index == 0:
            return None
        return [(upload.next_index, upload.record.total_chunks)]

    async def _open(self, record: Transfer) -> _Upload:
        """This transfer's upload: the one under way here, or one an earlier run left in
        the store (its parts kept as far as they run without a gap), or a new one."""
        tid = record.transfer_id
        upload = self._uploads.get(tid)
        if upload is not None and upload.failed is None:
            upload.record = record
            return upload
        store = await self.ready()
        per_part = chunks_per_part(record.chunk_size)
        earlier = sorted(
            (u for u in await store.uploads() if u.key == tid), key=lambda u: u.initiated
        )
        for stale in earlier[:-1]:
            await store.abort(tid, stale.upload_id)
        if earlier:
            upload = _Upload(record, earlier[-1].upload_id, per_part)
            stored = {p.number: p for p in await store.parts(tid, upload.upload_id)}
            while upload.next_part in stored and self._whole(upload, stored[upload.next_part]):
                upload.parts[upload.next_part] = stored[upload.next_part]
                upload.next_part += 1
        else:
            upload = _Upload(record, await store.begin(tid), per_part)
        self._uploads[tid] = upload
        return upload

    def _whole(self, upload: _Upload, part: Part) -> bool:
        chunks = upload.part_range(part.number)
        r = upload.record
        return part.size == sum(frame_length(i, r.file_size, r.chunk_size) for i in chunks)

    # --- frames into the store -------------------------------------------------------

    async def frame(self, record: Transfer, index: int, frame: bytes) -> None:
        """A verified frame of a transfer being kept (from the relay)."""
        tid = record.transfer_id
        if record.stored_at is not None:  # all in the store: it goes out, not in
            raise TransferNotActive(tid, index, "the file is in the store already")
        upload = self._uploads.get(tid)
        if upload is None:  # this instance restarted, or the sender came by another one
            upload = await self._open(record)
        if upload.failed is not None:
            raise TransferNotActive(tid, index, f"the store failed: {upload.failed}")
        if index < upload.next_index or index in upload.frames:
            return  # already on its way to the store, or stored
        if index >= upload.next_index + 2 * upload.per_part:  # bounded memory: not now
            upload.ahead.add(index)
            return
        upload.frames[index] = frame
        chunks = upload.next_index + len(upload.frames)
        self.host.progressed(record, chunks, min(record.file_size, chunks * record.chunk_size))
        async with upload.lock:
            await self._ship_full_parts(upload)

    async def _ship_full_parts(self, upload: _Upload) -> None:
        while upload.next_part <= upload.last_part:
            number = upload.next_part
            chunks = upload.part_range(number)
            if any(i not in upload.frames for i in chunks):
                return
            data = b"".join(upload.frames.pop(i) for i in chunks)
            upload.next_part += 1
            self._ask_again(upload)
            while len(upload.in_flight) >= PARTS_IN_FLIGHT:
                await asyncio.wait(upload.in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._raise_failure(upload)
            task = asyncio.create_task(self._put(upload, number, data), name=f"part-{number}")
            upload.in_flight.add(task)
            task.add_done_callback(upload.in_flight.discard)
            if number == upload.last_part:
                await self._finish(upload)

    def _ask_again(self, upload: _Upload) -> None:
        """The chunks dropped for coming too far ahead that fit in the window now."""
        window = upload.next_index + 2 * upload.per_part
        due = sorted(i for i in upload.ahead if i < window)
        if not due:
            return
        upload.ahead.difference_update(due)
        r = upload.record
        request = ChunkRequest(
            transfer_id=UUID(r.transfer_id), ranges=ranges_of(due), reason="missing"
        )
        self.host.rooms.send_to(
            r.room_id,
            r.sender_id,
            Message.build(T.FILE_SHARE_CHUNK_REQUEST, request, room_id=r.room_id),
        )

    async def _put(self, upload: _Upload, number: int, data: bytes) -> None:
        try:
            upload.parts[number] = await self.store.put_part(
                upload.record.transfer_id, upload.upload_id, number, data
            )
        except StoreError as exc:
            upload.failed = exc
            await self._store_failed(upload.record, exc)

    def _raise_failure(self, upload: _Upload) -> None:
        if upload.failed is not None:
            r = upload.record
            raise TransferNotActive(r.transfer_id, upload.next_index, str(upload.failed))

    async def _finish(self, upload: _Upload) -> None:
        """The last part is on its way: once all are in, the object is made and the
        record says ``stored``."""
        if upload.in_flight:
            await asyncio.wait(upload.in_flight)
        self._raise_failure(upload)
        r = upload.record
        tid = r.transfer_id
        parts = [upload.parts[n] for n in range(1, upload.last_part + 1)]
        try:
            await self.store.finish(tid, upload.upload_id, parts)
        except StoreError as exc:
            upload.failed = exc
            await self._store_failed(r, exc)
            return
        self._uploads.pop(tid, None)
        try:  # so that a server without Redis finds it again after a restart
            await keptrecords.write(self.store, r, time.time())
        except StoreError as exc:
            upload.failed = exc
            await self._store_failed(r, exc)
            return
        record = await self.backend.apply(tid, Event.STORE)
        log.info(
            "stored transfer=%s room=%s %s -> %s size=%d in %s",
            tid,
            r.room_id,
            r.sender_id,
            r.receiver_id,
            r.file_size,
            self.store.name,
        )
        self.host.rooms.to_parties(
            record, T.FILE_SHARE_STORED, TransferRef(transfer_id=UUID(tid)), None
        )
        self.offer_to(record)  # the receiver may be here already

    async def _store_failed(self, record: Transfer, exc: StoreError) -> None:
        """The store refused a part or the whole: the transfer fails with the store's
        error (its code says which: unavailable, refused, full); the parts stored so far
        are dropped with the upload (a new offer starts over)."""
        tid = record.transfer_id
        log.warning("the store failed for transfer %s: %s", tid, exc)
        with contextlib.suppress(RoomdropError):
            failed = await self.backend.apply(tid, Event.FAIL, code=exc.code, error=exc.message)
            payload = FileShareError(transfer_id=UUID(tid), code=exc.code, message=exc.message)
            self.host.rooms.to_parties(failed, T.FILE_SHARE_ERROR, payload, None)
        await self.ended(record)

    async def resumed(self, record: Transfer) -> None:
        """An upload resumed (the sender is back): ask for what the store lacks (frames
        of the part being filled that come again are taken once)."""
        upload = await self._open(record)
        missing = [(upload.next_index, record.total_chunks)]
        request = ChunkRequest(
            transfer_id=UUID(record.transfer_id), ranges=missing, reason="resume"
        )
        self.host.rooms.send_to(
            record.room_id,
            record.sender_id,
            Message.build(T.FILE_SHARE_CHUNK_REQUEST, request, room_id=record.room_id),
        )

    # --- the delivery ----------------------------------------------------------------

    def offer_to(self, record: Transfer) -> None:
        """Offer a stored file to its receiver, if connected here."""
        if record.status is not Status.STORED:
            return
        if self.host.present(record.room_id, record.receiver_id) is None:
            return
        offer = offer_of(record)
        message = Message.build(
            T.FILE_SHARE_OFFER, offer, sender_id=record.sender_id, room_id=record.room_id
        )
        self.host.rooms.send_to(record.room_id, record.receiver_id, message)

    def joined(self, records: list[Transfer]) -> None:
        """A receiver joined: the files kept for them are offered."""
        for record in records:
            self.offer_to(record)

    async def deliver(self, record: Transfer, ranges: list[tuple[int, int]]) -> None:
        """Send these chunks of a stored file to its receiver (connected here)."""
        tid = record.transfer_id
        delivery = self._deliveries.get(tid)
        if delivery is None or delivery.done:
            throttle = self.backend.take_bandwidth if self.settings.room_bandwidth else None
            delivery = Delivery(
                record,
                await self.ready(),
                self.host.present,
                self.host.progressed,
                self._gone,
                throttle,
            )
            self._deliveries[tid] = delivery
        delivery.add(ranges)

    def _gone(self, tid: str) -> None:
        self._deliveries.pop(tid, None)

    async def ended(self, record: Transfer) -> None:
        """A kept transfer stopped (paused, cancelled, failed, rejected, completed): its
        delivery here stops; an upload is aborted, an object deleted, once the transfer
        has ended."""
        tid = record.transfer_id
        delivery = self._deliveries.pop(tid, None)
        if delivery is not None:
            await delivery.stop()
        if not record.ended:
            return
        upload = self._uploads.pop(tid, None)
        try:
            if upload is not None:
                for task in upload.in_flight:
                    task.cancel()
                await self.store.abort(tid, upload.upload_id)
            elif record.stored_at is None:
                for u in await self.store.uploads():
                    if u.key == tid:
                        await self.store.abort(tid, u.upload_id)
            await self.store.delete(tid)
            await self.store.delete(tid + keptrecords.SUFFIX)
        except StoreError as exc:  # the sweep tries again
            log.warning("cleaning up the store after transfer %s failed: %s", tid, exc)

    # --- housekeeping ----------------------------------------------------------------

    async def sweep(self) -> None:
        """Abort uploads no live transfer owns once they are older than the expiry, and
        delete objects whose transfer has ended or is not known any more."""
        if not self._restored:
            await self.restore()
        if not self._started:
            return
        store = self.store
        try:
            uploads = await store.uploads()
            keys = await store.keys()
        except StoreError as exc:
            log.warning("the store sweep skipped: %s", exc)
            return
        now = time.time()
        for u in uploads:
            if u.key in self._uploads or now - u.initiated < self.settings.expiry:
                continue
            record = self.backend.peek(u.key) or await self._record(u.key)
            if record is None or not record.live or record.stored_at is not None:
                log.info("aborting the abandoned upload of %s", u.key)
                with contextlib.suppress(StoreError):
                    await store.abort(u.key, u.upload_id)
        for key in keys:
            if key.endswith(keptrecords.SUFFIX):
                continue  # goes with its object (keptrecords.restore)
            record = await self._record(key)
            # a record this server does not know: with Redis, one that ended long ago;
            # in memory, maybe one lost with a restart: left to the lifecycle rules
            if (record is not None and not record.ended) or (
                record is None and not self.backend.shared
            ):
                continue
            log.info("deleting the kept file of %s (its transfer ended)", key)
            with contextlib.suppress(StoreError):
                await store.delete(key)
                await store.delete(key + keptrecords.SUFFIX)

    async def restore(self) -> None:
        """A server whose records live in its memory takes up the kept files an earlier
        run left in the store (:mod:`.keptrecords`); tried again at each sweep until the
        store answers."""
        if self.backend.shared:
            self._restored = True
            return
        try:
            n = await keptrecords.restore(await self.ready(), self.backend, self.clock)
        except StoreError as exc:
            log.warning("kept files not taken up yet: %s", exc)
            return
        self._restored = True
        if n:
            log.info("took up %d kept file(s) from %s", n, self.store.name)

    async def _record(self, tid: str) -> Transfer | None:
        try:
            return await self.backend.get(tid)
        except RoomdropError:
            return None
