"""The hub: rooms, participants, the authoritative transfer records, and policy.

Theory of operation
-------------------
Every participant is one WebSocket (a :class:`Socket`), wrapped in an :class:`Outbox`
whose single writer task sends control messages first and relay frames as the socket
takes them. The hub never awaits a slow socket while handling someone else's message:
control messages are queued (a socket that lets 1,000 pile up, or takes nothing for
``ROOMDROP_SEND_TIMEOUT`` while something waits for it, is closed as too slow), relay
frames wait for room (that wait is the relay's back-pressure).

Each file-share message is checked against the transfer's record (it must exist, be in
this room, and come from the party allowed to send it) and the state table before it is
recorded, then forwarded to the other party. The same methods serve the REST routes, so
a REST action and its WebSocket twin have the same effect and send the same messages.

The hub holds only what is this instance's own: its participants' sockets and its
:class:`~roomdrop.server.relayer.Relayer` (the chunks carried through this instance:
verified, then straight to the receiver's socket when it keeps up, or staged encrypted
and forwarded, here or through the backend to the receiver's instance). Records,
presence, grace windows and delivery to participants elsewhere go through a
:class:`~roomdrop.server.backend.Backend` (in this process's memory by default, Redis
when instances share rooms). A disconnect pauses the transfers of the one who left; a
sender that does not come back within the grace window has its transfers cancelled (the
sweeper ends grace windows, idle and expired transfers). Whatever stops a transfer
closes its relay here.

This module imports no web framework: ``routes.py`` adapts FastAPI to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError

from roomdrop.clock import Clock, SystemClock
from roomdrop.exceptions import (
    BackendUnavailable,
    Forbidden,
    InvalidTransition,
    MimeTypeNotAllowed,
    ProtocolError,
    RateLimited,
    RoomdropError,
    UnknownTransfer,
)
from roomdrop.protocol.frames import (
    decode_json_chunk,
)
from roomdrop.protocol.messages import (
    Accept,
    ChunkRequest,
    Complete,
    ErrorPayload,
    FileShareError,
    Message,
    MessageType,
    Offer,
    Progress,
    RoomState,
    Signal,
    TransferRef,
    UserEvent,
    parse_message,
)
from roomdrop.protocol.state import Event, Status
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.auth import TokenAuthority
from roomdrop.server.backend import Backend
from roomdrop.server.buckets import TokenBucket
from roomdrop.server.memory import MemoryBackend
from roomdrop.server.metrics import Metrics
from roomdrop.server.outbox import Outbox, Socket
from roomdrop.server.participant import Participant
from roomdrop.server.relay import RelayStaging
from roomdrop.server.relayer import Relayer
from roomdrop.server.settings import Settings
from roomdrop.storage import sniff_mime_type

__all__ = ["Hub"]

log = logging.getLogger("roomdrop.server")

T = MessageType
SIGNALLING = {T.OFFER, T.ANSWER, T.ICE_CANDIDATE}
SERVER_ONLY = {T.USER_JOINED, T.USER_LEFT, T.ROOM_STATE}
GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", ""})
CLOSE_REPLACED = 4409


@dataclass(eq=False)
class Room:
    """A room's participants connected to this instance."""

    room_id: str
    members: dict[str, Participant] = field(default_factory=dict)


class Hub:
    """Rooms, signalling, transfer records and the relay, for the participants connected
    to this instance; what instances share goes through ``backend`` (in memory by
    default, :mod:`roomdrop.server.backend`)."""

    def __init__(
        self,
        settings: Settings,
        authority: TokenAuthority,
        clock: Clock | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.settings = settings
        self.authority = authority
        self.clock: Clock = clock or SystemClock()
        self.backend: Backend = backend or MemoryBackend(settings, self.clock)
        self.rooms: dict[str, Room] = {}
        """The rooms with a participant connected to this instance, and those participants."""
        self.metrics = Metrics()
        self.relayer = Relayer(self)
        """Chunks carried through this instance."""
        self._progress_sent: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._shut_down = False
        self._progress_due: set[str] = set()

    async def start(self) -> None:
        """Start taking deliveries from other instances (a shared backend)."""
        await self.backend.start(self)

    def _progress_timer(self, tid: str) -> None:
        self._progress_due.discard(tid)
        self._broadcast_progress(tid)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- counts ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rooms with a participant connected here, and connections to this instance."""
        return {
            "rooms": sum(1 for r in self.rooms.values() if r.members),
            "connections": sum(len(r.members) for r in self.rooms.values()),
        }

    async def update_gauges(self) -> None:
        counts = self.counts()
        self.metrics.rooms.set(counts["rooms"])
        self.metrics.connections.set(counts["connections"])
        by_status = dict.fromkeys(Status, 0)
        for record in await self.backend.records():
            by_status[record.status] += 1
        for status, n in by_status.items():
            self.metrics.transfers.labels(status.value).set(n)

    # --- joining and leaving ---------------------------------------------------------

    async def join(self, room_id: str, user_id: str, socket: Socket) -> Participant:
        """``user_id`` joins ``room_id`` over ``socket``: ``room-state`` to them (first,
        before anything else), ``user-joined`` to the others. A connection of the same
        user already in the room, here or on another instance, is replaced."""
        room = self.rooms.setdefault(room_id, Room(room_id))
        name = f"room={room_id} user={user_id}"
        outbox = Outbox(socket, stall_timeout=self.settings.send_timeout, name=name)
        participant = Participant(
            user_id,
            room_id,
            outbox,
            TokenBucket(self.settings.control_rate, self.settings.control_burst),
        )
        previous = room.members.get(user_id)
        room.members[user_id] = participant  # deliveries find it from now on
        if previous is not None:  # same user, new socket: the new one wins
            self._close_replaced(previous)
        try:
            returning = await self.backend.join(room_id, user_id, participant.conn_id)
            participants = await self.backend.members(room_id)
            records = await self.backend.records(user=user_id, room=room_id)
        except BaseException:
            self._forget_local(participant)
            raise
        participant.outbox.send_first(_room_state(room_id, participants, records))
        self._broadcast(room_id, T.USER_JOINED, UserEvent(user_id=user_id), exclude=user_id)
        log.info("join room=%s user=%s returning=%s", room_id, user_id, returning)
        for record in records:
            if not record.live:
                continue
            other = record.receiver_id if record.sender_id == user_id else record.sender_id
            if record.status is Status.PAUSED and other in participants:
                self._spawn(self._resume_after_disconnect(record.transfer_id))
            if self.backend.shared and record.receiver_id == user_id:
                self.relay_ready(room_id, user_id, record.transfer_id)  # frames may wait
        return participant

    def _close_replaced(self, previous: Participant) -> None:
        previous.outbox.close()
        self._spawn(previous.outbox.socket.close(CLOSE_REPLACED, "replaced"))

    def _forget_local(self, participant: Participant) -> bool:
        """Drop ``participant`` from this instance's rooms; False if a newer connection
        of the same user had replaced it already."""
        room = self.rooms.get(participant.room_id)
        if room is None or room.members.get(participant.user_id) is not participant:
            return False
        del room.members[participant.user_id]
        if not room.members:
            del self.rooms[participant.room_id]
        return True

    async def leave(self, participant: Participant) -> None:
        """``participant``'s socket ended: unless a newer connection of theirs replaced
        it, they leave the room and their transfers under way pause."""
        participant.outbox.close()
        if not self._forget_local(participant):
            return  # replaced by a newer socket: nothing to do
        room_id, user = participant.room_id, participant.user_id
        grace = self.settings.reconnect_grace
        if await self.backend.leave(room_id, user, participant.conn_id, grace):
            await self._departed(room_id, user)

    async def _departed(self, room_id: str, user: str) -> None:
        """``user`` left ``room_id`` (their socket ended, or their instance vanished)."""
        self._broadcast(room_id, T.USER_LEFT, UserEvent(user_id=user))
        log.info("leave room=%s user=%s", room_id, user)
        for record in await self.backend.records(user=user, room=room_id, live_only=True):
            if record.status is Status.ACTIVE:
                self._spawn(self._pause_for_disconnect(record.transfer_id, f"{user} disconnected"))

    async def _pause_as_disconnected(self, tid: str, reason: str) -> Transfer | None:
        """Pause an active transfer on the server's own account (a party dropped, or this
        instance stops), marked to resume once both parties are back; both are told.
        None if it was not active (ended or paused meanwhile)."""
        try:
            record = await self.backend.get(tid)
            if record.status is not Status.ACTIVE:
                return None
            record = await self.backend.apply(tid, Event.PAUSE)
        except (UnknownTransfer, InvalidTransition):
            return None
        await self.backend.mark_disconnect_paused(tid)
        await self.relayer.close(tid)
        payload = TransferRef(transfer_id=UUID(tid), reason=reason)
        self._to_parties(record, T.FILE_SHARE_PAUSE, payload, None)
        return record

    async def _pause_for_disconnect(self, tid: str, reason: str) -> None:
        record = await self._pause_as_disconnected(tid, reason)
        if record is None:
            return
        # the one who left may be back already (its join ran while this pause was under
        # way, before the transfer counted as paused by a disconnect): resume now
        room_id = record.room_id
        if await self.backend.is_member(room_id, record.sender_id) and await self.backend.is_member(
            room_id, record.receiver_id
        ):
            await self._resume_after_disconnect(tid)

    async def _grace_over(self, room_id: str, user: str) -> None:
        """``user`` did not come back to ``room_id`` in time: the transfers they send are
        cancelled (those they receive wait, paused, until they expire)."""
        if await self.backend.is_member(room_id, user):
            return
        for record in await self.backend.records(user=user, room=room_id, live_only=True):
            if record.sender_id == user:
                await self._end(record.transfer_id, f"sender {user} did not come back")

    async def _resume_after_disconnect(self, tid: str) -> None:
        try:
            record = await self.backend.get(tid)
            if record.status is not Status.PAUSED:
                return
            if not await self.backend.take_disconnect_paused(tid):
                return
            record = await self.backend.apply(tid, Event.RESUME)
        except (UnknownTransfer, InvalidTransition):
            return
        payload = TransferRef(transfer_id=UUID(tid), reason="reconnected")
        self._to_parties(record, T.FILE_SHARE_RESUME, payload, None)

    # --- deliveries from other instances (backend.Inbound) ---------------------------

    def to_user(self, room_id: str, user_id: str, text: str) -> None:
        member = self._local(room_id, user_id)
        if member is not None:
            member.outbox.send_text(text)

    def to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        room = self.rooms.get(room_id)
        for user, member in list(room.members.items()) if room else ():
            if user != exclude:
                member.outbox.send_text(text)

    def replaced(self, room_id: str, user_id: str, conn_id: str) -> None:
        member = self._local(room_id, user_id)
        if member is not None and member.conn_id != conn_id:
            self._close_replaced(member)

    def relay_ready(self, room_id: str, user_id: str, transfer_id: str) -> None:
        if not self._shut_down:
            self.relayer.relay_ready(room_id, user_id, transfer_id)

    def transfer_changed(self, transfer_id: str) -> None:
        self._spawn(self._refresh(transfer_id))

    def resync(self) -> None:
        self._spawn(self._resync())

    async def _resync(self, attempts: int = 50) -> None:
        """Messages for participants here may have been lost: each gets a fresh
        ``room-state`` (who is in the room, its transfers' records) to catch up from, as
        after a reconnect but on the same connection (docs/protocol.md §11.11). One the
        shared state no longer counts in the room (Redis restarted empty) is in it again,
        and the others are told (``user-joined``). Right after Redis comes back, pooled
        connections to the old one fail once each: tried again, 0.2 s apart."""
        failure: BackendUnavailable | None = None
        for _ in range(attempts):
            try:
                for room_id, room in list(self.rooms.items()):
                    for user, member in list(room.members.items()):
                        if not await self.backend.is_member(room_id, user):
                            await self.backend.join(room_id, user, member.conn_id)
                            event = UserEvent(user_id=user)
                            self._broadcast(room_id, T.USER_JOINED, event, exclude=user)
                    participants = await self.backend.members(room_id)
                    for user, member in list(room.members.items()):
                        records = await self.backend.records(user=user, room=room_id)
                        member.send(_room_state(room_id, participants, records))
            except BackendUnavailable as exc:
                failure = exc
                await asyncio.sleep(0.2)
                continue
            log.info("room-state resent to every participant here")
            return
        log.warning("room-state not resent: %s", failure)

    async def _refresh(self, tid: str) -> None:
        """Another instance changed ``tid``: bring this instance's copy up to date, then
        (so that no chunk of it starts a new staging here) stop relaying it here unless
        it is active."""
        if self.backend.peek(tid) is None and not self.relayer.carries(tid):
            return  # nothing of it here
        try:
            record: Transfer | None = await self.backend.get(tid)
        except UnknownTransfer:
            record = None
        if record is None or record.status is not Status.ACTIVE:
            await self.relayer.close(tid, shared=False)

    # --- control messages ------------------------------------------------------------

    async def handle_text(self, p: Participant, raw: str | bytes) -> None:
        """One control message from ``p``; a refusal is answered with ``error``."""
        with self._answering(p, "handling this message"):
            if not p.bucket.try_take():
                raise RateLimited(f"more than {self.settings.control_rate:g} messages per second")
            message = parse_message(raw, max_bytes=self.settings.max_message_bytes)
            self.metrics.messages.labels(message.type.value).inc()
            await self._dispatch(p, message)

    @contextlib.contextmanager
    def _answering(self, p: Participant, doing: str) -> Iterator[None]:
        """Answer whatever goes wrong in the block with ``error``; the socket carries on."""
        try:
            yield
        except RoomdropError as exc:
            self.refuse(p, exc)
        except Exception:  # a bug of ours: say so, keep the connection
            log.exception("%s from %s in %s failed", doing, p.user_id, p.room_id)
            self.refuse(p, RoomdropError(f"internal error {doing}"))

    def refuse(self, p: Participant, exc: RoomdropError, transfer_id: str | None = None) -> None:
        """Answer a refused message with ``error``: nothing changed, carry on."""
        self.metrics.refused.labels(exc.code).inc()
        tid = transfer_id or getattr(exc, "transfer_id", None)
        payload = ErrorPayload(code=exc.code, message=exc.message, transfer_id=_uuid_or_none(tid))
        p.send(Message.build(T.ERROR, payload, room_id=p.room_id))

    async def _dispatch(self, p: Participant, m: Message) -> None:
        payload = m.payload
        user, room_id = p.user_id, p.room_id
        if m.type in SERVER_ONLY:
            raise ProtocolError(f"{m.type.value} is sent by the server, not by participants")
        if m.type in SIGNALLING:
            assert isinstance(payload, Signal)
            await self._require_member(room_id, payload.target_id, what="target")
            self._send_to(room_id, payload.target_id, m.stamped(sender_id=user, room_id=room_id))
        elif m.type is T.FILE_SHARE_OFFER:
            assert isinstance(payload, Offer)
            try:
                await self.offer(room_id, user, payload)
            except RoomdropError as exc:  # name the refused offer: a sender may have several
                self.refuse(p, exc, transfer_id=str(payload.transfer_id))
        elif m.type is T.FILE_SHARE_ACCEPT:
            assert isinstance(payload, Accept)
            await self.accept(room_id, user, str(payload.transfer_id), payload.missing)
        elif m.type is T.FILE_SHARE_CHUNK:
            await self.relayer.relay_chunk(p, decode_json_chunk(payload))
        elif m.type is T.FILE_SHARE_PROGRESS:
            assert isinstance(payload, Progress)
            await self.progress_report(room_id, user, payload)
        elif m.type is T.FILE_SHARE_COMPLETE:
            assert isinstance(payload, Complete)
            await self.complete(room_id, user, str(payload.transfer_id), payload.sha256)
        elif m.type is T.FILE_SHARE_CHUNK_REQUEST:
            assert isinstance(payload, ChunkRequest)
            await self.chunk_request(room_id, user, payload)
        elif m.type is T.FILE_SHARE_ERROR:
            assert isinstance(payload, FileShareError)
            await self.report_error(room_id, user, payload)
        elif m.type is T.ERROR:
            log.info("client error room=%s user=%s: %s", room_id, user, payload)
        else:
            assert isinstance(payload, TransferRef)
            action = {
                T.FILE_SHARE_REJECT: "reject",
                T.FILE_SHARE_PAUSE: "pause",
                T.FILE_SHARE_RESUME: "resume",
                T.FILE_SHARE_CANCEL: "cancel",
            }[m.type]
            await self.act(room_id, user, str(payload.transfer_id), action, payload.reason)

    # --- transfer actions (WebSocket and REST) ---------------------------------------

    async def offer(self, room_id: str, user: str, offer: Offer) -> dict[str, Any]:
        await self._require_member(room_id, user)
        if offer.receiver_id == user:
            raise ProtocolError("a transfer needs another participant as its receiver")
        await self._require_member(room_id, offer.receiver_id, what="receiver")
        self._check_mime(offer.mime_type)
        record = await self.backend.create(offer, user, room_id)
        offer = offer.model_copy(update={"filename": record.filename})  # sanitised
        message = Message.build(T.FILE_SHARE_OFFER, offer, sender_id=user, room_id=room_id)
        self._send_to(room_id, offer.receiver_id, message)
        self._send_to(room_id, user, message)
        log.info(
            "offer room=%s %s -> %s transfer=%s size=%d",
            room_id,
            user,
            offer.receiver_id,
            offer.transfer_id,
            offer.file_size,
        )
        return record.snapshot()

    async def accept(
        self, room_id: str, user: str, tid: str, missing: list[tuple[int, int]] | None = None
    ) -> dict[str, Any]:
        record = await self.party(room_id, user, tid, only="receiver")
        try:
            payload = Accept(transfer_id=UUID(tid), missing=missing)
        except ValidationError as exc:
            detail = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ProtocolError(f"missing: {detail}") from None
        if missing and missing[-1][1] > record.total_chunks:
            raise ProtocolError(
                f"missing range ends at {missing[-1][1]}, past total_chunks {record.total_chunks}"
            )
        record = await self.backend.apply(tid, Event.ACCEPT)
        self._to_parties(record, T.FILE_SHARE_ACCEPT, payload, user)
        if missing is not None:
            held = record.total_chunks - sum(end - start for start, end in missing)
            self.progressed(record, held, min(record.file_size, held * record.chunk_size))
        return record.snapshot()

    async def act(
        self, room_id: str, user: str, tid: str, action: str, reason: str | None = None
    ) -> dict[str, Any]:
        """reject, pause, resume or cancel, by a party allowed to."""
        await self.party(room_id, user, tid, only="receiver" if action == "reject" else None)
        kind, event = {
            "reject": (T.FILE_SHARE_REJECT, Event.REJECT),
            "pause": (T.FILE_SHARE_PAUSE, Event.PAUSE),
            "resume": (T.FILE_SHARE_RESUME, Event.RESUME),
            "cancel": (T.FILE_SHARE_CANCEL, Event.CANCEL),
        }[action]
        payload = TransferRef(transfer_id=UUID(tid), reason=reason)  # validated before acting
        record = await self.backend.apply(tid, event, error=reason)
        if action != "resume":  # a stopped transfer drops its staged chunks and wakes the
            await self.relayer.close(tid)  # sender's reader; the receiver re-requests on resume
        if action in ("pause", "resume"):  # a party's own word outweighs a disconnect's
            await self.backend.take_disconnect_paused(tid)
        self._to_parties(record, kind, payload, user)
        return record.snapshot()

    async def complete(self, room_id: str, user: str, tid: str, sha256: str) -> dict[str, Any]:
        await self.party(room_id, user, tid, only="receiver")
        record = await self.backend.apply(tid, Event.COMPLETE, sha256=sha256)
        await self.relayer.close(tid)
        payload = Complete(transfer_id=UUID(tid), sha256=sha256)
        self._to_parties(record, T.FILE_SHARE_COMPLETE, payload, user)
        return record.snapshot()

    async def chunk_request(self, room_id: str, user: str, request: ChunkRequest) -> None:
        tid = str(request.transfer_id)
        record = await self.party(room_id, user, tid, only="receiver")
        if request.ranges[-1][1] > record.total_chunks:
            raise ProtocolError(f"range ends past total_chunks {record.total_chunks}")
        self._send_to(
            room_id,
            record.sender_id,
            Message.build(T.FILE_SHARE_CHUNK_REQUEST, request, sender_id=user, room_id=room_id),
        )

    async def progress_report(self, room_id: str, user: str, progress: Progress) -> None:
        tid = str(progress.transfer_id)
        record = await self.party(room_id, user, tid)
        if (
            progress.chunks_sent > record.total_chunks
            or progress.bytes_transferred > record.file_size
        ):
            raise ProtocolError("progress beyond the transfer's size")
        if record.status is Status.ACTIVE:
            self.progressed(record, progress.chunks_sent, progress.bytes_transferred)

    async def report_error(self, room_id: str, user: str, error: FileShareError) -> None:
        tid = str(error.transfer_id)
        record = await self.party(room_id, user, tid)
        if record.live:
            record = await self.backend.apply(tid, Event.FAIL, code=error.code, error=error.message)
        await self.relayer.close(tid)
        self._to_parties(record, T.FILE_SHARE_ERROR, error, user)

    async def _end(self, tid: str, reason: str) -> None:
        """Cancel a live transfer on the server's own account, and say so."""
        try:
            record = await self.backend.get(tid)
            if not record.live:
                return
            record = await self.backend.apply(tid, Event.CANCEL, error=reason)
        except (UnknownTransfer, InvalidTransition):
            return
        await self.relayer.close(tid)
        payload = TransferRef(transfer_id=UUID(tid), reason=reason)
        self._to_parties(record, T.FILE_SHARE_CANCEL, payload, None)

    # --- housekeeping ----------------------------------------------------------------

    async def run_sweeper(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except BackendUnavailable as exc:  # said once per second until it is back
                log.warning("sweep skipped: %s", exc)
            except Exception:
                log.exception("sweep failed")

    async def sweep(self) -> None:
        """End idle and expired transfers (the backend's clock decides) and tell both
        parties; end the stay of participants whose instance vanished, and of those whose
        grace window is over; purge staging nobody closed."""
        for record in await self.backend.sweep():
            tid = record.transfer_id
            await self.relayer.close(tid)
            payload: BaseModel
            if record.status is Status.CANCELLED:
                kind, payload = (
                    T.FILE_SHARE_CANCEL,
                    TransferRef(transfer_id=UUID(tid), reason=record.error),
                )
            else:
                kind, payload = (
                    T.FILE_SHARE_ERROR,
                    FileShareError(
                        transfer_id=UUID(tid),
                        code=record.error_code or "expired",
                        message=record.error or "",
                    ),
                )
            self._to_parties(record, kind, payload, None)
        for room_id, user in await self.backend.orphans():
            await self._departed(room_id, user)
        for room_id, user in await self.backend.graces_over():
            await self._grace_over(room_id, user)
        for tid in list(self._progress_sent):
            copy = self.backend.peek(tid)
            if copy is None or not copy.live:
                del self._progress_sent[tid]
        RelayStaging.purge_older_than(
            self.settings.data_dir / "relay", time.time() - self.settings.expiry
        )

    async def shutdown(self) -> None:
        """Pause every active transfer with a party connected here and tell its parties,
        so that nothing is lost: they resume by themselves once both parties are back
        (on this instance restarted, or on another one sharing the backend). Called
        before uvicorn closes the sockets (see run.py), and again by the lifespan."""
        if self._shut_down:
            return
        self._shut_down = True
        try:
            await self._pause_all_here("server shutting down")
        except BackendUnavailable as exc:  # the records are out of reach: close anyway
            log.warning("shutting down without pausing transfers: %s", exc)
        await self.relayer.close_all()
        await asyncio.sleep(0.1)  # let the writers flush the pause messages
        for room in list(self.rooms.values()):
            for member in list(room.members.values()):
                member.outbox.close()
                with contextlib.suppress(Exception):
                    await member.outbox.socket.close(1001, "server shutting down")

    async def _pause_all_here(self, reason: str) -> None:
        """Pause every active transfer with a party connected here, as a disconnect."""
        here = {(room_id, user) for room_id, room in self.rooms.items() for user in room.members}
        for record in await self.backend.records(live_only=True):
            parties = {(record.room_id, record.sender_id), (record.room_id, record.receiver_id)}
            if record.status is Status.ACTIVE and parties & here:
                await self._pause_as_disconnected(record.transfer_id, reason)

    async def close(self) -> None:
        """After :meth:`shutdown`: stop everything still running here (forwarders,
        pumps, background work) before the backend closes under it."""
        await self.shutdown()
        tasks = [*self._tasks, *self.relayer.tasks()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- helpers ---------------------------------------------------------------------

    def _local(self, room_id: str, user: str) -> Participant | None:
        """``user``'s connection to this instance, if they have one in ``room_id``."""
        room = self.rooms.get(room_id)
        return room.members.get(user) if room else None

    def present(self, room_id: str, user: str) -> Participant | None:
        """``user``'s open connection to this instance in ``room_id``, if any."""
        member = self._local(room_id, user)
        return member if member is not None and not member.outbox.closed else None

    async def _require_member(self, room_id: str, user: str, what: str = "you") -> None:
        if not await self.backend.is_member(room_id, user):
            who = "you are" if what == "you" else f"{what} {user!r} is"
            raise Forbidden(f"{who} not in room {room_id!r}")

    async def party(self, room_id: str, user: str, tid: str, only: str | None = None) -> Transfer:
        record = await self.backend.get(tid)
        if record.room_id != room_id or not record.involves(user):
            raise UnknownTransfer(tid)  # to anyone else, a transfer is none of theirs
        if only == "receiver" and user != record.receiver_id:
            raise Forbidden(f"only the receiver of transfer {tid} may do this")
        if only == "sender" and user != record.sender_id:
            raise Forbidden(f"only the sender of transfer {tid} may do this")
        return record

    def _mime_allowed(self, mime: str) -> bool:
        mime = mime.lower()
        deny = [pattern.lower() for pattern in self.settings.mime_deny]
        allow = [pattern.lower() for pattern in self.settings.mime_allow]
        if any(fnmatch.fnmatchcase(mime, pattern) for pattern in deny):
            return False
        return not allow or any(fnmatch.fnmatchcase(mime, pattern) for pattern in allow)

    def _check_mime(self, mime: str) -> None:
        if not self._mime_allowed(mime):
            raise MimeTypeNotAllowed(f"files of type {mime.lower()} are not allowed here")

    async def content_allowed(self, record: Transfer, head: Any) -> bool:
        """What the first relayed chunk shows the file to be must pass the allow/deny
        lists too, and must not contradict a specific declared type (``text/plain`` that
        is really ``application/x-msdownload``). Aliases within one top-level type
        (``image/jpg`` and ``image/jpeg``) and a generic declaration
        (``application/octet-stream``) are not contradictions. If it fails, the transfer
        fails and both parties are told (``file-share-error``)."""
        sniffed = sniff_mime_type(head)
        declared = record.mime_type.lower()
        if sniffed is None or sniffed == declared:
            return True
        message = f"declared {declared}, but the content is {sniffed}"
        if not self._mime_allowed(sniffed):
            message += ", which is not allowed here"
        elif declared in GENERIC_TYPES or declared.split("/")[0] == sniffed.split("/")[0]:
            return True
        tid = record.transfer_id
        try:
            record = await self.backend.apply(
                tid, Event.FAIL, code=MimeTypeNotAllowed.code, error=message
            )
        except InvalidTransition:
            return False  # ended meanwhile
        await self.relayer.close(tid)
        payload = FileShareError(
            transfer_id=UUID(tid), code=MimeTypeNotAllowed.code, message=message
        )
        self._to_parties(record, T.FILE_SHARE_ERROR, payload, None)
        self.metrics.refused.labels(MimeTypeNotAllowed.code).inc()
        return False

    def progressed(self, record: Transfer, chunks: int, nbytes: int) -> None:
        record.set_progress(chunks, nbytes, mono=self.clock.monotonic())
        if record.transfer_id not in self._progress_due:  # else a broadcast is due anyway
            self._broadcast_progress(record.transfer_id)

    def _broadcast_progress(self, tid: str) -> None:
        """Progress to both parties, at most every ``progress_interval``; a change that
        comes too soon goes out when the interval is over (the last one is never lost)."""
        record = self.backend.peek(tid)
        if record is None:
            return
        now = time.monotonic()
        wait = self._progress_sent.get(tid, 0.0) + self.settings.progress_interval - now
        if wait > 0:
            if tid not in self._progress_due:
                self._progress_due.add(tid)
                asyncio.get_running_loop().call_later(wait, self._progress_timer, tid)
            return
        self._progress_sent[tid] = now
        self.backend.save_progress(record)
        snap = record.snapshot()
        payload = Progress(
            transfer_id=UUID(tid),
            chunks_sent=snap["chunks_sent"],
            bytes_transferred=snap["bytes_transferred"],
            progress_percent=snap["progress_percent"],
            status=record.status,
            speed_bps=snap["speed_bps"],
            eta_seconds=snap["eta_seconds"],
        )
        self._to_parties(record, T.FILE_SHARE_PROGRESS, payload, None)

    def _send_to(self, room_id: str, user: str, message: Message) -> None:
        """``message`` to ``user``'s connection, here or on another instance."""
        member = self._local(room_id, user)
        if member is not None:
            member.send(message)
        elif self.backend.shared:
            self.backend.publish_to_user(room_id, user, message.to_json())

    def _to_parties(
        self, record: Transfer, kind: MessageType, payload: BaseModel, by: str | None
    ) -> None:
        message = Message.build(kind, payload, sender_id=by, room_id=record.room_id)
        for user in dict.fromkeys((record.sender_id, record.receiver_id)):
            self._send_to(record.room_id, user, message)

    def _broadcast(
        self, room_id: str, kind: MessageType, payload: BaseModel, exclude: str | None = None
    ) -> None:
        """``kind`` to everyone in the room but ``exclude``, here and elsewhere."""
        message = Message.build(kind, payload, room_id=room_id)
        text = message.to_json()
        self.to_room(room_id, text, exclude)
        if self.backend.shared:
            self.backend.publish_to_room(room_id, text, exclude)

    async def user_transfers(self, user: str, status: Status | None) -> list[dict[str, Any]]:
        return [
            record.snapshot()
            for record in await self.backend.records(user=user)
            if status in (None, record.status)
        ]

    async def progress_of(self, room_id: str, user: str, tid: str) -> dict[str, Any]:
        return (await self.party(room_id, user, tid)).snapshot()


def _room_state(room_id: str, participants: list[str], records: list[Transfer]) -> Message:
    state = RoomState(participants=participants, transfers=[r.snapshot() for r in records])
    return Message.build(T.ROOM_STATE, state, room_id=room_id)


def _uuid_or_none(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
