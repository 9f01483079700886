"""The relay: chunks the server carries itself, for peers that cannot reach each other.

Every relayed chunk passes here, so the common case (a whole binary frame of a transfer
this connection has relayed before) has a path of its own: the header is unpacked once,
the transfer's record comes from the connection's route cache (checked against the
backend's copy by identity on every frame), and the frame the sender sent is the object
that is staged or goes out. A chunk of an end-to-end encrypted transfer (a sealed frame,
docs/protocol.md §14.3) is ciphertext: its flags, lengths and index are checked, and
nothing is hashed (the receiver checks its GCM tag); a chunk in the clear has its sha256
compared as bytes. Anything else (a first
frame, a fragment, a JSON chunk, anything malformed or refused) takes the general path,
which answers with the same errors in the same order (docs/protocol.md §11.7).

A verified chunk goes straight to the receiver's socket when that keeps up and nothing
of its transfer waits; otherwise it is staged encrypted on disk
(:class:`~roomdrop.server.staging.RelayStaging`) and one forwarder task per transfer hands
the staged chunks on, oldest first, as the receiver's socket takes them. A receiver
connected to another instance gets its chunks through the backend's relay queue, which a
pump on that instance empties into its socket. What the relay needs of the rooms and the
transfer records (who is connected, who may send, what the policy says) it asks its
:class:`RelayHost`, the hub.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Final, Protocol
from uuid import UUID

from roomdrop.exceptions import (
    BackendUnavailable,
    ProtocolError,
    RelayClosed,
    RoomdropError,
    StorageError,
    TransferNotActive,
    UnknownTransfer,
)
from roomdrop.protocol.chunks import chunk_length
from roomdrop.protocol.frames import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    TAG_SIZE,
    VERSION,
    ZERO_CHECKSUM,
    Chunk,
    decode_frame,
    encode_frame_into,
)
from roomdrop.protocol.messages import ChunkRequest, Message, MessageType
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.backend import Backend
from roomdrop.server.metrics import Metrics
from roomdrop.server.participant import Participant
from roomdrop.server.settings import Settings
from roomdrop.server.staging import RelayStaging

__all__ = ["RELAY_TRIM_AFTER", "Relay", "RelayHost", "RelayLink"]

log = logging.getLogger("roomdrop.server")

RELAY_TRIM_AFTER: Final = 1.0
"""Seconds a drained relay staging stays empty before its ring file is truncated."""
_ZERO_DIGEST: Final = bytes(32)
"""The checksum field of a sealed frame."""


class RelayHost(Protocol):
    """What the relay needs of the hub."""

    backend: Backend
    settings: Settings
    metrics: Metrics

    def present(self, room_id: str, user: str) -> Participant | None:
        """``user``'s open connection to this instance in ``room_id``, if any."""

    async def party(self, room_id: str, user: str, tid: str, only: str | None = None) -> Transfer:
        """``tid``'s record, if ``user`` is its party (``only``: that one) in ``room_id``;
        else the precise refusal."""

    async def content_allowed(self, record: Transfer, head: Any) -> bool:
        """Whether the first chunk's content passes the MIME policy (if not, the transfer
        has failed and both parties were told)."""

    def progressed(self, record: Transfer, chunks: int, nbytes: int) -> None:
        """``record`` has got this far (broadcast at a bounded rate)."""

    def refuse(self, p: Participant, exc: RoomdropError, transfer_id: str | None = None) -> None:
        """Answer ``p`` with ``error``."""

    async def keep(self, record: Transfer, index: int, frame: bytes) -> None:
        """A verified frame of a file kept for later: into the store (keeping.py)."""


@dataclass(eq=False)
class RelayLink:
    """A transfer's staging on this instance, and the task that forwards from it."""

    staging: RelayStaging
    forwarder: asyncio.Task[None] | None = None
    holding: bool = False
    """The forwarder has taken a chunk out of the staging and not yet handed it to the
    receiver's socket: until it has, later chunks must not overtake it."""


class Relay:
    """The relay of one instance: verifies chunks from senders connected here and passes
    them on; brings frames relayed by other instances to receivers connected here."""

    def __init__(self, host: RelayHost) -> None:
        self.host = host
        self.backend = host.backend
        self.settings = host.settings
        self.metrics = host.metrics
        self.links: dict[str, RelayLink] = {}
        """The transfers whose chunks are staged here, or were lately."""
        self.pumps: dict[str, asyncio.Task[None]] = {}
        """Frames relayed by another instance, on their way to a receiver connected here."""
        self._pump_poked: set[str] = set()

    def carries(self, tid: str) -> bool:
        """Whether anything of ``tid`` is staged or pumped here."""
        return tid in self.links or tid in self.pumps

    def tasks(self) -> list[asyncio.Task[None]]:
        """Every forwarder and pump running here."""
        forwarders = [link.forwarder for link in self.links.values() if link.forwarder]
        return [*forwarders, *self.pumps.values()]

    async def close_all(self) -> None:
        """Stop relaying everything here (shutdown)."""
        for tid in list(self.links) + list(self.pumps):
            await self.close(tid)

    def relay_ready(self, room_id: str, user_id: str, transfer_id: str) -> None:
        """Frames of ``transfer_id`` wait between instances for ``user_id``: bring them
        to their socket here, if they are connected here."""
        if transfer_id in self.pumps:
            self._pump_poked.add(transfer_id)  # the pump must not stop now
        elif self.host.present(room_id, user_id) is not None:
            self.pumps[transfer_id] = asyncio.create_task(
                self._pump(transfer_id, room_id, user_id), name=f"relay-in-{transfer_id}"
            )

    # --- chunks from senders connected here ------------------------------------------

    async def handle_bytes(self, p: Participant, data: bytes) -> None:
        """A binary relay frame from ``p``."""
        try:
            if not await self._relay_known_whole_frame(p, data):
                await self._relay_frame(p, data)
        except RoomdropError as exc:
            self.host.refuse(p, exc)
        except Exception:  # a bug of ours: say so, keep the connection
            log.exception("relaying this frame from %s in %s failed", p.user_id, p.room_id)
            self.host.refuse(p, RoomdropError("internal error relaying this frame"))

    async def _relay_known_whole_frame(self, p: Participant, data: bytes) -> bool:
        """Relay ``data`` if it is a well-formed whole-chunk frame of a transfer whose
        route ``p`` has cached, with the offer's layout and length; False (nothing done)
        if it is anything else."""
        if len(data) <= HEADER_SIZE:
            return False
        magic, version, flags, tid_bytes, index, total, size, length, offset, checksum = (
            HEADER.unpack_from(data)
        )
        route = p.routes.get(tid_bytes)
        if (
            route is None
            or magic != MAGIC
            or version != VERSION
            or flags != route.flags
            or offset
            or length != len(data) - HEADER_SIZE
            or index >= total
        ):
            return False
        record = route.record
        if total != record.total_chunks or size != record.chunk_size:
            return False
        if length != (route.last_length if index == route.last_index else route.length):
            return False
        if flags and checksum != _ZERO_DIGEST:
            return False  # the general path says what is wrong
        if self.backend.peek(route.tid) is not record:  # forgotten or replaced: general path
            del p.routes[tid_bytes]
            return False
        if record.status is not Status.ACTIVE:
            raise TransferNotActive(route.tid, index, f"transfer is {record.status.value}")
        if flags:  # ciphertext: the receiver checks its GCM tag; nothing to hash or sniff
            await self._pass_on(p, record, index, data, length)
            return True
        chunk = memoryview(data)[HEADER_SIZE:]
        if hashlib.sha256(chunk).digest() != checksum:
            self._bad_checksum(p, route.tid, index)
        elif index != 0 or await self.host.content_allowed(record, chunk):
            await self._pass_on(p, record, index, data, length)
        return True

    async def _relay_frame(self, p: Participant, data: bytes) -> None:
        """The general path of a binary frame: decoded and checked in full, fragments
        reassembled; a whole frame's transfer is remembered for the fast path."""
        frame = decode_frame(data)
        route = p.routes.get(UUID(frame.transfer_id).bytes)
        if route is not None and self.backend.peek(route.tid) is route.record:
            record = route.record  # checked when the route was remembered
        else:
            record = await self.host.party(p.room_id, p.user_id, frame.transfer_id, only="sender")
            p.remember_route(record)
        p.assembler.max_chunk_size = record.chunk_size
        chunk = p.assembler.feed(frame)
        if chunk is not None:
            await self.relay_chunk(p, chunk, data if frame.is_whole else None, record)

    async def relay_json_chunk(self, p: Participant, chunk: Chunk) -> None:
        """A ``file-share-chunk`` (the seed's JSON form) from ``p``: for an end-to-end
        encrypted transfer its ``data`` is the ciphertext and its ``checksum`` that
        ciphertext's sha256 (checked); it goes on as a sealed frame."""
        await self.relay_chunk(p, chunk, json=True)

    async def relay_chunk(
        self,
        p: Participant,
        chunk: Chunk,
        frame: bytes | None = None,
        record: Transfer | None = None,
        *,
        json: bool = False,
    ) -> None:
        """Check one chunk from the sender and pass it on: straight to the receiver's
        socket when that keeps up and nothing is staged (``frame``, the sender's own
        whole-chunk frame, goes out as it came), otherwise into the encrypted staging,
        which the forwarder drains as the receiver takes it. What waits, waits encrypted
        on disk. ``record`` is the transfer's, when the caller has already checked that
        ``p`` is its sender; ``json``: the chunk came as a ``file-share-chunk``.

        A chunk in the clear is verified here (its sha256; chunk 0's content against the
        MIME policy). An end-to-end encrypted transfer's chunks are ciphertext: sealed
        frames of the plaintext's length and the GCM tag, which only the receiver can
        check; the server checks their framing, lengths, indices and the state table."""
        tid, index = chunk.transfer_id, chunk.chunk_index
        if record is None:
            record = await self.host.party(p.room_id, p.user_id, tid, only="sender")
        if record.status is not Status.ACTIVE:
            raise TransferNotActive(tid, index, f"transfer is {record.status.value}")
        if (chunk.total_chunks, chunk.chunk_size) != (record.total_chunks, record.chunk_size):
            raise ProtocolError(f"chunk {index} does not match the offer's chunk layout")
        sealed = record.e2e is not None
        if not json and chunk.sealed != sealed:
            raise ProtocolError(
                f"chunk {index} of {tid} is sealed, but the transfer is not end-to-end encrypted"
                if chunk.sealed
                else f"chunk {index} of {tid} is not sealed, but the transfer is end-to-end "
                "encrypted: its chunks travel as ciphertext only"
            )
        expected = chunk_length(index, record.file_size, record.chunk_size)
        if sealed:
            expected += TAG_SIZE
        if len(chunk.data) != expected:
            sealed_note = " (its plaintext and the 16-byte tag)" if sealed else ""
            raise ProtocolError(
                f"chunk {index} has {len(chunk.data)} bytes, expected {expected}{sealed_note}"
            )
        if (json or not sealed) and hashlib.sha256(chunk.data).hexdigest() != chunk.checksum:
            self._bad_checksum(p, tid, index)
            return
        if sealed:
            if not chunk.sealed:  # a JSON chunk of ciphertext: a sealed frame from here on
                chunk = dataclasses.replace(chunk, checksum=ZERO_CHECKSUM, sealed=True)
        elif index == 0 and not await self.host.content_allowed(record, chunk.data):
            return
        if frame is None:  # a fragmented or JSON chunk: one whole frame from here on
            buffer = bytearray(HEADER_SIZE + len(chunk.data))
            buffer[HEADER_SIZE:] = chunk.data
            encode_frame_into(buffer, chunk)
            frame = bytes(buffer)
        await self._pass_on(p, record, index, frame, expected)

    def _bad_checksum(self, p: Participant, tid: str, index: int) -> None:
        """A chunk failed its sha256: dropped, and its sender asked for it again."""
        request = ChunkRequest(transfer_id=tid, ranges=[(index, index + 1)], reason="bad-checksum")
        p.send(Message.build(MessageType.FILE_SHARE_CHUNK_REQUEST, request, room_id=p.room_id))
        self.metrics.refused.labels("bad-checksum").inc()

    async def _pass_on(
        self, p: Participant, record: Transfer, index: int, frame: bytes, nbytes: int
    ) -> None:
        """A verified chunk's whole frame, after the room's bandwidth allows it: straight
        to the receiver's socket if that has room and nothing of the transfer is staged
        (or taken out of the staging and not yet handed over: chunks go out in the order
        they came), otherwise into the staging (waiting while its window is full)."""
        if self.settings.room_bandwidth:
            await self.backend.take_bandwidth(p.room_id, nbytes)
        if record.store:  # its receiver is the store (while it is being uploaded)
            await self.host.keep(record, index, frame)
            self.metrics.relayed.inc(nbytes)
            return
        tid = record.transfer_id
        link = self.links.get(tid)
        if link is None or (link.staging.staged() == 0 and not link.holding):
            receiver = self.host.present(record.room_id, record.receiver_id)
            if receiver is not None:
                if receiver.outbox.try_send_frame(frame):
                    self._delivered(record, nbytes)
                    return
            elif self.backend.shared and await self.backend.relay_push(record, frame, wait=False):
                self._delivered(record, nbytes)  # to the receiver's instance
                return
        if link is None:
            if record.status is not Status.ACTIVE:  # stopped while this chunk waited above
                raise TransferNotActive(tid, index, f"transfer is {record.status.value}")
            link = self._link(record)
        if await link.staging.put(index, frame):
            self.metrics.staged.inc()

    def _delivered(self, record: Transfer, nbytes: int) -> None:
        """One chunk handed to the receiver's socket: O(1), a broadcast at most every
        ``progress_interval`` (the receiver's own reports correct the count)."""
        self.metrics.relayed.inc(nbytes)
        if record.status is Status.ACTIVE:
            chunks = min(record.total_chunks, record.chunks_sent + 1)
            self.host.progressed(record, chunks, min(record.file_size, chunks * record.chunk_size))

    def _link(self, record: Transfer) -> RelayLink:
        tid = record.transfer_id
        link = self.links.get(tid)
        if link is None:
            # a slot holds one whole frame: the header and up to chunk_size bytes (and
            # the GCM tag of an end-to-end encrypted chunk)
            longest = record.chunk_size + (TAG_SIZE if record.e2e is not None else 0)
            staging = RelayStaging(
                self.settings.data_dir / "relay",
                tid,
                chunk_size=HEADER_SIZE + longest,
                trim_after=RELAY_TRIM_AFTER,
            )
            link = self.links[tid] = RelayLink(staging)
            link.forwarder = asyncio.create_task(self._forward(tid, link), name=f"relay-{tid}")
        return link

    async def _forward(self, tid: str, link: RelayLink) -> None:
        """Hand staged frames to the receiver, as fast as its socket (or the queue to
        its instance) takes them. A chunk in flight when the receiver drops is lost
        here; the receiver asks for it again."""
        record = await self.backend.get(tid)
        try:
            while True:
                # verified on the way in and authenticated by AES-GCM since: no re-hash
                try:
                    _index, frame = await link.staging.take()
                except StorageError:  # that chunk is lost here; the receiver asks again
                    log.exception("relay of %s lost a staged chunk", tid)
                    continue
                link.holding = True
                try:
                    await self._deliver_frame(record, frame)
                except ConnectionError:
                    continue
                finally:
                    link.holding = False
                self._delivered(record, len(frame) - HEADER_SIZE)
        except (RelayClosed, UnknownTransfer, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("relay forwarder for %s failed", tid)

    async def _deliver_frame(self, record: Transfer, frame: bytes) -> None:
        """One frame to the receiver: its socket here, or the queue to the instance it
        is connected to; waits while either is full, or until the receiver is back."""
        while True:
            receiver = self.host.present(record.room_id, record.receiver_id)
            if receiver is not None:
                await receiver.outbox.send_frame(frame)
                return
            if self.backend.shared:
                await self.backend.relay_push(record, frame, wait=True)
                return
            await asyncio.sleep(0.05)

    # --- frames relayed by other instances --------------------------------------------

    async def _pump(self, tid: str, room_id: str, user: str) -> None:
        """Frames another instance relays to ``user``, connected here, as fast as their
        socket takes them; ends when none came for a second (and no new ones were
        announced), or when the receiver leaves (a frame in hand is lost, and asked for
        again)."""
        try:
            while True:
                frames = await self.backend.relay_pop(tid, timeout=1.0)
                if not frames:
                    if tid in self._pump_poked:
                        self._pump_poked.discard(tid)
                        continue
                    return
                for frame in frames:
                    receiver = self.host.present(room_id, user)
                    if receiver is None:
                        return
                    await receiver.outbox.send_frame(frame)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except BackendUnavailable as exc:  # what it held is asked for again
            log.warning("relay from another instance for %s stopped: %s", tid, exc)
        except Exception:
            log.exception("relay from another instance for %s failed", tid)
        finally:
            if self.pumps.get(tid) is asyncio.current_task():
                del self.pumps[tid]
                self._pump_poked.discard(tid)

    # --- stopping ---------------------------------------------------------------------

    async def close(self, tid: str, *, shared: bool = True) -> None:
        """Stop relaying ``tid``: its staging here is removed and its forwarder (and a
        pump bringing its frames from another instance) stopped; with ``shared``, what
        waits for it between instances is dropped too."""
        pump = self.pumps.pop(tid, None)
        if pump is not None:
            pump.cancel()
        if shared and self.backend.shared:
            try:
                await self.backend.relay_drop(tid)
            except BackendUnavailable as exc:  # it expires by itself (ROOMDROP_EXPIRY)
                log.warning("the relay queue of %s was not dropped: %s", tid, exc)
        link = self.links.pop(tid, None)
        if link is None:
            return
        if link.forwarder is not None:
            link.forwarder.cancel()
        try:
            await link.staging.close()
        except RoomdropError:  # the transfer's state has changed already: log, carry on
            log.exception("removing the relay staging of %s failed", tid)
