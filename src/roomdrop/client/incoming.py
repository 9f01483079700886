"""The receiving end: consider an offer, accept it with the chunks still lacking, take
chunks in from the relay or a data channel, and announce the verified file.

* **Offers.** An offer addressed to this end is asked about (``--yes`` or the prompt),
  then accepted with the chunks its part file lacks (:meth:`Incoming._accept`), or
  rejected. A new offer of content this end is already receiving from the same sender
  supersedes the old transfer; the part file stays for the new one to resume from.
* **Chunks.** Every frame goes through an assembler (data-channel messages may split a
  frame), then to the manager, which verifies the chunk's sha256 and writes it at its
  offset (:meth:`Incoming._take`). A bad chunk is asked for again (reason
  ``bad-checksum``); when the last chunk lands and the whole file checks out,
  ``file-share-complete`` goes to the server. If it does not, the chunks of the part
  file that fail their recorded sha256 are asked for again, with the same reason.
* **The completion** counts once the server answers with its own
  ``file-share-complete`` (:meth:`Incoming.on_complete` ends the transfer). Until then
  the transfer is *unannounced* (:meth:`Incoming.unannounced`: verified here, not taken
  there, say the socket was down or the server held it paused, when a transfer cannot
  complete) and is announced again wherever the server can take it: at a catch-up that
  finds it ``active`` (:mod:`.catchup`) and on its ``file-share-resume``.
* **Asking.** After a resume, or when nothing has arrived for
  ``ROOMDROP_STALL_TIMEOUT``, or when a data channel drops, this end asks for every
  chunk it lacks (:meth:`Incoming.request_missing`). It reports its progress to the
  server every second (:meth:`Incoming.tick`).
* **Taking up.** A restarted receiver adopts a transfer the server still holds and
  resumes it from its part file (:meth:`Incoming.take_up`).

The page mirrors this module in ``static/incoming.js``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from roomdrop.client.errors import NotConnected
from roomdrop.client.keyring import Peer, notes_on_keys
from roomdrop.client.malware import not_received
from roomdrop.client.transfers import DECLINED, Host, ReceiveState, Result, Role
from roomdrop.exceptions import (
    BadChecksum,
    DamagedChunks,
    E2EError,
    E2ERequired,
    Infected,
    IntegrityError,
    KeyChanged,
    PolicyError,
    ProtocolError,
    RoomdropError,
    ScanUnavailable,
    StorageError,
    TransferError,
)
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.chunks import chunk_length, ranges_of
from roomdrop.protocol.frames import MAX_CHUNK_SIZE, Chunk, ChunkAssembler, decode_frame
from roomdrop.protocol.messages import (
    Accept,
    ChunkRequest,
    Complete,
    FileShareError,
    Message,
    Offer,
    Progress,
    TransferRef,
)
from roomdrop.protocol.messages import MessageType as T
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject

__all__ = ["Incoming", "offer_of"]

log = logging.getLogger("roomdrop.client")

REPORT_EVERY = 1.0
REQUEST_AGAIN_AFTER = 1.0


class Incoming(Role[ReceiveState]):
    """The files this session receives into its download directory."""

    KEEPS_PART = True

    def __init__(
        self,
        host: Host,
        manager: FileTransferManager,
        ask: Callable[[dict[str, Any]], Awaitable[bool]] | None,
    ) -> None:
        super().__init__(host, manager)
        self._ask = ask
        self._relay_assembler = ChunkAssembler(max_partial=2, max_chunk_size=MAX_CHUNK_SIZE)
        self._assemblers: dict[tuple[str, str], ChunkAssembler] = {}
        # results of received files, or what ended the connection for good
        self._finished: asyncio.Queue[Result | BaseException] = asyncio.Queue()

    async def receive_files(self, count: int | None = None) -> list[Result]:
        """Take offers until ``count`` accepted transfers have ended, whatever their
        outcome (forever if None): a script waiting for one file learns that it failed.
        An offer the person here declined is not counted: they still wait for theirs."""
        results: list[Result] = []
        ended = 0
        while count is None or ended < count:
            result = await self._finished.get()
            if isinstance(result, BaseException):
                raise result
            results.append(result)
            ended += not result.declined
            if result.error_code == ScanUnavailable.code:
                break  # no file can be received safely until the scanner answers
        return results

    def connection_lost(self, exc: BaseException) -> None:
        """The connection ended for good: every transfer, and the receive, end with it."""
        self._finished.put_nowait(exc)

    # --- offers ----------------------------------------------------------------------

    def on_offer(self, offer: Offer, sender: str) -> None:
        tid = str(offer.transfer_id)
        self.host.spawn(self.consider(offer, sender), f"offer-{tid}")

    async def consider(self, offer: Offer, sender: str) -> None:
        tid = str(offer.transfer_id)
        if self._known(tid):
            log.warning("ignoring offer %s: it is known here already", tid)
            return
        await self._supersede(offer, sender)
        try:
            peer = self._checked(offer, sender)
            snapshot = await self.manager.register_offer(
                offer, sender, self.host.room, device=self.host.keyring.device
            )
        except ProtocolError as exc:
            log.warning("ignoring offer %s: %s", tid, exc)
            return
        except (E2EError, E2ERequired, KeyChanged) as exc:
            await self._refuse(offer, sender, exc)
            return
        state = ReceiveState(tid=tid, peer=sender, done=self.future())
        state.safety_number = peer.safety_number if peer is not None else None
        self.states[tid] = state
        describe = {
            **snapshot,
            "mime_type": offer.mime_type,
            "e2e": peer is not None,
            "safety_number": state.safety_number,
        }
        if self._ask is not None and not await self._ask(describe):
            await self.host.send(T.FILE_SHARE_REJECT, TransferRef(transfer_id=tid, reason=DECLINED))
            with contextlib.suppress(TransferError):
                await self.manager.reject_transfer(tid, DECLINED)
            self.resolve(state, status="rejected", error=DECLINED)
            return
        await self._accept(state)

    def _known(self, tid: str) -> bool:
        try:
            self.manager.get_transfer(tid)
        except TransferError:
            return False
        return True

    def _checked(self, offer: Offer, sender: str, *, taking_up: bool = False) -> Peer | None:
        """Check the keys of ``offer`` (:meth:`Keyring.for_offer`: raises E2EError,
        E2ERequired or KeyChanged) and say what they are: its sender, None in the clear."""
        peer = self.host.keyring.for_offer(offer, sender, taking_up=taking_up)
        for text in notes_on_keys(peer, sender, offer.filename, sending=False):
            self.host.reporter.note(text)
        return peer

    async def _refuse(self, offer: Offer, sender: str, exc: RoomdropError) -> None:
        """Fail a transfer whose keys do not check out: this end does not take it, and
        says why to both (``file-share-error``)."""
        tid = str(offer.transfer_id)
        with contextlib.suppress(ProtocolError):  # its record, to say which file it was
            clear = offer.model_copy(update={"e2e": None})
            await self.manager.register_offer(clear, sender, self.host.room)
        state = self.states.get(tid) or ReceiveState(tid=tid, peer=sender, done=self.future())
        self.states[tid] = state
        with contextlib.suppress(TransferError):
            await self.manager.fail_transfer(tid, exc.code, exc.message)
        with contextlib.suppress(NotConnected):
            await self.host.send(
                T.FILE_SHARE_ERROR,
                FileShareError(transfer_id=offer.transfer_id, code=exc.code, message=exc.message),
            )
        self.resolve(state, status="failed", error=exc.message, code=exc.code)

    async def _supersede(self, offer: Offer, sender: str) -> None:
        """A new offer of content this end is already receiving from the same sender
        (the sender restarted, or the server did) replaces the old transfer; the old
        one's part file stays, for the new one to resume from."""
        for record in self.manager.records():
            if (
                record.live
                and record.transfer_id != str(offer.transfer_id)  # this offer, seen again
                and record.sender_id == sender
                and (record.sha256, record.file_size, record.chunk_size)
                == (offer.sha256, offer.file_size, offer.chunk_size)
            ):
                reason = f"superseded by {offer.transfer_id}"
                await self.manager.fail_transfer(record.transfer_id, "superseded", reason)
                old = self.states.pop(record.transfer_id, None)
                if old is not None and not old.done.done():
                    old.done.cancel()

    async def _accept(self, state: ReceiveState) -> None:
        tid = state.tid
        try:
            await self.manager.accept_transfer(tid)  # a part file complete already: scanned
        except (StorageError, Infected, ScanUnavailable) as exc:
            await not_received(self, state, exc)
            return
        record = self.manager.get_transfer(tid)
        state.resumed_bytes = record.bytes_transferred
        state.started = state.last_chunk = time.monotonic()
        try:
            await self.send_accept(state)
        except NotConnected:  # accepted here: the accept goes out on the catch-up
            log.info("the accept of %s goes out when the connection is back", tid)
        if state.resumed_bytes:
            self.host.reporter.note(
                f"resuming {record.filename}: {state.resumed_bytes:,} of "
                f"{record.file_size:,} bytes already here"
            )
        if record.status is Status.COMPLETED:
            await self.announce_complete(state)

    async def send_accept(self, state: ReceiveState) -> None:
        """``file-share-accept`` for a transfer accepted here, with the chunks its part
        file still lacks; :class:`NotConnected` while the connection is down (the
        catch-up that follows sends it again: :meth:`accepted_here`)."""
        record = self.manager.get_transfer(state.tid)
        missing = await self.manager.missing_chunks(state.tid)
        ranges = ranges_of(missing) if len(missing) < record.total_chunks else None
        scan = True if self.manager.scan is not None else None
        await self.host.send(
            T.FILE_SHARE_ACCEPT, Accept(transfer_id=state.tid, missing=ranges, scan=scan)
        )

    def accepted_here(self, state: ReceiveState) -> bool:
        """Accepted by this end (its record is active), whether or not the server took
        the accept (a connection lost as it went out: the server still holds it pending)."""
        return not state.done.done() and self.local_status(state) is Status.ACTIVE

    async def take_up(self, t: TransferObject) -> None:
        """Adopt a transfer the server still holds (this receiver restarted)."""
        assert t.sha256 is not None
        host = self.host
        offer = offer_of(t, host.user)
        tid = t.transfer_id
        try:
            peer = self._checked(offer, t.sender_id, taking_up=True)
            await self.manager.register_offer(
                offer, t.sender_id, host.room, device=host.keyring.device
            )
        except (E2EError, E2ERequired, KeyChanged) as exc:
            await self._refuse(offer, t.sender_id, exc)
            return
        state = ReceiveState(tid=tid, peer=t.sender_id, done=self.future())
        state.safety_number = peer.safety_number if peer is not None else None
        try:
            await self.manager.accept_transfer(tid)  # complete already: scanned now
        except (StorageError, Infected, ScanUnavailable) as exc:
            self.states[tid] = state
            await not_received(self, state, exc, tell=isinstance(exc, Infected))
            return
        # known from here on: a resume that arrives now asks for what the part file lacks
        self.states[tid] = state
        record = self.manager.get_transfer(tid)
        state.resumed_bytes = record.bytes_transferred
        host.reporter.note(
            f"taking up {record.filename} again: {record.bytes_transferred:,} of "
            f"{record.file_size:,} bytes already here"
        )
        if record.status is Status.COMPLETED:
            await self.announce_complete(state)
            return
        current = await host.api().transfer(host.room, tid)
        status = current.get("status") if current else None
        if status == Status.PAUSED.value:
            await self.manager.pause_transfer(tid)
            await host.send(T.FILE_SHARE_RESUME, TransferRef(transfer_id=tid))
        elif status == Status.ACTIVE.value:
            await self.request_missing(state, "resume")

    async def forget(self, state: ReceiveState) -> None:
        """The server no longer knows the transfer (it restarted): the sender offers it
        again, and the part file stays for that offer to resume from."""
        self.states.pop(state.tid, None)
        with contextlib.suppress(TransferError):
            await self.manager.fail_transfer(
                state.tid, "unknown-transfer", "the server no longer knows it"
            )
        state.done.cancel()

    async def end(
        self, state: ReceiveState, status: str, error: str | None, code: str | None
    ) -> None:
        """It ended while this end was away (or the message saying so was lost): ended
        here too, keeping the verified chunks of the part file."""
        with contextlib.suppress(TransferError):
            await self.manager.fail_transfer(state.tid, code or status, error or status)
        self.resolve(state, status=status, error=error, code=code)

    # --- asking for chunks -----------------------------------------------------------

    async def request_missing(self, state: ReceiveState, reason: str) -> None:
        """Ask the sender for every chunk this end still lacks. A resume announced twice
        (the server's automatic resume racing this end's own take-up) asks once."""
        now = time.monotonic()
        if reason == "resume" and now - state.last_request < REQUEST_AGAIN_AFTER:
            return
        if self.local_status(state) is not Status.ACTIVE:
            return  # not accepted here yet (its missing list would be everything)
        missing = await self.manager.missing_chunks(state.tid)
        state.last_request = now
        if not missing:
            return
        request = ChunkRequest(transfer_id=state.tid, ranges=ranges_of(missing), reason=reason)
        with contextlib.suppress(NotConnected):
            await self.host.send(T.FILE_SHARE_CHUNK_REQUEST, request)

    async def on_resume(self, msg: Message) -> None:
        state = await self._resumed(msg)
        if state is None:
            return
        if self.unannounced(state):
            # verified here while the server held it paused (the disconnect of this end's
            # instance, say): it can complete now
            await self.announce_complete(state)
            return
        state.last_chunk = time.monotonic()
        await self.request_missing(state, "resume")

    def on_link_down(self, remote: str) -> None:
        """What was in flight on the data channel from ``remote`` is lost: ask for it
        (through the relay)."""
        for inc in self.live():
            if inc.peer == remote:
                self.host.spawn(self.request_missing(inc, "missing"), f"request-{inc.tid}")

    def on_new_link(self, remote: str) -> None:
        self._assemblers.pop((remote, "p2p"), None)

    # --- chunks in -------------------------------------------------------------------

    async def on_relay_frame(self, data: bytes) -> None:
        await self._on_frame(data, self._relay_assembler, "relay", None)

    async def on_link_frame(self, remote: str, data: bytes, via: str = "p2p") -> None:
        """A frame from ``remote``'s data channel (``p2p``) or direct connection."""
        assembler = self._assemblers.setdefault(
            (remote, via), ChunkAssembler(max_partial=4, max_chunk_size=MAX_CHUNK_SIZE)
        )
        await self._on_frame(data, assembler, via, remote)

    async def _on_frame(
        self, data: bytes, assembler: ChunkAssembler, via: str, remote: str | None
    ) -> None:
        try:
            chunk = assembler.feed(decode_frame(data))
        except ProtocolError as exc:
            log.warning("dropping a bad frame (%s): %s", via, exc)
            return
        if chunk is not None:
            await self._take(chunk, via, remote)

    async def _take(self, chunk: Chunk, via: str, remote: str | None) -> None:
        state = self.states.get(chunk.transfer_id)
        if state is None or state.done.done():
            return
        if remote is not None and remote != state.peer:
            log.warning("dropping chunk of %s from %s, not its sender", state.tid, remote)
            return
        tid, index = state.tid, chunk.chunk_index
        try:
            stored = await self.manager.receive(chunk)
        except DamagedChunks as exc:  # this chunk was stored; these others were not right
            state.via[via] += self._plain_length(chunk)
            state.transport, state.last_chunk = via, time.monotonic()
            damaged = exc.chunk_indexes
            self.host.reporter.note(
                f"the whole file did not check out: {len(damaged)} chunk(s) of the part file "
                "failed their sha256 check; asking for them again"
            )
            request = ChunkRequest(
                transfer_id=tid, ranges=ranges_of(damaged), reason="bad-checksum"
            )
            with contextlib.suppress(NotConnected):
                await self.host.send(T.FILE_SHARE_CHUNK_REQUEST, request)
            return
        except BadChecksum:
            check = "did not decrypt" if state.safety_number else "failed its sha256 check"
            self.host.reporter.note(f"chunk {index} {check}; asking for it again")
            request = ChunkRequest(
                transfer_id=tid, ranges=[(index, index + 1)], reason="bad-checksum"
            )
            with contextlib.suppress(NotConnected):
                await self.host.send(T.FILE_SHARE_CHUNK_REQUEST, request)
            return
        except (IntegrityError, StorageError, PolicyError, ScanUnavailable) as exc:
            await not_received(self, state, exc)  # an infected file (Infected) is a policy's
            return
        except TransferError as exc:
            log.debug("chunk %d of %s not taken: %s", index, tid, exc)
            return
        state.last_chunk = time.monotonic()
        if stored:
            state.via[via] += self._plain_length(chunk)
            state.transport = via
            if self.manager.get_transfer(tid).status is Status.COMPLETED:
                await self.announce_complete(state)

    def _plain_length(self, chunk: Chunk) -> int:
        """The file bytes a chunk carries (a sealed one's ciphertext has 16 more)."""
        r = self.manager.get_transfer(chunk.transfer_id)
        return chunk_length(chunk.chunk_index, r.file_size, r.chunk_size)

    # --- the end ---------------------------------------------------------------------

    def unannounced(self, state: ReceiveState) -> bool:
        """Verified here, and not yet taken by the server (its ``file-share-complete``
        would have ended ``state``)."""
        return not state.done.done() and self.local_status(state) is Status.COMPLETED

    async def announce_complete(self, state: ReceiveState) -> None:
        """``file-share-complete`` to the server. Whether it went out or not, nothing is
        recorded: only the server's answer ends the transfer, and until then it is
        announced again at each catch-up that finds it active and at each resume (the
        server refuses one it holds paused, or that it completed already, harmlessly)."""
        record = self.manager.get_transfer(state.tid)
        with contextlib.suppress(NotConnected):
            await self.host.send(
                T.FILE_SHARE_COMPLETE, Complete(transfer_id=state.tid, sha256=record.sha256)
            )

    async def on_complete(self, msg: Message) -> None:
        """The server took this end's ``file-share-complete``."""
        payload = msg.payload
        assert isinstance(payload, Complete)
        inc = self.states.get(str(payload.transfer_id))
        if inc is not None and msg.sender_id == self.host.user:
            self.resolve_completed(inc)

    def resolve_completed(self, inc: ReceiveState) -> None:
        if self.local_status(inc) is Status.COMPLETED:
            self.resolve(inc, status="completed")

    def resolve(
        self,
        state: ReceiveState,
        *,
        status: str,
        error: str | None = None,
        code: str | None = None,
    ) -> Result | None:
        result = super().resolve(state, status=status, error=error, code=code)
        if result is not None:
            self._finished.put_nowait(result)
        return result

    # --- the clock -------------------------------------------------------------------

    async def tick(self, now: float) -> None:
        """Show progress, report it to the server every second, and ask for what is
        lacking when nothing has arrived for ``ROOMDROP_STALL_TIMEOUT``."""
        host = self.host
        for inc in self.live():
            record = self.manager.get_transfer(inc.tid)
            if record.status is Status.PAUSED:  # the bar says so
                host.reporter.progress(record.snapshot(), inc.transport)
            if record.status is not Status.ACTIVE:
                continue
            host.reporter.progress(record.snapshot(), inc.transport)
            if now - inc.last_report >= REPORT_EVERY and host.online():
                inc.last_report = now
                progress = Progress(
                    transfer_id=inc.tid,
                    chunks_sent=record.chunks_sent,
                    bytes_transferred=record.bytes_transferred,
                    progress_percent=record.progress_percent,
                    status=record.status,
                )
                with contextlib.suppress(NotConnected):
                    await host.send(T.FILE_SHARE_PROGRESS, progress)
            stall = host.settings.stall_timeout
            if now - inc.last_chunk > stall and now - inc.last_request > stall and host.online():
                await self.request_missing(inc, "missing")


def offer_of(t: TransferObject, receiver: str) -> Offer:
    """The offer a transfer object from ``room-state`` stands for (it carries the sha256)."""
    assert t.sha256 is not None
    return Offer(
        transfer_id=t.transfer_id,
        receiver_id=receiver,
        filename=t.filename,
        file_size=t.file_size,
        mime_type=t.mime_type,
        chunk_size=t.chunk_size,
        total_chunks=t.total_chunks,
        sha256=t.sha256,
        e2e=t.e2e,
    )
