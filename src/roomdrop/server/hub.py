"""The hub: one instance's participants, their control messages, and its housekeeping.

Theory of operation
-------------------
Every participant is one WebSocket (a :class:`Socket`), wrapped in an :class:`Outbox`
whose single writer task sends control messages first and relay frames as the socket
takes them. The hub never awaits a slow socket while handling someone else's message:
control messages are queued (a socket that lets 1,000 pile up, or takes nothing for
``ROOMDROP_SEND_TIMEOUT`` while something waits for it, is closed as too slow), relay
frames wait for room (that wait is the relay's back-pressure).

The hub holds only what is this instance's own, each part in its module:
:class:`~roomdrop.server.rooms.Rooms` (its participants' sockets, and delivery to
participants here or elsewhere), :class:`~roomdrop.server.actions.Actions` (each
file-share action checked against the record and the state table, recorded, told to
both parties; the same methods serve the REST routes), and its
:class:`~roomdrop.server.relay.Relay` (the chunks carried through this instance:
verified, then straight to the receiver's socket when it keeps up, or staged encrypted
and forwarded, here or through the backend to the receiver's instance). Records,
presence, grace windows and delivery to participants elsewhere go through a
:class:`~roomdrop.server.backend.Backend` (in this process's memory by default, Redis
when instances share rooms). Here: joining and leaving (a disconnect pauses the
transfers of the one who left), the one dispatch table of control messages, what other
instances deliver (:class:`~roomdrop.server.backend.Inbound`), the sweeper (grace
windows, idle and expired transfers) and the shutdown.

This module imports no web framework: ``routes.py`` adapts FastAPI to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from roomdrop.clock import Clock, SystemClock
from roomdrop.exceptions import (
    BackendUnavailable,
    DirectDisabled,
    ProtocolError,
    RateLimited,
    RoomdropError,
    UnknownTransfer,
)
from roomdrop.protocol.frames import decode_json_chunk
from roomdrop.protocol.messages import (
    Accept,
    ChunkRequest,
    Complete,
    DirectHints,
    ErrorPayload,
    FileShareError,
    Message,
    MessageType,
    Offer,
    Progress,
    Signal,
    TransferRef,
    UserEvent,
    parse_message,
)
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.actions import Actions, needed
from roomdrop.server.auth import TokenAuthority
from roomdrop.server.backend import Backend
from roomdrop.server.buckets import TokenBucket
from roomdrop.server.keeping import Keeping
from roomdrop.server.memorybackend import MemoryBackend
from roomdrop.server.metrics import Metrics
from roomdrop.server.outbox import Outbox, Socket
from roomdrop.server.participant import Participant
from roomdrop.server.relay import Relay
from roomdrop.server.rooms import Rooms
from roomdrop.server.roomstate import RoomView, room_state
from roomdrop.server.settings import Settings
from roomdrop.server.staging import RelayStaging
from roomdrop.server.store import open_store

__all__ = ["Hub"]

log = logging.getLogger("roomdrop.server")

T = MessageType
SIGNALLING = {T.OFFER, T.ANSWER, T.ICE_CANDIDATE, T.DIRECT_HINTS}
SERVER_ONLY = {T.USER_JOINED, T.USER_LEFT, T.ROOM_STATE, T.FILE_SHARE_STORED}
STORE_SWEEP_EVERY = 60.0
"""Seconds between two sweeps of the store (uploads abandoned, objects whose transfer ended)."""
CLOSE_REPLACED = 4409
_BY_REF = {
    T.FILE_SHARE_REJECT: "reject",
    T.FILE_SHARE_PAUSE: "pause",
    T.FILE_SHARE_RESUME: "resume",
    T.FILE_SHARE_CANCEL: "cancel",
}


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
        self.metrics = Metrics()
        self.rooms = Rooms(self.backend)
        """The participants connected to this instance, and delivery to anyone."""
        self.relay = Relay(self)
        """Chunks carried through this instance."""
        self.keeping = Keeping(self, open_store(settings))
        """Files kept for later: into the store, out of it."""
        self.transfers = Actions(
            settings, self.clock, self.backend, self.metrics, self.rooms, self.relay, self.keeping
        )
        """The transfer actions (WebSocket and REST)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._shut_down = False
        self._store_swept = time.monotonic()

    async def start(self) -> None:
        """Start taking deliveries from other instances (a shared backend), and take up
        the kept files an earlier run left (in memory: keeping.restore)."""
        await self.backend.start(self)
        self._spawn(self.keeping.restore())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def counts(self) -> dict[str, int]:
        """Rooms with a participant connected here, and connections to this instance."""
        return self.rooms.counts()

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

    async def join(
        self, room_id: str, user_id: str, socket: Socket, key: str | None = None
    ) -> Participant:
        """``user_id`` joins ``room_id`` over ``socket``, publishing its device ``key``
        (if it has one): ``room-state`` to them (first, before anything else),
        ``user-joined`` to the others. A connection of the same user already in the room,
        here or on another instance, is replaced."""
        name = f"room={room_id} user={user_id}"
        outbox = Outbox(socket, stall_timeout=self.settings.send_timeout, name=name)
        participant = Participant(
            user_id,
            room_id,
            outbox,
            TokenBucket(self.settings.control_rate, self.settings.control_burst),
            key=key,
        )
        previous = self.rooms.add(participant)  # deliveries find it from now on
        if previous is not None:  # same user, new socket: the new one wins
            self._close_replaced(previous)
        try:
            returning = await self.backend.join(room_id, user_id, participant.conn_id, key)
            room = await RoomView.of(self.backend, self.settings, self.clock, room_id)
            records = await self.backend.records(user=user_id, room=room_id)
        except BaseException:
            self.rooms.remove(participant)
            raise
        participants = room.participants
        participant.outbox.send_first(self._room_state(room, records))
        joined = UserEvent(user_id=user_id, key=key)
        self.rooms.broadcast(room_id, T.USER_JOINED, joined, exclude=user_id)
        log.info("join room=%s user=%s returning=%s", room_id, user_id, returning)
        self.keeping.joined([r for r in records if r.receiver_id == user_id])
        for record in records:
            if not record.live:
                continue
            if record.status is Status.PAUSED and set(needed(record)) <= {*participants}:
                self._spawn(self.transfers.resume_after_disconnect(record.transfer_id))
            if self.backend.shared and record.receiver_id == user_id:
                self.relay_ready(room_id, user_id, record.transfer_id)  # frames may wait
        return participant

    def _room_state(self, room: RoomView, records: list[Transfer]) -> Message:
        return room_state(self.settings, room, records)

    def _close_replaced(self, previous: Participant) -> None:
        previous.outbox.close()
        self._spawn(previous.outbox.socket.close(CLOSE_REPLACED, "replaced"))

    async def leave(self, participant: Participant) -> None:
        """``participant``'s socket ended: unless a newer connection of theirs replaced
        it, they leave the room and their transfers under way pause."""
        participant.outbox.close()
        if not self.rooms.remove(participant):
            return  # replaced by a newer socket: nothing to do
        room_id, user = participant.room_id, participant.user_id
        grace = self.settings.reconnect_grace
        if await self.backend.leave(room_id, user, participant.conn_id, grace):
            await self._departed(room_id, user)

    async def _departed(self, room_id: str, user: str) -> None:
        """``user`` left ``room_id`` (their socket ended, or their instance vanished)."""
        self.rooms.broadcast(room_id, T.USER_LEFT, UserEvent(user_id=user))
        log.info("leave room=%s user=%s", room_id, user)
        for record in await self.backend.records(user=user, room=room_id, live_only=True):
            if record.status is Status.ACTIVE and user in needed(record):
                reason = f"{user} disconnected"
                self._spawn(self.transfers.pause_for_disconnect(record.transfer_id, reason))

    # --- deliveries from other instances (backend.Inbound) ---------------------------

    def to_user(self, room_id: str, user_id: str, text: str) -> None:
        member = self.rooms.local(room_id, user_id)
        if member is not None:
            member.outbox.send_text(text)

    def to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        self.rooms.to_local_room(room_id, text, exclude)

    def replaced(self, room_id: str, user_id: str, conn_id: str) -> None:
        member = self.rooms.local(room_id, user_id)
        if member is not None and member.conn_id != conn_id:
            self._close_replaced(member)

    def relay_ready(self, room_id: str, user_id: str, transfer_id: str) -> None:
        if not self._shut_down:
            self.relay.relay_ready(room_id, user_id, transfer_id)

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
                for room_id, room in list(self.rooms.by_id.items()):
                    for user, member in list(room.members.items()):
                        if not await self.backend.is_member(room_id, user):
                            await self.backend.join(room_id, user, member.conn_id, member.key)
                            event = UserEvent(user_id=user, key=member.key)
                            self.rooms.broadcast(room_id, T.USER_JOINED, event, exclude=user)
                    await self._send_room_states(room_id, list(room.members.items()))
            except BackendUnavailable as exc:
                failure = exc
                await asyncio.sleep(0.2)
                continue
            log.info("room-state resent to every participant here")
            return
        log.warning("room-state not resent: %s", failure)

    async def _send_room_states(
        self, room_id: str, members: list[tuple[str, Participant]], tries: int = 5
    ) -> None:
        """A fresh ``room-state`` to each of ``members``. Taking it awaits Redis, and a
        room message delivered meanwhile (``user-joined`` from another instance's
        resync) would reach them before a state that is older than it: the state is
        taken again then (up to ``tries`` times), and sent with no await after the last
        look, so whatever the room hears later comes after it."""
        for _ in range(tries):
            heard = self.rooms.heard(room_id)
            room = await RoomView.of(self.backend, self.settings, self.clock, room_id)
            states = [
                (member, await self.backend.records(user=user, room=room_id))
                for user, member in members
            ]
            if self.rooms.heard(room_id) == heard:
                break
        for member, records in states:
            member.send(self._room_state(room, records))

    async def _refresh(self, tid: str) -> None:
        """Another instance changed ``tid``: bring this instance's copy up to date, then
        (so that no chunk of it starts a new staging here) stop relaying it here unless
        it is active."""
        if self.backend.peek(tid) is None and not self.relay.carries(tid):
            return  # nothing of it here
        try:
            record: Transfer | None = await self.backend.get(tid)
        except UnknownTransfer:
            record = None
        if record is None or record.status is not Status.ACTIVE:
            await self.relay.close(tid, shared=False)

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
            assert isinstance(payload, Signal | DirectHints)
            if m.type is T.DIRECT_HINTS and not self.settings.allow_direct:
                raise DirectDisabled(
                    "this server does not forward direct-hints (ROOMDROP_ALLOW_DIRECT=false): "
                    "transfers go over WebRTC or the relay"
                )
            await self.transfers.require_member(room_id, payload.target_id, what="target")
            stamped = m.stamped(sender_id=user, room_id=room_id)
            self.rooms.send_to(room_id, payload.target_id, stamped)
        elif m.type is T.FILE_SHARE_OFFER:
            assert isinstance(payload, Offer)
            try:
                await self.transfers.offer(room_id, user, payload)
            except RoomdropError as exc:  # name the refused offer: a sender may have several
                self.refuse(p, exc, transfer_id=str(payload.transfer_id))
        elif m.type is T.FILE_SHARE_ACCEPT:
            assert isinstance(payload, Accept)
            tid = str(payload.transfer_id)
            await self.transfers.accept(room_id, user, tid, payload.missing, scan=payload.scan)
        elif m.type is T.FILE_SHARE_CHUNK:
            await self.relay.relay_json_chunk(p, decode_json_chunk(payload))
        elif m.type is T.FILE_SHARE_PROGRESS:
            assert isinstance(payload, Progress)
            await self.transfers.progress_report(room_id, user, payload)
        elif m.type is T.FILE_SHARE_COMPLETE:
            assert isinstance(payload, Complete)
            await self.transfers.complete(room_id, user, str(payload.transfer_id), payload.sha256)
        elif m.type is T.FILE_SHARE_CHUNK_REQUEST:
            assert isinstance(payload, ChunkRequest)
            await self.transfers.chunk_request(room_id, user, payload)
        elif m.type is T.FILE_SHARE_ERROR:
            assert isinstance(payload, FileShareError)
            await self.transfers.report_error(room_id, user, payload)
        elif m.type is T.ERROR:
            log.info("client error room=%s user=%s: %s", room_id, user, payload)
        else:
            assert isinstance(payload, TransferRef)
            tid, action = str(payload.transfer_id), _BY_REF[m.type]
            await self.transfers.act(room_id, user, tid, action, payload.reason)

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
            await self.relay.close(tid)
            if record.store:
                await self.keeping.ended(record)
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
            self.rooms.to_parties(record, kind, payload, None)
        for room_id, user in await self.backend.orphans():
            await self._departed(room_id, user)
        for room_id, user in await self.backend.graces_over():
            await self.transfers.grace_over(room_id, user)
        self.transfers.forget_ended()
        RelayStaging.purge_older_than(
            self.settings.data_dir / "relay", time.time() - self.settings.expiry
        )
        if time.monotonic() >= self._store_swept + STORE_SWEEP_EVERY:
            self._store_swept = time.monotonic()
            await self.keeping.sweep()

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
        await self.relay.close_all()
        await asyncio.sleep(0.1)  # let the writers flush the pause messages
        members = [member for _, _, member in self.rooms.everyone()]
        for member in members:
            member.outbox.close()
        # all at once: a socket that does not read holds its close up to 5 s (outbox.py)
        await asyncio.gather(
            *(member.outbox.socket.close(1001, "server shutting down") for member in members),
            return_exceptions=True,
        )

    async def _pause_all_here(self, reason: str) -> None:
        """Pause every active transfer with a party connected here, as a disconnect."""
        here = {(room_id, user) for room_id, user, _ in self.rooms.everyone()}
        for record in await self.backend.records(live_only=True):
            parties = {(record.room_id, record.sender_id), (record.room_id, record.receiver_id)}
            if record.status is Status.ACTIVE and parties & here:
                await self.transfers.pause_as_disconnected(record.transfer_id, reason)

    async def close(self) -> None:
        """After :meth:`shutdown`: stop everything still running here (forwarders,
        pumps, background work) before the backend closes under it."""
        await self.shutdown()
        tasks = [*self._tasks, *self.relay.tasks()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.keeping.close()

    # --- what the relay needs of its host (relay.RelayHost) ---------------------------

    def present(self, room_id: str, user: str) -> Participant | None:
        return self.rooms.present(room_id, user)

    async def party(self, room_id: str, user: str, tid: str, only: str | None = None) -> Transfer:
        return await self.transfers.party(room_id, user, tid, only)

    async def content_allowed(self, record: Transfer, head: Any) -> bool:
        return await self.transfers.content_allowed(record, head)

    def progressed(self, record: Transfer, chunks: int, nbytes: int) -> None:
        self.transfers.progressed(record, chunks, nbytes)

    async def keep(self, record: Transfer, index: int, frame: bytes) -> None:
        await self.keeping.frame(record, index, frame)


def _uuid_or_none(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
