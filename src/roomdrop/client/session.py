"""What a participant does in a room: offer files and send their chunks, accept offers
and take chunks in, over a data channel or through the server's relay, and pick up
where it left off after a pause, a lost connection or a restart of either side.

The rules (docs/protocol.md §13 says them from the wire's point of view):

* **Sender.** Offers one file at a time. When the receiver accepts (with the chunks it
  lacks) the sender sends those chunks, over the data channel if one opens within
  ``ROOMDROP_ICE_TIMEOUT`` (``--transport auto``), else through the relay; if the data
  channel dies mid-transfer it goes on through the relay from the chunks still missing.
  Every chunk request (bad checksum, missing, resume) puts chunks back in its queue.
* **Receiver.** Verifies every chunk (the manager does), asks again for a bad one, and
  asks for everything it lacks after a resume or when nothing has arrived for
  ``ROOMDROP_STALL_TIMEOUT``. It reports its progress to the server every second.
* **Servers.** A session may be given several servers (the instances of one
  deployment, sharing their state); it joins the room through the first that answers,
  and when that one is lost reconnects to it or, if it does not answer, to the next.
* **Restarts.** A transfer the server still holds (``room-state``, with its sha256) is
  taken up again under the same id: a restarted receiver resumes from its part file, a
  restarted sender from the receiver's chunk requests. A transfer the server no longer
  holds (the server restarted) is offered again under a new id; the receiver's
  ``missing`` list makes only the missing chunks travel.
* **Leaving.** Closing a session (Ctrl-C) pauses its active transfers first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import ValidationError

from roomdrop.client.errors import LinkDown, NotConnected
from roomdrop.client.settings import ClientSettings, user_of
from roomdrop.client.signalling import Signalling, websocket_url
from roomdrop.exceptions import (
    BadChecksum,
    IntegrityError,
    ProtocolError,
    RoomdropError,
    StorageError,
    TransferError,
)
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.chunks import chunk_length, indexes_in, ranges_of
from roomdrop.protocol.frames import (
    DATA_CHANNEL_MAX_MESSAGE,
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    Chunk,
    ChunkAssembler,
    decode_frame,
    split_frame,
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
)
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject
from roomdrop.storage import SourceInfo, scan_source

if TYPE_CHECKING:  # aiortc and httpx are imported when first needed: start-up is faster
    from roomdrop.client.http import ServerApi
    from roomdrop.client.rtc import PeerLink

__all__ = ["Reporter", "Result", "Session", "Transport"]

log = logging.getLogger("roomdrop.client")

T = MessageType
Transport = Literal["auto", "p2p", "relay"]
#: The client's own managers leave policy to the server.
UNLIMITED = 1 << 62
REPORT_EVERY = 1.0
DISPLAY_EVERY = 0.25
REQUEST_AGAIN_AFTER = 1.0


@dataclass
class Result:
    """How one file went, for the final line of ``send``/``receive``."""

    transfer_id: str
    filename: str
    status: str
    transport: str
    sha256: str
    file_size: int
    bytes_transferred: int
    resumed_bytes: int
    elapsed_s: float
    peer: str
    moved_bytes: int = 0
    """Chunk bytes this run sent (sender, re-sends included) or stored (receiver)."""
    bytes_via: dict[str, int] = field(default_factory=dict)
    """``moved_bytes`` by the path they took: ``p2p`` and ``relay``."""
    saved_path: str | None = None
    error: str | None = None
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.COMPLETED.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "result",
            "transfer_id": self.transfer_id,
            "filename": self.filename,
            "status": self.status,
            "transport": self.transport,
            "sha256": self.sha256,
            "file_size": self.file_size,
            "bytes_transferred": self.bytes_transferred,
            "resumed_bytes": self.resumed_bytes,
            "elapsed_s": round(self.elapsed_s, 3),
            "peer": self.peer,
            "moved_bytes": self.moved_bytes,
            "bytes_via": self.bytes_via,
            "saved_path": self.saved_path,
            "error": self.error,
            "error_code": self.error_code,
        }


class Reporter(Protocol):
    """Where a session tells its user what happens (rich bars or JSON lines)."""

    def note(self, text: str) -> None: ...

    def progress(self, snapshot: dict[str, Any], transport: str) -> None: ...

    def finished(self, result: Result) -> None: ...


class _Reoffer(Exception):
    """The server lost the transfer (it restarted): offer the file again."""


@dataclass(eq=False)
class _Transfer:
    """A session's own bookkeeping for one transfer it sends or receives."""

    tid: str
    peer: str
    done: asyncio.Future[Result]
    started: float = field(default_factory=time.monotonic)
    resumed_bytes: int | None = None
    via: dict[str, int] = field(default_factory=lambda: {"p2p": 0, "relay": 0})
    transport: str = "relay"

    def carried_by(self) -> str:
        p2p, relay = self.via["p2p"], self.via["relay"]
        if p2p == relay == 0:
            return self.transport
        return "p2p" if p2p >= relay else "relay"


@dataclass(eq=False)
class _Outgoing(_Transfer):
    info: SourceInfo | None = None
    queue: dict[int, None] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    offered: bool = False


@dataclass(eq=False)
class _Incoming(_Transfer):
    last_chunk: float = field(default_factory=time.monotonic)
    last_request: float = 0.0
    last_report: float = 0.0
    completed_sent: bool = False


class Session:
    """One participant's connection to one room, sending and/or receiving."""

    def __init__(
        self,
        *,
        servers: str | Sequence[str],
        room: str,
        token: str,
        reporter: Reporter,
        settings: ClientSettings | None = None,
        download_dir: Path | None = None,
        transport: Transport = "auto",
        ask: Callable[[dict[str, Any]], Awaitable[bool]] | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        self.user = user_of(token)
        self.room = room
        self.reporter = reporter
        self.transport: Transport = transport
        self._ask = ask
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers:
            raise ValueError("no server URL")
        self._token = token
        self._server_api: ServerApi | None = None
        limits: dict[str, Any] = {
            "max_file_size": UNLIMITED,
            "max_transfers_per_user": UNLIMITED,
            "max_transfers_per_room": UNLIMITED,
        }
        self.outgoing = FileTransferManager(download_dir=None, **limits)
        self.incoming = (
            FileTransferManager(download_dir=download_dir, **limits)
            if download_dir is not None
            else None
        )
        self.signalling = Signalling(
            [websocket_url(server, room, token) for server in self.servers],
            names=self.servers,
            on_connect=self._on_connect,
            on_message=self._on_message,
            on_frame=self._on_relay_frame,
            on_disconnect=self._on_disconnect,
            reconnect_timeout=self.settings.reconnect_timeout,
        )
        self.participants: set[str] = set()
        self.server_transfers: dict[str, TransferObject] = {}
        self._links: dict[str, PeerLink] = {}
        self._assemblers: dict[str, ChunkAssembler] = {}
        self._relay_assembler = ChunkAssembler(max_partial=2, max_chunk_size=MAX_CHUNK_SIZE)
        self._sending: dict[str, _Outgoing] = {}
        self._receiving: dict[str, _Incoming] = {}
        self._stashed_requests: dict[str, list[ChunkRequest]] = {}
        # results of received files, or what ended the connection for good
        self._finished: asyncio.Queue[Result | BaseException] = asyncio.Queue()
        self._joined = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ice_servers: list[dict[str, Any]] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and join the room; raises if the server cannot be reached or refuses."""
        self._runner = asyncio.create_task(self.signalling.run(), name="signalling")
        self._runner.add_done_callback(self._on_runner_end)
        joined = asyncio.ensure_future(self.signalling.connected.wait())
        await asyncio.wait({joined, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        if not joined.done():
            joined.cancel()
            self._runner.result()  # raises what ended it
            raise RoomdropError("the connection to the server ended before joining the room")
        self._ticker = asyncio.create_task(self._tick(), name="ticker")
        where = f" at {self.signalling.name}" if len(self.servers) > 1 else ""
        self.reporter.note(f"joined room {self.room} as {self.user}{where}")

    async def close(self, *, pause: bool = True) -> None:
        """Leave the room; with ``pause``, active transfers are paused first so that
        running the same command again resumes them."""
        if pause and self.signalling.connected.is_set():
            await self._pause_all()
        for task in [self._ticker, *self._tasks]:
            if task is not None:
                task.cancel()
        await self.signalling.close()
        if self._runner is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._runner, timeout=2.0)
        for link in list(self._links.values()):
            await link.close()
        await self.outgoing.close()
        if self.incoming is not None:
            await self.incoming.close()
        if self._server_api is not None:
            await self._server_api.close()

    def _on_runner_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return  # closed on purpose
        exc = task.exception()
        assert exc is not None
        for state in [*self._sending.values(), *self._receiving.values()]:
            if not state.done.done():
                state.done.set_exception(exc)
        self._finished.put_nowait(exc)

    async def _pause_all(self) -> None:
        paused: list[str] = []
        for tid in [*self._sending, *self._receiving]:
            manager = self.outgoing if tid in self._sending else self.incoming
            state = self._sending.get(tid) or self._receiving.get(tid)
            if manager is None or state is None or state.done.done():
                continue
            with contextlib.suppress(TransferError):
                if manager.get_transfer(tid).status is Status.ACTIVE:
                    with contextlib.suppress(NotConnected):
                        await self._send(T.FILE_SHARE_PAUSE, TransferRef(transfer_id=tid))
                        paused.append(tid)
        if paused:
            await asyncio.sleep(0.3)  # let the pause reach the server before we leave

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def _send(self, kind: MessageType, payload: Any) -> None:
        await self.signalling.send(kind, payload)

    # --- sending ---------------------------------------------------------------------

    async def send_files(self, paths: list[Path], to: str) -> list[Result]:
        """Send ``paths`` to ``to``, one after another; a result for each."""
        results: list[Result] = []
        for path in paths:
            results.append(await self.send_file(path, to))
        return results

    async def send_file(self, path: Path, to: str) -> Result:
        info = await asyncio.to_thread(scan_source, path)
        if self.transport != "relay":
            await self._ensure_link(to)
        while True:
            await self._wait_for(to)
            adopt = self._adoptable_outgoing(info, to)
            out = _Outgoing(tid=adopt or "", peer=to, done=self._future(), info=info)
            out.transport = self.transport  # "auto" until the path is chosen
            try:
                if adopt is not None:
                    return await self._take_up_outgoing(out)
                return await self._offer(out)
            except _Reoffer:
                self.reporter.note(f"the server lost {info.filename}; offering it again")

    async def _wait_for(self, user: str) -> None:
        if user in self.participants:
            return
        self.reporter.note(f"waiting for {user} to join room {self.room}")
        while user not in self.participants:
            self._joined.clear()
            await self._joined.wait()

    def _adoptable_outgoing(self, info: SourceInfo, to: str) -> str | None:
        for t in self.server_transfers.values():
            if (
                t.sender_id == self.user
                and t.receiver_id == to
                and t.sha256 == info.sha256
                and t.file_size == info.file_size
                and t.chunk_size == self.outgoing.chunk_size
                and t.status in (Status.ACTIVE, Status.PAUSED)
                and t.transfer_id not in self._sending
            ):
                return t.transfer_id
        return None

    async def _offer(self, out: _Outgoing) -> Result:
        info = out.info
        assert info is not None
        record = await self.outgoing.create_offer(
            info.path, self.user, out.peer, self.room, scanned=info
        )
        out.tid = record["transfer_id"]
        self._sending[out.tid] = out
        await self._send(T.FILE_SHARE_OFFER, self.outgoing.offer(out.tid))
        self.reporter.note(
            f"offered {info.filename} ({info.file_size:,} bytes) to {out.peer}; "
            "waiting for an answer"
        )
        return await self._drive(out)

    async def _take_up_outgoing(self, out: _Outgoing) -> Result:
        """Adopt a transfer the server still holds (this sender restarted)."""
        info = out.info
        assert info is not None
        await self.outgoing.create_offer(
            info.path, self.user, out.peer, self.room, transfer_id=out.tid, scanned=info
        )
        self._sending[out.tid] = out
        out.offered = True
        await self.outgoing.accept_transfer(out.tid)
        record = await self._api().transfer(self.room, out.tid)
        status = record.get("status") if record else None
        self.reporter.note(f"taking up {info.filename} again ({status})")
        if status == Status.PAUSED.value:
            await self.outgoing.pause_transfer(out.tid)
            await self._send(T.FILE_SHARE_RESUME, TransferRef(transfer_id=out.tid))
        elif status != Status.ACTIVE.value:  # it ended meanwhile: offer the file anew
            self._sending.pop(out.tid, None)
            with contextlib.suppress(TransferError):
                await self.outgoing.cancel_transfer(out.tid, "ended on the server")
            raise _Reoffer()
        for request in self._stashed_requests.pop(out.tid, []):
            await self._queue_request(out, request)
        out.started = time.monotonic()
        out.accepted.set()
        return await self._drive(out)

    async def _drive(self, out: _Outgoing) -> Result:
        pump = asyncio.create_task(self._pump(out), name=f"pump-{out.tid}")
        try:
            return await out.done
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump

    async def _pump(self, out: _Outgoing) -> None:
        await out.accepted.wait()
        tid = out.tid
        decided = False
        while not out.done.done():
            status = self.outgoing.get_transfer(tid).status
            if not out.queue or status is not Status.ACTIVE or not self._online():
                out.wake.clear()
                await out.wake.wait()
                continue
            if not decided:
                out.transport = await self._choose_transport(out)
                decided = True
                continue  # the world may have changed while ICE was trying
            index = next(iter(out.queue))
            try:
                frame = await self.outgoing.send_chunk(tid, index)
            except StorageError as exc:
                await self._fail_outgoing(out, StorageError.code, str(exc.args[-1]))
                return
            except TransferError:
                continue  # paused meanwhile: wait for the resume
            try:
                if out.transport == "p2p":
                    await self._links[out.peer].send(split_frame(frame, DATA_CHANNEL_MAX_MESSAGE))
                else:
                    await self.signalling.send_frame(frame)
            except (LinkDown, KeyError):
                # try a new data channel (the peer may have restarted), else the relay
                self.reporter.note(f"data channel to {out.peer} lost")
                decided = False
                continue
            except NotConnected:
                # reconnecting: let the reader see the close (nothing above may have
                # yielded to it), then the loop waits for _online()
                await asyncio.sleep(0.05)
                continue
            out.queue.pop(index, None)
            out.via[out.transport] += len(frame) - HEADER_SIZE

    async def _choose_transport(self, out: _Outgoing) -> str:
        if self.transport == "relay":
            return "relay"
        link = await self._ensure_link(out.peer)
        timeout = self.settings.ice_timeout
        if await link.wait_open(timeout):
            return "p2p"
        if self.transport == "p2p":
            await self._fail_outgoing(
                out,
                "p2p-unavailable",
                f"no peer-to-peer connection to {out.peer} within {timeout:g} s "
                "(--transport p2p does not fall back to the relay)",
                pause=True,
            )
            return "p2p"
        self.reporter.note(
            f"no peer-to-peer connection to {out.peer} within {timeout:g} s; "
            "sending through the relay"
        )
        return "relay"

    def _online(self) -> bool:
        return self.signalling.connected.is_set()

    async def _fail_outgoing(
        self, out: _Outgoing, code: str, message: str, *, pause: bool = False
    ) -> None:
        with contextlib.suppress(RoomdropError, NotConnected):
            if pause:
                await self._send(T.FILE_SHARE_PAUSE, TransferRef(transfer_id=out.tid))
            else:
                await self._send(
                    T.FILE_SHARE_ERROR,
                    FileShareError(transfer_id=out.tid, code=code, message=message),
                )
        with contextlib.suppress(TransferError):
            await self.outgoing.fail_transfer(out.tid, code, message)
        self._resolve(out, status="failed", error=message, code=code)

    async def _queue_request(self, out: _Outgoing, request: ChunkRequest) -> None:
        indexes = list(indexes_in(request.ranges))
        if request.reason != "bad-checksum":
            # the receiver's whole list of what it lacks (this client's convention)
            with contextlib.suppress(TransferError):
                await self.outgoing.sync_progress(out.tid, indexes)
            if out.resumed_bytes is None:
                out.resumed_bytes = self._bytes_outside(out, indexes)
        for index in indexes:
            out.queue[index] = None
        out.wake.set()

    def _bytes_outside(self, out: _Outgoing, missing: list[int]) -> int:
        info = out.info
        assert info is not None
        size, chunk = info.file_size, self.outgoing.chunk_size
        return size - sum(chunk_length(i, size, chunk) for i in missing)

    # --- receiving -------------------------------------------------------------------

    async def receive_files(self, count: int | None = None) -> list[Result]:
        """Take offers until ``count`` files have arrived (forever if None)."""
        results: list[Result] = []
        completed = 0
        while count is None or completed < count:
            result = await self._finished.get()
            if isinstance(result, BaseException):
                raise result
            results.append(result)
            completed += result.ok
        return results

    async def _on_offer(self, msg: Message) -> None:
        offer = msg.payload
        assert isinstance(offer, Offer)
        sender = msg.sender_id or ""
        tid = str(offer.transfer_id)
        if sender == self.user:
            out = self._sending.get(tid)
            if out is not None:
                out.offered = True
            return
        if offer.receiver_id != self.user:
            return
        if self.incoming is None:
            await self._send(
                T.FILE_SHARE_REJECT,
                TransferRef(transfer_id=tid, reason=f"{self.user} is not receiving files now"),
            )
            return
        self._spawn(self._consider(offer, sender), f"offer-{tid}")

    async def _consider(self, offer: Offer, sender: str) -> None:
        incoming = self.incoming
        assert incoming is not None
        tid = str(offer.transfer_id)
        await self._supersede(offer, sender)
        try:
            snapshot = await incoming.register_offer(offer, sender, self.room)
        except ProtocolError as exc:
            log.warning("ignoring offer %s: %s", tid, exc)
            return
        state = _Incoming(tid=tid, peer=sender, done=self._future())
        self._receiving[tid] = state
        describe = {**snapshot, "mime_type": offer.mime_type}
        if self._ask is not None and not await self._ask(describe):
            await self._send(T.FILE_SHARE_REJECT, TransferRef(transfer_id=tid, reason="declined"))
            with contextlib.suppress(TransferError):
                await incoming.reject_transfer(tid, "declined")
            self._resolve(state, status="rejected", error="declined")
            return
        await self._accept(state)

    async def _supersede(self, offer: Offer, sender: str) -> None:
        """A new offer of content this end is already receiving from the same sender
        (the sender restarted, or the server did) replaces the old transfer; the old
        one's part file stays, for the new one to resume from."""
        incoming = self.incoming
        assert incoming is not None
        for record in incoming.records():
            if (
                record.live
                and record.transfer_id != str(offer.transfer_id)  # this offer, seen again
                and record.sender_id == sender
                and (record.sha256, record.file_size, record.chunk_size)
                == (offer.sha256, offer.file_size, offer.chunk_size)
            ):
                reason = f"superseded by {offer.transfer_id}"
                await incoming.fail_transfer(record.transfer_id, "superseded", reason)
                old = self._receiving.pop(record.transfer_id, None)
                if old is not None and not old.done.done():
                    old.done.cancel()

    async def _accept(self, state: _Incoming) -> None:
        incoming = self.incoming
        assert incoming is not None
        tid = state.tid
        try:
            await incoming.accept_transfer(tid)
        except StorageError as exc:
            message = str(exc.args[-1])
            await self._send(
                T.FILE_SHARE_ERROR,
                FileShareError(transfer_id=tid, code=StorageError.code, message=message),
            )
            self._resolve(state, status="failed", error=message, code=StorageError.code)
            return
        record = incoming.get_transfer(tid)
        missing = await incoming.missing_chunks(tid)
        state.resumed_bytes = record.bytes_transferred
        state.started = state.last_chunk = time.monotonic()
        ranges = ranges_of(missing) if len(missing) < record.total_chunks else None
        await self._send(T.FILE_SHARE_ACCEPT, Accept(transfer_id=tid, missing=ranges))
        if state.resumed_bytes:
            self.reporter.note(
                f"resuming {record.filename}: {state.resumed_bytes:,} of "
                f"{record.file_size:,} bytes already here"
            )
        if record.status is Status.COMPLETED:
            await self._announce_complete(state)

    async def _take_up_incoming(self, t: TransferObject) -> None:
        """Adopt a transfer the server still holds (this receiver restarted)."""
        incoming = self.incoming
        assert incoming is not None and t.sha256 is not None
        offer = _offer_of(t, self.user)
        tid = t.transfer_id
        await incoming.register_offer(offer, t.sender_id, self.room)
        state = _Incoming(tid=tid, peer=t.sender_id, done=self._future())
        try:
            await incoming.accept_transfer(tid)
        except StorageError as exc:
            self._receiving[tid] = state
            self._resolve(state, status="failed", error=str(exc.args[-1]), code="storage-error")
            return
        # known from here on: a resume that arrives now asks for what the part file lacks
        self._receiving[tid] = state
        record = incoming.get_transfer(tid)
        state.resumed_bytes = record.bytes_transferred
        self.reporter.note(
            f"taking up {record.filename} again: {record.bytes_transferred:,} of "
            f"{record.file_size:,} bytes already here"
        )
        if record.status is Status.COMPLETED:
            await self._announce_complete(state)
            return
        current = await self._api().transfer(self.room, tid)
        status = current.get("status") if current else None
        if status == Status.PAUSED.value:
            await incoming.pause_transfer(tid)
            await self._send(T.FILE_SHARE_RESUME, TransferRef(transfer_id=tid))
        elif status == Status.ACTIVE.value:
            await self._request_missing(state, "resume")

    async def _request_missing(self, state: _Incoming, reason: str) -> None:
        """Ask the sender for every chunk this end still lacks. A resume announced twice
        (the server's automatic resume racing this end's own take-up) asks once."""
        incoming = self.incoming
        assert incoming is not None
        now = time.monotonic()
        if reason == "resume" and now - state.last_request < REQUEST_AGAIN_AFTER:
            return
        if self._local_status(state) is not Status.ACTIVE:
            return  # not accepted here yet (its missing list would be everything)
        missing = await incoming.missing_chunks(state.tid)
        state.last_request = now
        if not missing:
            return
        request = ChunkRequest(
            transfer_id=state.tid,
            ranges=ranges_of(missing),
            reason=reason,
        )
        with contextlib.suppress(NotConnected):
            await self._send(T.FILE_SHARE_CHUNK_REQUEST, request)

    async def _on_relay_frame(self, data: bytes) -> None:
        await self._on_frame(data, self._relay_assembler, "relay", None)

    async def _on_link_frame(self, remote: str, data: bytes) -> None:
        assembler = self._assemblers.setdefault(
            remote, ChunkAssembler(max_partial=4, max_chunk_size=MAX_CHUNK_SIZE)
        )
        await self._on_frame(data, assembler, "p2p", remote)

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
        state = self._receiving.get(chunk.transfer_id)
        incoming = self.incoming
        if state is None or incoming is None or state.done.done():
            return
        if remote is not None and remote != state.peer:
            log.warning("dropping chunk of %s from %s, not its sender", state.tid, remote)
            return
        tid, index = state.tid, chunk.chunk_index
        try:
            stored = await incoming.receive(chunk)
        except BadChecksum:
            self.reporter.note(f"chunk {index} failed its sha256 check; asking for it again")
            request = ChunkRequest(
                transfer_id=tid,
                ranges=[(index, index + 1)],
                reason="bad-checksum",
            )
            with contextlib.suppress(NotConnected):
                await self._send(T.FILE_SHARE_CHUNK_REQUEST, request)
            return
        except (IntegrityError, StorageError) as exc:
            message = str(exc.args[-1])
            with contextlib.suppress(NotConnected):
                await self._send(
                    T.FILE_SHARE_ERROR,
                    FileShareError(transfer_id=tid, code=exc.code, message=message),
                )
            self._resolve(state, status="failed", error=message, code=exc.code)
            return
        except TransferError as exc:
            log.debug("chunk %d of %s not taken: %s", index, tid, exc)
            return
        state.last_chunk = time.monotonic()
        if stored:
            state.via[via] += len(chunk.data)
            state.transport = via
            if incoming.get_transfer(tid).status is Status.COMPLETED:
                await self._announce_complete(state)

    async def _announce_complete(self, state: _Incoming) -> None:
        incoming = self.incoming
        assert incoming is not None
        record = incoming.get_transfer(state.tid)
        try:
            await self._send(
                T.FILE_SHARE_COMPLETE,
                Complete(transfer_id=state.tid, sha256=record.sha256),
            )
        except NotConnected:
            return  # sent again once the server is back (_on_connect)
        state.completed_sent = True

    # --- messages from the server ----------------------------------------------------

    async def _on_connect(self, state: RoomState, *, resync: bool = False) -> None:
        """The server's ``room-state``: at every (re)connection, and again on the same
        connection (``resync``) when the server may have lost messages meant for this
        end (§11.11). Either way this end catches up from it: transfers the server
        ended, paused or resumed meanwhile, offers it missed, its participants."""
        self.participants = set(state.participants)
        self._joined.set()
        known: dict[str, TransferObject] = {}
        for raw in state.transfers:
            try:
                t = TransferObject.model_validate(raw)
            except ValidationError:
                continue
            known[t.transfer_id] = t
        self.server_transfers = known
        if self.signalling.connections > 1 and not resync:
            self.reporter.note(f"reconnected to the server at {self.signalling.name}")
        for out in list(self._sending.values()):
            if out.done.done():
                continue
            held = known.get(out.tid)
            if held is None and resync and not out.offered:
                continue  # the offer was on its way when the state was taken: wait for it
            if held is None:
                self._sending.pop(out.tid, None)
                out.done.set_exception(_Reoffer())
            elif held.status.value in ("cancelled", "failed", "rejected"):
                self._resolve(out, status=held.status.value, error=held.error, code=held.error_code)
            elif held.status is Status.COMPLETED:
                # the receiver verified it while this end was away (or the message saying
                # so was lost): the server took its file-share-complete, with the offer's
                # sha256
                try:
                    await self.outgoing.mark_completed(out.tid, held.sha256 or "")
                except TransferError as exc:
                    log.warning("completion of %s not taken: %s", out.tid, exc)
                else:
                    self._resolve(out, status="completed")
            else:
                if self._local_status(out) is Status.PENDING and held.status in (
                    Status.ACTIVE,
                    Status.PAUSED,
                ):
                    # accepted while this end was away (or the accept was lost): which
                    # chunks the receiver lacks is not known here, so all are queued (it
                    # drops those it holds)
                    await self._take_accept(out, None)
                await self._align(self.outgoing, out, held.status)
            out.wake.set()
        for inc in list(self._receiving.values()):
            if inc.done.done():
                continue
            held = known.get(inc.tid)
            if held is None:
                # the server restarted: the sender offers again, and the part file stays
                self._receiving.pop(inc.tid, None)
                with contextlib.suppress(TransferError):
                    assert self.incoming is not None
                    await self.incoming.fail_transfer(
                        inc.tid, "unknown-transfer", "the server no longer knows it"
                    )
                inc.done.cancel()
            elif held.status is Status.COMPLETED:
                self._resolve_completed(inc)
            elif held.status.value in ("cancelled", "failed", "rejected"):
                # it ended while this end was away (or the message saying so was lost):
                # ended here too, keeping the verified chunks of the part file
                status, code = held.status.value, held.error_code or held.status.value
                with contextlib.suppress(TransferError):
                    assert self.incoming is not None
                    await self.incoming.fail_transfer(inc.tid, code, held.error or status)
                self._resolve(inc, status=status, error=held.error, code=held.error_code)
            elif not inc.completed_sent and self._local_status(inc) is Status.COMPLETED:
                await self._announce_complete(inc)
            else:
                assert self.incoming is not None
                if await self._align(self.incoming, inc, held.status) is Status.ACTIVE:
                    await self._request_missing(inc, "resume")
        if self.incoming is not None:
            for t in known.values():
                if t.receiver_id != self.user or t.transfer_id in self._receiving:
                    continue
                if t.sha256 is None:
                    continue
                if t.status in (Status.ACTIVE, Status.PAUSED):
                    self._spawn(self._take_up_incoming(t), f"take-up-{t.transfer_id}")
                elif t.status is Status.PENDING:
                    offer = _offer_of(t, self.user)
                    self._spawn(self._consider(offer, t.sender_id), f"offer-{t.transfer_id}")

    async def _align(
        self, manager: FileTransferManager, state: _Transfer, server: Status
    ) -> Status | None:
        """Bring a live local record to the server's status after a reconnect: a pause or
        resume sent while this end was away never reaches it (§11.3). Returns the status
        it was changed to, if any."""
        local = self._local_status(state)
        with contextlib.suppress(TransferError):
            if local is Status.PAUSED and server is Status.ACTIVE:
                await manager.resume_transfer(state.tid)
                return Status.ACTIVE
            if local is Status.ACTIVE and server is Status.PAUSED:
                await manager.pause_transfer(state.tid)
                return Status.PAUSED
        return None

    async def _on_disconnect(self) -> None:
        self.reporter.note(
            f"lost the connection to the server at {self.signalling.name}; reconnecting"
        )

    def _local_status(self, state: _Transfer) -> Status | None:
        manager = self.outgoing if isinstance(state, _Outgoing) else self.incoming
        if manager is None:
            return None
        try:
            return manager.get_transfer(state.tid).status
        except TransferError:
            return None

    async def _on_message(self, msg: Message) -> None:
        handler = self._handlers.get(msg.type)
        if handler is None:
            return
        try:
            await handler(self, msg)
        except NotConnected:
            log.info("could not answer %s: not connected", msg.type.value)

    async def _on_signal(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, Signal)
        remote = msg.sender_id
        if remote is None or remote == self.user:
            return
        link = self._links.get(remote)
        if link is None or (msg.type is T.OFFER and link.down.is_set()):
            link = await self._new_link(remote)
        await link.on_signal(msg.type.value, payload.model_dump())

    async def _on_room_state(self, msg: Message) -> None:
        assert isinstance(msg.payload, RoomState)
        await self._on_connect(msg.payload, resync=True)

    async def _on_user_joined(self, msg: Message) -> None:
        assert isinstance(msg.payload, UserEvent)
        self.participants.add(msg.payload.user_id)
        self._joined.set()

    async def _on_user_left(self, msg: Message) -> None:
        assert isinstance(msg.payload, UserEvent)
        user = msg.payload.user_id
        self.participants.discard(user)
        link = self._links.pop(user, None)
        if link is not None:
            await link.close()

    async def _on_refusal(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, ErrorPayload)
        tid = str(payload.transfer_id) if payload.transfer_id is not None else None
        out = self._sending.get(tid or "")
        if out is not None and not out.offered:
            with contextlib.suppress(TransferError):
                await self.outgoing.fail_transfer(out.tid, payload.code, payload.message)
            self._resolve(out, status="refused", error=payload.message, code=payload.code)
            return
        log.info("the server refused a message: %s: %s", payload.code, payload.message)

    async def _on_accept(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, Accept)
        out = self._sending.get(str(payload.transfer_id))
        if out is None or msg.sender_id == self.user:
            return
        await self._take_accept(out, payload.missing)

    async def _take_accept(self, out: _Outgoing, missing: list[tuple[int, int]] | None) -> None:
        """The receiver accepted ``out``, lacking ``missing`` (None: every chunk)."""
        tid = out.tid
        await self.outgoing.accept_transfer(tid)
        info = out.info
        assert info is not None
        total = self.outgoing.get_transfer(tid).total_chunks
        if missing is None:
            indexes = list(range(total))
            out.resumed_bytes = 0
        else:
            indexes = list(indexes_in(missing))
            await self.outgoing.sync_progress(tid, indexes)
            out.resumed_bytes = self._bytes_outside(out, indexes)
        out.queue = dict.fromkeys(indexes)
        out.started = time.monotonic()
        if out.resumed_bytes:
            self.reporter.note(
                f"{out.peer} already has {out.resumed_bytes:,} bytes of {info.filename}; "
                "sending the rest"
            )
        out.accepted.set()
        out.wake.set()
        await self._cancel_superseded(out)

    async def _cancel_superseded(self, out: _Outgoing) -> None:
        """Older live transfers of the same content to the same receiver, left by an
        earlier run of this sender, are cancelled once the new one is accepted."""
        info = out.info
        assert info is not None
        for t in list(self.server_transfers.values()):
            if (
                t.transfer_id != out.tid
                and t.sender_id == self.user
                and t.receiver_id == out.peer
                and t.sha256 == info.sha256
                and t.status in (Status.PENDING, Status.ACTIVE, Status.PAUSED)
                and t.transfer_id not in self._sending
            ):
                reason = f"superseded by {out.tid}"
                ref = TransferRef(transfer_id=t.transfer_id, reason=reason)
                await self._send(T.FILE_SHARE_CANCEL, ref)
                self.server_transfers.pop(t.transfer_id, None)

    async def _on_reject(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        out = self._sending.get(str(payload.transfer_id))
        if out is None:
            return
        with contextlib.suppress(TransferError):
            await self.outgoing.reject_transfer(out.tid, payload.reason or "")
        why = f": {payload.reason}" if payload.reason else ""
        self._resolve(out, status="rejected", error=f"{out.peer} rejected it{why}")

    async def _on_complete(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, Complete)
        tid = str(payload.transfer_id)
        out = self._sending.get(tid)
        if out is not None:
            if msg.sender_id == self.user:
                return
            try:
                await self.outgoing.mark_completed(tid, payload.sha256)
            except TransferError as exc:
                log.warning("completion of %s not taken: %s", tid, exc)
                return
            self._resolve(out, status="completed")
            return
        inc = self._receiving.get(tid)
        if inc is not None and msg.sender_id == self.user:
            self._resolve_completed(inc)

    def _resolve_completed(self, inc: _Incoming) -> None:
        if self._local_status(inc) is Status.COMPLETED:
            self._resolve(inc, status="completed")

    async def _on_pause(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        found = self._find(str(payload.transfer_id))
        if found is None:
            return
        tid, manager, _ = found
        with contextlib.suppress(TransferError):
            await manager.pause_transfer(tid)
            who = "the server" if msg.sender_id is None else msg.sender_id
            why = f" ({payload.reason})" if payload.reason else ""
            self.reporter.note(f"paused by {who}{why}")

    async def _on_resume(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        found = self._find(str(payload.transfer_id))
        if found is None:
            return
        tid, manager, state = found
        with contextlib.suppress(TransferError):
            await manager.resume_transfer(tid)
        if isinstance(state, _Incoming):
            state.last_chunk = time.monotonic()
            await self._request_missing(state, "resume")
        elif isinstance(state, _Outgoing):
            state.wake.set()

    async def _on_cancel(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        found = self._find(str(payload.transfer_id))
        if found is None:
            return
        tid, manager, state = found
        reason = payload.reason or "cancelled"
        with contextlib.suppress(TransferError):
            if manager is self.incoming and msg.sender_id is None:
                # the server gave up on it (sender gone, inactivity): keep what arrived
                await manager.fail_transfer(tid, "cancelled", reason)
            else:
                await manager.cancel_transfer(tid, reason)
        who = "the server" if msg.sender_id is None else msg.sender_id
        self._resolve(state, status="cancelled", error=f"cancelled by {who}: {reason}")

    async def _on_file_share_error(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, FileShareError)
        found = self._find(str(payload.transfer_id))
        if found is None:
            return
        tid, manager, state = found
        with contextlib.suppress(TransferError):
            await manager.fail_transfer(tid, payload.code, payload.message)
        self._resolve(state, status="failed", error=payload.message, code=payload.code)

    async def _on_chunk_request(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, ChunkRequest)
        tid = str(payload.transfer_id)
        out = self._sending.get(tid)
        if out is None:
            self._stashed_requests.setdefault(tid, []).append(payload)
            return
        count = sum(end - start for start, end in payload.ranges)
        self.reporter.note(f"{out.peer} asks for {count} chunk(s) ({payload.reason})")
        await self._queue_request(out, payload)

    def _find(self, tid: str) -> tuple[str, FileTransferManager, _Outgoing | _Incoming] | None:
        """The transfer ``tid`` this session sends or receives, with its manager."""
        if tid in self._sending:
            return tid, self.outgoing, self._sending[tid]
        if tid in self._receiving and self.incoming is not None:
            return tid, self.incoming, self._receiving[tid]
        return None

    _handlers: ClassVar[dict[MessageType, Callable[[Session, Message], Awaitable[None]]]] = {
        T.OFFER: _on_signal,
        T.ANSWER: _on_signal,
        T.ICE_CANDIDATE: _on_signal,
        T.ROOM_STATE: _on_room_state,  # the first of a connection goes to _on_connect
        T.USER_JOINED: _on_user_joined,
        T.USER_LEFT: _on_user_left,
        T.ERROR: _on_refusal,
        T.FILE_SHARE_OFFER: _on_offer,
        T.FILE_SHARE_ACCEPT: _on_accept,
        T.FILE_SHARE_REJECT: _on_reject,
        T.FILE_SHARE_COMPLETE: _on_complete,
        T.FILE_SHARE_PAUSE: _on_pause,
        T.FILE_SHARE_RESUME: _on_resume,
        T.FILE_SHARE_CANCEL: _on_cancel,
        T.FILE_SHARE_ERROR: _on_file_share_error,
        T.FILE_SHARE_CHUNK_REQUEST: _on_chunk_request,
    }

    # --- links -----------------------------------------------------------------------

    def _api(self) -> ServerApi:
        if self._server_api is None:
            from roomdrop.client.http import ServerApi

            # the server the WebSocket is connected to (the others if it cannot be reached)
            self._server_api = ServerApi(
                self.servers, self._token, preferred=lambda: self.signalling.name
            )
        return self._server_api

    async def _ensure_link(self, remote: str) -> PeerLink:
        link = self._links.get(remote)
        if link is not None and not link.down.is_set():
            return link
        link = await self._new_link(remote)
        self._spawn(self._start_link(link), f"link-offer-{remote}")
        return link

    async def _start_link(self, link: PeerLink) -> None:
        await self._wait_for(link.remote)
        try:
            await link.offer()
        except NotConnected:
            link.down.set()

    async def _new_link(self, remote: str) -> PeerLink:
        from roomdrop.client import rtc

        if self._ice_servers is None:
            rtc.pin_ice_hosts(self.settings.ice_hosts)
            self._ice_servers = await self._api().ice_servers()
        old = self._links.pop(remote, None)
        if old is not None:
            self._spawn(old.close(), f"link-close-{remote}")

        async def signal(kind: str, payload: dict[str, Any]) -> None:
            await self._send(MessageType(kind), payload)

        link = rtc.PeerLink(
            remote,
            ice_servers=self._ice_servers,
            ice_policy=self.settings.ice_policy,
            signal=signal,
            on_frame=self._on_link_frame,
            on_down=self._on_link_down,
        )
        self._links[remote] = link
        self._assemblers.pop(remote, None)
        return link

    def _on_link_down(self, link: PeerLink) -> None:
        for out in self._sending.values():
            if out.peer == link.remote:
                out.wake.set()
        for inc in self._receiving.values():
            if inc.peer == link.remote and not inc.done.done():
                # what was in flight on the channel is lost: ask for it (via the relay)
                self._spawn(self._request_missing(inc, "missing"), f"request-{inc.tid}")

    # --- the clock -------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(DISPLAY_EVERY)
            now = time.monotonic()
            for out in list(self._sending.values()):
                if not out.done.done() and out.offered:
                    snapshot = self.outgoing.get_transfer(out.tid).snapshot()
                    self.reporter.progress(snapshot, out.transport)
            for inc in list(self._receiving.values()):
                if inc.done.done() or self.incoming is None:
                    continue
                record = self.incoming.get_transfer(inc.tid)
                if record.status is not Status.ACTIVE:
                    continue
                self.reporter.progress(record.snapshot(), inc.transport)
                if now - inc.last_report >= REPORT_EVERY and self._online():
                    inc.last_report = now
                    with contextlib.suppress(NotConnected):
                        await self._send(
                            T.FILE_SHARE_PROGRESS,
                            Progress(
                                transfer_id=inc.tid,
                                chunks_sent=record.chunks_sent,
                                bytes_transferred=record.bytes_transferred,
                                progress_percent=record.progress_percent,
                                status=record.status,
                            ),
                        )
                stall = self.settings.stall_timeout
                if (
                    now - inc.last_chunk > stall
                    and now - inc.last_request > stall
                    and self._online()
                ):
                    await self._request_missing(inc, "missing")

    # --- results ---------------------------------------------------------------------

    def _future(self) -> asyncio.Future[Result]:
        return asyncio.get_running_loop().create_future()

    def _resolve(
        self,
        state: _Transfer,
        *,
        status: str,
        error: str | None = None,
        code: str | None = None,
    ) -> None:
        if state.done.done():
            return
        manager = self.outgoing if isinstance(state, _Outgoing) else self.incoming
        record = manager.get_transfer(state.tid) if manager is not None else None
        result = Result(
            transfer_id=state.tid,
            filename=record.filename if record else "",
            status=status,
            transport=state.carried_by(),
            sha256=record.sha256 if record else "",
            file_size=record.file_size if record else 0,
            bytes_transferred=record.bytes_transferred if record else 0,
            resumed_bytes=state.resumed_bytes or 0,
            elapsed_s=time.monotonic() - state.started,
            peer=state.peer,
            moved_bytes=sum(state.via.values()),
            bytes_via=dict(state.via),
            saved_path=record.saved_path if record else None,
            error=error,
            error_code=code,
        )
        state.done.set_result(result)
        self.reporter.finished(result)
        if isinstance(state, _Incoming):
            self._finished.put_nowait(result)


def _offer_of(t: TransferObject, receiver: str) -> Offer:
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
    )
