"""The sending end: offer a file, send the chunks the receiver lacks, and follow its
answers until the file is verified at the other end.

* **Hashing early.** Each file is read once for its size, sha256 and MIME type
  (:class:`~.scans.Scans`), in a thread of its own that ``roomdrop send`` starts
  before it has imported the rest, so that hashing overlaps connecting, joining,
  waiting for the receiver and the transfers of the files before it. A file whose size
  or mtime changed since it was hashed is hashed again before it is offered; the chunk
  reads check them again (:class:`~roomdrop.storage.SourceFile`).
* **Offer or take up.** :meth:`Outgoing.send_file` takes the file's scan, then either adopts
  a transfer of the same content that the server still holds (this sender restarted:
  :meth:`Outgoing._take_up`) or offers it anew (:meth:`Outgoing._offer`). If the server
  loses the transfer (it restarted), the file is offered again (:class:`Reoffer`).
* **The pump.** Once the receiver accepts (with the chunks it lacks), one task per
  transfer (:meth:`Outgoing._pump`) sends the queued chunks while the transfer is
  active and the server reachable, over the path :mod:`.paths` chooses (a direct
  connection, the data channel, the relay). If that path dies mid-transfer the pump
  chooses again and goes on from the chunks still queued.
* **Requests.** Every ``file-share-chunk-request`` (bad checksum, missing, resume) puts
  chunks back in the queue; a request for a transfer not known yet is kept until it is.
  A request that repeats the last one while its chunks still wait to be sent (a
  receiver asking every ``ROOMDROP_STALL_TIMEOUT`` while no path is chosen yet) is
  counted, not shown again: the count is shown once the wait is over.
* **Ends.** ``file-share-complete`` from the receiver, a reject, a cancel, an error, or
  what the server says in ``room-state`` (see :mod:`.catchup`) ends the transfer.

The page mirrors this module in ``static/outgoing.js``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from roomdrop.client import paths
from roomdrop.client.errors import LinkDown, NotConnected
from roomdrop.client.keyring import Peer, notes_on_keys
from roomdrop.client.links import Links
from roomdrop.client.requestnotes import RequestNotes
from roomdrop.client.scans import Scans
from roomdrop.client.transfers import Host, Reoffer, Result, Role, SendState, adoptable
from roomdrop.client.waiting import NobodyCame, to_each, wait_for_receiver
from roomdrop.exceptions import (
    E2EError,
    E2ERequired,
    KeyChanged,
    RoomdropError,
    StorageError,
    TransferError,
    UnknownReceiver,
)
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.chunks import chunk_length, indexes_in
from roomdrop.protocol.messages import (
    Accept,
    ChunkRequest,
    Complete,
    ErrorPayload,
    FileShareError,
    Message,
    Offer,
    TransferRef,
)
from roomdrop.protocol.messages import MessageType as T
from roomdrop.protocol.state import Status
from roomdrop.storage import SourceInfo

__all__ = ["NobodyCame", "Outgoing"]

log = logging.getLogger("roomdrop.client")


class Outgoing(Role[SendState]):
    """The files this session sends: to each receiver one at a time."""

    def __init__(self, host: Host, manager: FileTransferManager, links: Links) -> None:
        super().__init__(host, manager)
        self.links = links
        self._stashed_requests: dict[str, list[ChunkRequest]] = {}
        self._unadoptable: set[str] = set()
        self.join_wait: float | None = None
        self.store = False
        """``send --store``: each file is kept in the server's store for its receiver."""
        """``--wait``: give up (:class:`NobodyCame`) if the receiver has not joined the
        room after this many seconds; ``None``: keep waiting."""
        self._requests = RequestNotes(host)

    # --- offering --------------------------------------------------------------------

    async def send_files(
        self, paths: list[Path], to: str | Sequence[str], scans: Scans | None = None
    ) -> list[Result]:
        """Send ``paths`` to ``to``: one receiver, several, or ``[EVERYONE]`` (those in
        the room now). Each receiver gets the files one after another, with its own
        transfers (its own accept, progress and resume), all receivers at once (at most
        as many transfers under way as the server allows a user, ``room-state``); every
        file is hashed once, and each transfer reads it from disk as it sends, so that a
        slow receiver holds nothing in memory for the others. A result for each file and
        receiver, by receiver; if one receiver could not be sent to (it never came,
        ``--wait``), that is raised once the others are done. ``scans``: the files'
        scans, begun earlier (else they begin now)."""
        scans = scans if scans is not None else Scans(paths)
        try:
            return await to_each(
                self.host,
                [to] if isinstance(to, str) else to,
                paths,
                lambda path, receiver: self.send_file(path, receiver, scans),
                wait=self.join_wait,
                online=not self.store,
            )
        finally:
            scans.stop()

    async def send_file(self, path: Path, to: str, scans: Scans | None = None) -> Result:
        host, scans = self.host, scans if scans is not None else Scans([path])
        if not self.store:  # a file kept for later goes to the server's store now
            await wait_for_receiver(host, to, self.join_wait)
            if host.transport in ("auto", "direct"):
                self.links.ensure_direct(to)
            if host.transport in ("auto", "p2p"):
                await self.links.ensure(to)
        while True:
            if not self.store:
                await host.wait_for(to)
            info = await scans.get(path)  # hashed meanwhile
            try:
                peer = host.keyring.for_receiver(to, kept=self.store)
            except (E2ERequired, KeyChanged, UnknownReceiver) as exc:
                return await self._refuse(info, to, exc)
            keys = (host.keyring.device.public_text, peer.key) if peer is not None else None
            held, skip = host.server_transfers.values(), self.states.keys() | self._unadoptable
            adopt = adoptable(held, host.user, to, info, self.manager.chunk_size, keys, skip)
            out = SendState(tid=adopt or "", peer=to, done=self.future(), info=info)
            out.transport = host.transport  # "auto" until the path is chosen
            try:
                if adopt is not None:
                    return await self._take_up(out, peer)
                return await self._offer(out, peer)
            except Reoffer:
                self.host.reporter.note(f"the server lost {info.filename}; offering it again")

    async def _refuse(self, info: SourceInfo, to: str, exc: RoomdropError) -> Result:
        """The file is not offered to ``to`` (a changed key, no key where the server
        requires one): its result says why."""
        host = self.host
        record = await self.manager.create_offer(info.path, host.user, to, host.room, scanned=info)
        out = SendState(tid=record["transfer_id"], peer=to, done=self.future(), info=info)
        self.states[out.tid] = out
        with contextlib.suppress(TransferError):
            await self.manager.fail_transfer(out.tid, exc.code, exc.message)
        self.resolve(out, status="failed", error=exc.message, code=exc.code)
        return await out.done

    def _say_keys(self, out: SendState, peer: Peer | None) -> None:
        assert out.info is not None
        out.safety_number = peer.safety_number if peer is not None else None
        for text in notes_on_keys(peer, out.peer, out.info.filename, sending=True):
            self.host.reporter.note(text)

    async def _offer(self, out: SendState, peer: Peer | None) -> Result:
        info = out.info
        assert info is not None
        host = self.host
        record = await self.manager.create_offer(
            info.path,
            host.user,
            out.peer,
            host.room,
            scanned=info,
            device=host.keyring.device if peer is not None else None,
            receiver_key=peer.key if peer is not None else None,
        )
        out.tid = record["transfer_id"]
        self.states[out.tid] = out
        self._say_keys(out, peer)
        offer = self.manager.offer(out.tid).model_copy(update={"store": self.store})
        await host.send(T.FILE_SHARE_OFFER, offer)
        host.reporter.note(
            f"keeping {info.filename} ({info.file_size:,} bytes) for {out.peer} on the "
            "server, end-to-end encrypted, until they join"
            if self.store
            else f"offered {info.filename} ({info.file_size:,} bytes) to {out.peer}; "
            "waiting for an answer"
        )
        return await self._drive(out)

    async def _take_up(self, out: SendState, peer: Peer | None) -> Result:
        """Adopt a transfer the server still holds (this sender restarted); an end-to-end
        one's content key is opened from the copy sealed to this device."""
        info = out.info
        assert info is not None
        host = self.host
        held = host.server_transfers[out.tid]
        try:
            await self.manager.create_offer(
                info.path,
                host.user,
                out.peer,
                host.room,
                transfer_id=out.tid,
                scanned=info,
                device=host.keyring.device if held.e2e is not None else None,
                e2e=held.e2e,
            )
        except E2EError as exc:  # sealed to this key, yet it does not open: offer anew
            host.reporter.note(f"cannot take up {info.filename} again ({exc}); offering it anew")
            self._unadoptable.add(out.tid)
            out.tid = ""
            return await self._offer(out, peer)
        self.states[out.tid] = out
        self._say_keys(out, peer)
        out.offered = True
        await self.manager.accept_transfer(out.tid)
        record = await host.api().transfer(host.room, out.tid)
        status = record.get("status") if record else None
        host.reporter.note(f"taking up {info.filename} again ({status})")
        if status == Status.PAUSED.value:
            await self.manager.pause_transfer(out.tid)
            await host.send(T.FILE_SHARE_RESUME, TransferRef(transfer_id=out.tid))
        elif status != Status.ACTIVE.value:  # it ended meanwhile: offer the file anew
            self.states.pop(out.tid, None)
            with contextlib.suppress(TransferError):
                await self.manager.cancel_transfer(out.tid, "ended on the server")
            raise Reoffer()
        for request in self._stashed_requests.pop(out.tid, []):
            await self._queue_request(out, request)
        out.started = time.monotonic()
        out.accepted.set()
        return await self._drive(out)

    def reoffer(self, out: SendState) -> None:
        """The server no longer knows ``out`` (it restarted): offer the file again."""
        self.states.pop(out.tid, None)
        out.done.set_exception(Reoffer())

    # --- the pump --------------------------------------------------------------------

    async def _drive(self, out: SendState) -> Result:
        pump = asyncio.create_task(self._pump(out), name=f"pump-{out.tid}")
        try:
            return await out.done
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            self._requests.repeats(out)
            self._requests.forget(out.tid)

    async def _pump(self, out: SendState) -> None:
        await out.accepted.wait()
        tid = out.tid
        decided = False
        while not out.done.done():
            status = self.manager.get_transfer(tid).status
            if not out.queue or status is not Status.ACTIVE or not self.host.online():
                out.wake.clear()
                await out.wake.wait()
                continue
            if not decided:
                out.transport = await self._choose_transport(out)
                decided = True
                continue  # the world may have changed while ICE was trying
            if paths.upgrade(self.links, out.peer, self.host.transport, out.transport):
                self.host.reporter.note(f"direct connection to {out.peer} open; sending over it")
                out.transport = "direct"
            index = next(iter(out.queue))
            try:
                frame = await self.manager.send_chunk(tid, index)
            except StorageError as exc:
                await self.fail(out, StorageError.code, str(exc.args[-1]))
                return
            except TransferError:
                continue  # paused meanwhile: wait for the resume
            try:
                if out.transport == "relay":
                    await self.host.send_frame(frame)
                else:
                    await self.links.send(out.peer, out.transport, frame)
            except LinkDown:
                # choose again: the other peer-to-peer path, a new data channel (the
                # peer may have restarted), else the relay
                lost = "direct connection" if out.transport == "direct" else "data channel"
                self.host.reporter.note(f"{lost} to {out.peer} lost")
                decided = False
                continue
            except NotConnected:
                # reconnecting: let the reader see the close (nothing above may have
                # yielded to it), then the loop waits for online()
                await asyncio.sleep(0.05)
                continue
            out.queue.pop(index, None)
            out.via[out.transport] += self._plain_length(out, index)

    async def _choose_transport(self, out: SendState) -> str:
        """The path for ``out`` (:func:`.paths.choose`), with a note saying which; with
        ``--transport direct`` or ``p2p``, a failure if that path does not open. The
        notes give the time from the start of the attempt."""
        mode = self.host.transport
        if self.store:  # into the server's store: through the relay
            return "relay"
        choice = await paths.choose(self.links, out.peer, mode, self.host.settings.ice_timeout)
        self._requests.repeats(out)
        if choice.path in paths.LINKS and choice.took is not None:
            link = paths.LINKS[choice.path]
            self.host.reporter.note(f"{link} to {out.peer} open after {choice.took:.2f} s")
        if choice.path is not None:
            return choice.path
        if mode in paths.LINKS:
            message = choice.unavailable(mode, out.peer)
            await self.fail(out, f"{mode}-unavailable", message, pause=True)
            return mode
        self.host.reporter.note(
            f"no peer-to-peer connection to {out.peer} after {choice.tried:.1f} s; "
            "sending through the relay"
        )
        return "relay"

    def on_link_down(self, remote: str) -> None:
        """The data channel to ``remote`` died: its pumps choose a path again."""
        for out in self.states.values():
            if out.peer == remote:
                out.wake.set()

    async def fail(self, out: SendState, code: str, message: str, *, pause: bool = False) -> None:
        with contextlib.suppress(RoomdropError, NotConnected):
            if pause:
                await self.host.send(T.FILE_SHARE_PAUSE, TransferRef(transfer_id=out.tid))
            else:
                await self.host.send(
                    T.FILE_SHARE_ERROR,
                    FileShareError(transfer_id=out.tid, code=code, message=message),
                )
        with contextlib.suppress(TransferError):
            await self.manager.fail_transfer(out.tid, code, message)
        self.resolve(out, status="failed", error=message, code=code)

    # --- the receiver's answers ------------------------------------------------------

    def on_offer_seen(self, offer: Offer) -> None:
        """The server echoed this end's own offer: it holds the transfer now."""
        out = self.states.get(str(offer.transfer_id))
        if out is not None:
            out.offered = True

    async def on_refusal(self, msg: Message) -> None:
        """An ``error``: if it refuses an offer still on its way, that transfer ends."""
        payload = msg.payload
        assert isinstance(payload, ErrorPayload)
        tid = str(payload.transfer_id) if payload.transfer_id is not None else ""
        out = self.states.get(tid)
        if out is not None and not out.offered:
            with contextlib.suppress(TransferError):
                await self.manager.fail_transfer(out.tid, payload.code, payload.message)
            self.resolve(out, status="refused", error=payload.message, code=payload.code)
            return
        log.info("the server refused a message: %s: %s", payload.code, payload.message)

    async def on_accept(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, Accept)
        out = self.states.get(str(payload.transfer_id))
        if out is None or msg.sender_id == self.host.user:
            return
        await self.take_accept(out, payload.missing)

    async def take_accept(self, out: SendState, missing: list[tuple[int, int]] | None) -> None:
        """The receiver accepted ``out``, lacking ``missing`` (None: every chunk)."""
        tid = out.tid
        await self.manager.accept_transfer(tid)
        info = out.info
        assert info is not None
        total = self.manager.get_transfer(tid).total_chunks
        if missing is None:
            indexes = list(range(total))
            out.resumed_bytes = 0
        else:
            indexes = list(indexes_in(missing))
            await self.manager.sync_progress(tid, indexes)
            out.resumed_bytes = self._bytes_outside(out, indexes)
        out.queue = dict.fromkeys(indexes)
        out.started = time.monotonic()
        if out.resumed_bytes:
            self.host.reporter.note(
                f"{out.peer} already has {out.resumed_bytes:,} bytes of {info.filename}; "
                "sending the rest"
            )
        out.accepted.set()
        out.wake.set()
        await self._cancel_superseded(out)

    async def _cancel_superseded(self, out: SendState) -> None:
        """Older live transfers of the same content to the same receiver, left by an
        earlier run of this sender, are cancelled once the new one is accepted."""
        info = out.info
        assert info is not None
        held = self.host.server_transfers
        for t in list(held.values()):
            if (
                t.transfer_id != out.tid
                and t.sender_id == self.host.user
                and t.receiver_id == out.peer
                and t.sha256 == info.sha256
                and t.status in (Status.PENDING, Status.ACTIVE, Status.PAUSED)
                and t.transfer_id not in self.states
            ):
                reason = f"superseded by {out.tid}"
                ref = TransferRef(transfer_id=t.transfer_id, reason=reason)
                await self.host.send(T.FILE_SHARE_CANCEL, ref)
                held.pop(t.transfer_id, None)

    async def on_reject(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        out = self.states.get(str(payload.transfer_id))
        if out is None:
            return
        with contextlib.suppress(TransferError):
            await self.manager.reject_transfer(out.tid, payload.reason or "")
        why = f": {payload.reason}" if payload.reason else ""
        self.resolve(out, status="rejected", error=f"{out.peer} rejected it{why}")

    async def on_complete(self, msg: Message) -> None:
        """The receiver verified the whole file (the server checked its sha256)."""
        payload = msg.payload
        assert isinstance(payload, Complete)
        out = self.states.get(str(payload.transfer_id))
        if out is None or msg.sender_id == self.host.user:
            return
        await self.completed(out, payload.sha256)

    async def completed(self, out: SendState, sha256: str) -> None:
        try:
            await self.manager.mark_completed(out.tid, sha256)
        except TransferError as exc:
            log.warning("completion of %s not taken: %s", out.tid, exc)
            return
        self.resolve(out, status="completed")

    async def on_stored(self, msg: Message) -> None:
        """Every chunk of a file kept for later is in the server's store."""
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        out = self.states.get(str(payload.transfer_id))
        if out is not None:
            with contextlib.suppress(TransferError):
                await self.manager.store_transfer(out.tid)
            self.resolve(out, status=Status.STORED.value)

    async def on_resume(self, msg: Message) -> None:
        state = await self._resumed(msg)
        if state is not None:
            state.wake.set()

    async def on_chunk_request(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, ChunkRequest)
        tid = str(payload.transfer_id)
        out = self.states.get(tid)
        if out is None:
            self._stashed_requests.setdefault(tid, []).append(payload)
            return
        self._requests.show(out, payload)
        await self._queue_request(out, payload)

    async def _queue_request(self, out: SendState, request: ChunkRequest) -> None:
        indexes = list(indexes_in(request.ranges))
        if request.reason != "bad-checksum":
            # the receiver's whole list of what it lacks (this client's convention)
            with contextlib.suppress(TransferError):
                await self.manager.sync_progress(out.tid, indexes)
            if out.resumed_bytes is None:
                out.resumed_bytes = self._bytes_outside(out, indexes)
        for index in indexes:
            out.queue[index] = None
        out.wake.set()

    def _plain_length(self, out: SendState, index: int) -> int:
        """The file bytes chunk ``index`` carries (its ciphertext has 16 more)."""
        assert out.info is not None
        return chunk_length(index, out.info.file_size, self.manager.chunk_size)

    def _bytes_outside(self, out: SendState, missing: list[int]) -> int:
        info = out.info
        assert info is not None
        size, chunk = info.file_size, self.manager.chunk_size
        return size - sum(chunk_length(i, size, chunk) for i in missing)

    # --- the clock -------------------------------------------------------------------

    def tick(self) -> None:
        for out in self.live():
            if out.offered:
                snapshot = self.manager.get_transfer(out.tid).snapshot()
                self.host.reporter.progress(snapshot, out.transport)
