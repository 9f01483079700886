"""The transfer actions: each file-share action, from a party over the WebSocket or
REST or on the server's own account, checked against the transfer's record (it must
exist, be in this room, and come from the party allowed to send it) and the state table
before it is recorded, then told to both parties. A REST action and its WebSocket twin
go through the same method, so they have the same effect and send the same messages.

The server's own account: a transfer whose party dropped is paused (and marked, so it
resumes by itself once both are back); a sender that does not come back within the
grace window has its transfers cancelled; whatever stops a transfer closes its relay
here. Progress goes to both parties at a bounded rate."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from roomdrop.clock import Clock
from roomdrop.exceptions import (
    E2EError,
    E2ERequired,
    Forbidden,
    InvalidTransition,
    MimeTypeNotAllowed,
    ProtocolError,
    RoomdropError,
    ScanRequired,
    UnknownTransfer,
)
from roomdrop.protocol.messages import (
    Accept,
    ChunkRequest,
    Complete,
    FileShareError,
    Message,
    MessageType,
    Offer,
    Progress,
    TransferRef,
)
from roomdrop.protocol.policy import MimePolicy
from roomdrop.protocol.state import Event, Status
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.backend import Backend
from roomdrop.server.keeping import Keeping
from roomdrop.server.metrics import Metrics
from roomdrop.server.relay import Relay
from roomdrop.server.rooms import Rooms
from roomdrop.server.settings import Settings
from roomdrop.storage import sniff_mime_type

__all__ = ["Actions", "needed"]

log = logging.getLogger("roomdrop.server")

T = MessageType
_ACTIONS = {
    "reject": (T.FILE_SHARE_REJECT, Event.REJECT),
    "pause": (T.FILE_SHARE_PAUSE, Event.PAUSE),
    "resume": (T.FILE_SHARE_RESUME, Event.RESUME),
    "cancel": (T.FILE_SHARE_CANCEL, Event.CANCEL),
}


def needed(record: Transfer) -> tuple[str, ...]:
    """The parties a transfer needs connected to go on: both, but for a file kept for
    later, whose other end is the store (the sender while it uploads, the receiver
    while it is delivered)."""
    if not record.store:
        return (record.sender_id, record.receiver_id)
    return (record.receiver_id,) if record.stored_at is not None else (record.sender_id,)


class Actions:
    """The transfer actions of one instance (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        backend: Backend,
        metrics: Metrics,
        rooms: Rooms,
        relay: Relay,
        keeping: Keeping,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.backend = backend
        self.metrics = metrics
        self.rooms = rooms
        self.relay = relay
        self.keeping = keeping
        self.policy = MimePolicy(settings.mime_allow, settings.mime_deny)
        self._progress_sent: dict[str, float] = {}
        self._progress_due: set[str] = set()

    # --- by a party (WebSocket and REST) ---------------------------------------------

    async def offer(self, room_id: str, user: str, offer: Offer) -> dict[str, Any]:
        await self.require_member(room_id, user)
        if offer.receiver_id == user:
            raise ProtocolError("a transfer needs another participant as its receiver")
        if offer.store:  # kept for later: the receiver need not be here (keeping.py)
            await self.keeping.check_offer(room_id, user, offer)
        else:
            await self.require_member(room_id, offer.receiver_id, what="receiver")
        self.policy.check(offer.mime_type)
        await self._check_e2e(room_id, user, offer)
        record = await self.backend.create(offer, user, room_id)
        offer = offer.model_copy(update={"filename": record.filename})  # sanitised
        message = Message.build(T.FILE_SHARE_OFFER, offer, sender_id=user, room_id=room_id)
        if offer.store:
            self.rooms.send_to(room_id, user, message)
            try:
                await self.keeping.begin(record)
            except RoomdropError as exc:  # the store refused: nothing is kept
                await self.backend.apply(
                    record.transfer_id, Event.FAIL, code=exc.code, error=exc.message
                )
                raise
            return (await self.backend.get(record.transfer_id)).snapshot()
        self.rooms.send_to(room_id, offer.receiver_id, message)
        self.rooms.send_to(room_id, user, message)
        log.info(
            "offer room=%s %s -> %s transfer=%s size=%d",
            room_id,
            user,
            offer.receiver_id,
            offer.transfer_id,
            offer.file_size,
        )
        return record.snapshot()

    async def _check_e2e(self, room_id: str, user: str, offer: Offer) -> None:
        """An offer must be end-to-end encrypted (unless ROOMDROP_REQUIRE_E2E=0), and its
        content key sealed to the device keys its two parties published in this room:
        a key sealed to another (an older device, or one the sender was told of by
        someone else) would be the wrong one to hand out (the server cannot open it
        either way)."""
        e2e = offer.e2e
        if e2e is None:
            if self.settings.require_e2e:
                raise E2ERequired(
                    "this server carries only end-to-end encrypted transfers: the offer "
                    "has no e2e part (the content key sealed to the receiver's device key)"
                )
            return
        keys = await self.backend.device_keys(room_id)
        parties = [("sender", user, e2e.sender_key)]
        if not offer.store:  # a kept file's receiver key was checked against what they
            parties.insert(0, ("receiver", offer.receiver_id, e2e.receiver_key))  # last had
        for role, who, sealed_to in parties:
            published = keys.get(who)
            if published is None:
                raise E2EError(f"the {role} {who!r} published no device key in room {room_id!r}")
            if sealed_to != published:
                raise E2EError(
                    f"stale {role} key: the offer names {sealed_to}, but {who!r} "
                    f"published {published}"
                )

    async def accept(
        self,
        room_id: str,
        user: str,
        tid: str,
        missing: list[tuple[int, int]] | None = None,
        *,
        scan: bool | None = None,
    ) -> dict[str, Any]:
        """With ROOMDROP_REQUIRE_SCAN only a receiver that says it scans (``scan``) may
        accept: the server takes its word (it never sees the plaintext to check)."""
        record = await self.party(room_id, user, tid, only="receiver")
        if record.store and record.stored_at is None:
            raise Forbidden(
                f"transfer {tid} is being kept for you: it is offered to you once it is "
                "all in the server's store"
            )
        if self.settings.require_scan and not scan:
            raise ScanRequired(
                f"room {room_id} takes only receivers that scan every file for malware "
                "before saving it (ROOMDROP_REQUIRE_SCAN): receive with `roomdrop receive "
                "--scan URL` (a ClamAV daemon, unix:///PATH/TO/clamd.sock or "
                "tcp://HOST:PORT); the room page cannot scan",
                tid,
            )
        try:
            payload = Accept(transfer_id=UUID(tid), missing=missing, scan=scan)
        except ValidationError as exc:
            detail = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ProtocolError(f"missing: {detail}") from None
        if missing and missing[-1][1] > record.total_chunks:
            raise ProtocolError(
                f"missing range ends at {missing[-1][1]}, past total_chunks {record.total_chunks}"
            )
        record = await self.backend.apply(tid, Event.ACCEPT)
        self.rooms.to_parties(record, T.FILE_SHARE_ACCEPT, payload, user)
        if missing is not None:
            held = record.total_chunks - sum(end - start for start, end in missing)
            self.progressed(record, held, min(record.file_size, held * record.chunk_size))
        if record.delivering:  # from the store, by this instance
            await self.keeping.deliver(record, missing or [(0, record.total_chunks)])
        return record.snapshot()

    async def act(
        self, room_id: str, user: str, tid: str, action: str, reason: str | None = None
    ) -> dict[str, Any]:
        """reject, pause, resume or cancel, by a party allowed to."""
        await self.party(room_id, user, tid, only="receiver" if action == "reject" else None)
        kind, event = _ACTIONS[action]
        payload = TransferRef(transfer_id=UUID(tid), reason=reason)  # validated before acting
        record = await self.backend.apply(tid, event, error=reason)
        if action != "resume":  # a stopped transfer drops its staged chunks and wakes the
            await self._stopped(record)  # sender's reader; the receiver re-requests on resume
        elif record.store and record.stored_at is None:
            await self.keeping.resumed(record)  # the store asks the sender for the rest
        if action in ("pause", "resume"):  # a party's own word outweighs a disconnect's
            await self.backend.take_disconnect_paused(tid)
        self.rooms.to_parties(record, kind, payload, user)
        return record.snapshot()

    async def complete(self, room_id: str, user: str, tid: str, sha256: str) -> dict[str, Any]:
        await self.party(room_id, user, tid, only="receiver")
        record = await self.backend.apply(tid, Event.COMPLETE, sha256=sha256)
        await self._stopped(record)
        payload = Complete(transfer_id=UUID(tid), sha256=sha256)
        self.rooms.to_parties(record, T.FILE_SHARE_COMPLETE, payload, user)
        return record.snapshot()

    async def chunk_request(self, room_id: str, user: str, request: ChunkRequest) -> None:
        tid = str(request.transfer_id)
        record = await self.party(room_id, user, tid, only="receiver")
        if request.ranges[-1][1] > record.total_chunks:
            raise ProtocolError(f"range ends past total_chunks {record.total_chunks}")
        if record.delivering:  # the store sends them, not the sender
            if record.status is Status.ACTIVE:
                await self.keeping.deliver(record, request.ranges)
            return
        self.rooms.send_to(
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
        await self._stopped(record)
        self.rooms.to_parties(record, T.FILE_SHARE_ERROR, error, user)

    async def content_allowed(self, record: Transfer, head: Any) -> bool:
        """What the first relayed chunk shows the file to be must pass the MIME policy
        (:meth:`MimePolicy.objection`). If it fails, the transfer fails and both parties
        are told (``file-share-error``)."""
        message = self.policy.objection(record.mime_type, sniff_mime_type(head))
        if message is None:
            return True
        tid = record.transfer_id
        try:
            record = await self.backend.apply(
                tid, Event.FAIL, code=MimeTypeNotAllowed.code, error=message
            )
        except InvalidTransition:
            return False  # ended meanwhile
        await self._stopped(record)
        payload = FileShareError(
            transfer_id=UUID(tid), code=MimeTypeNotAllowed.code, message=message
        )
        self.rooms.to_parties(record, T.FILE_SHARE_ERROR, payload, None)
        self.metrics.refused.labels(MimeTypeNotAllowed.code).inc()
        return False

    # --- on the server's own account -------------------------------------------------

    async def end(self, tid: str, reason: str) -> None:
        """Cancel a live transfer on the server's own account, and say so."""
        try:
            record = await self.backend.get(tid)
            if not record.live:
                return
            record = await self.backend.apply(tid, Event.CANCEL, error=reason)
        except (UnknownTransfer, InvalidTransition):
            return
        await self._stopped(record)
        payload = TransferRef(transfer_id=UUID(tid), reason=reason)
        self.rooms.to_parties(record, T.FILE_SHARE_CANCEL, payload, None)

    async def pause_as_disconnected(self, tid: str, reason: str) -> Transfer | None:
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
        await self._stopped(record)
        payload = TransferRef(transfer_id=UUID(tid), reason=reason)
        self.rooms.to_parties(record, T.FILE_SHARE_PAUSE, payload, None)
        return record

    async def pause_for_disconnect(self, tid: str, reason: str) -> None:
        record = await self.pause_as_disconnected(tid, reason)
        if record is None:
            return
        # the one who left may be back already (its join ran while this pause was under
        # way, before the transfer counted as paused by a disconnect): resume now
        if all([await self.backend.is_member(record.room_id, u) for u in needed(record)]):
            await self.resume_after_disconnect(tid)

    async def resume_after_disconnect(self, tid: str) -> None:
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
        self.rooms.to_parties(record, T.FILE_SHARE_RESUME, payload, None)
        if record.store and record.stored_at is None:
            await self.keeping.resumed(record)

    async def grace_over(self, room_id: str, user: str) -> None:
        """``user`` did not come back to ``room_id`` in time: the transfers they send are
        cancelled (those they receive wait, paused, until they expire)."""
        if await self.backend.is_member(room_id, user):
            return
        for record in await self.backend.records(user=user, room=room_id, live_only=True):
            if record.sender_id == user and not record.delivering:
                await self.end(record.transfer_id, f"sender {user} did not come back")

    async def _stopped(self, record: Transfer) -> None:
        """Whatever stops a transfer closes its relay here, and its upload into (or
        delivery from) the store."""
        await self.relay.close(record.transfer_id)
        if record.store:
            await self.keeping.ended(record)

    # --- checks and reads ------------------------------------------------------------

    async def require_member(self, room_id: str, user: str, what: str = "you") -> None:
        if not await self.backend.is_member(room_id, user):
            who = "you are" if what == "you" else f"{what} {user!r} is"
            raise Forbidden(f"{who} not in room {room_id!r}")

    async def party(self, room_id: str, user: str, tid: str, only: str | None = None) -> Transfer:
        """``tid``'s record, if ``user`` is its party (``only``: that one) in ``room_id``;
        else the precise refusal."""
        record = await self.backend.get(tid)
        if record.room_id != room_id or not record.involves(user):
            raise UnknownTransfer(tid)  # to anyone else, a transfer is none of theirs
        if only == "receiver" and user != record.receiver_id:
            raise Forbidden(f"only the receiver of transfer {tid} may do this")
        if only == "sender" and user != record.sender_id:
            raise Forbidden(f"only the sender of transfer {tid} may do this")
        return record

    async def user_transfers(self, user: str, status: Status | None) -> list[dict[str, Any]]:
        return [
            record.snapshot()
            for record in await self.backend.records(user=user)
            if status in (None, record.status)
        ]

    async def progress_of(self, room_id: str, user: str, tid: str) -> dict[str, Any]:
        return (await self.party(room_id, user, tid)).snapshot()

    # --- progress --------------------------------------------------------------------

    def progressed(self, record: Transfer, chunks: int, nbytes: int) -> None:
        """``record`` has got this far (broadcast at a bounded rate)."""
        record.set_progress(chunks, nbytes, mono=self.clock.monotonic())
        if record.transfer_id not in self._progress_due:  # else a broadcast is due anyway
            self._broadcast_progress(record.transfer_id)

    def forget_ended(self) -> None:
        """Drop the progress bookkeeping of transfers that ended (the sweep)."""
        for tid in list(self._progress_sent):
            copy = self.backend.peek(tid)
            if copy is None or not copy.live:
                del self._progress_sent[tid]

    def _progress_timer(self, tid: str) -> None:
        self._progress_due.discard(tid)
        self._broadcast_progress(tid)

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
        self.rooms.to_parties(record, T.FILE_SHARE_PROGRESS, payload, None)
