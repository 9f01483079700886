"""What the roles of a session share: the bookkeeping of one transfer, its result, and
the session's services a role may use.

* :class:`Result` — how one file went, for the final line of ``send``/``receive``.
* :class:`TransferState` (with :class:`SendState` and :class:`ReceiveState`) — a
  session's own bookkeeping for one transfer, beside the manager's record of it.
* :class:`Role` — what :class:`~roomdrop.client.outgoing.Outgoing` and
  :class:`~roomdrop.client.incoming.Incoming` have in common: their manager, their
  transfers by id, finding a local status, aligning it with the server's, and ending a
  transfer with its result.
* :class:`Host` — what a role may ask of the session it belongs to (the session is the
  only implementation; tests of a role can give it another).
* :func:`adoptable` — which transfer the server holds a restarted sender may take up.

The page mirrors this module in ``static/transfers.js``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from roomdrop.exceptions import TransferError
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.messages import FileShareError, Message, MessageType, TransferRef
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject
from roomdrop.storage import SourceInfo

if TYPE_CHECKING:
    from roomdrop.client.http import ServerApi
    from roomdrop.client.keyring import Keyring
    from roomdrop.client.settings import ClientSettings

__all__ = [
    "DECLINED",
    "ENDED",
    "Host",
    "ReceiveState",
    "Reoffer",
    "Reporter",
    "Result",
    "Role",
    "SendState",
    "TransferState",
    "Transport",
    "adoptable",
]

Transport = Literal["auto", "direct", "p2p", "relay"]
#: Why a receiver rejects an offer its user said no to.
DECLINED = "declined"
#: The statuses a transfer ends in without having arrived.
ENDED = ("cancelled", "failed", "rejected")


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
    """File bytes of the chunks this run sent (sender, re-sends included) or stored
    (receiver); the 16-byte tag of a sealed chunk is not counted."""
    bytes_via: dict[str, int] = field(default_factory=dict)
    """``moved_bytes`` by the path they took: ``direct``, ``p2p`` and ``relay``."""
    saved_path: str | None = None
    error: str | None = None
    error_code: str | None = None
    e2e: bool = False
    """The chunks travelled end-to-end encrypted."""
    safety_number: str | None = None
    """Of the two parties' device keys (end to end only)."""

    @property
    def ok(self) -> bool:
        """It arrived and verified, or (``send --store``) it is all in the server's
        store, to be delivered when its receiver joins."""
        return self.status in (Status.COMPLETED.value, Status.STORED.value)

    @property
    def declined(self) -> bool:
        """The person at this receiver said no to the offer (their choice, not a failure)."""
        return self.status == Status.REJECTED.value and self.error == DECLINED

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
            "e2e": self.e2e,
            "safety_number": self.safety_number,
        }


class Reporter(Protocol):
    """Where a session tells its user what happens (rich bars or JSON lines)."""

    def note(self, text: str) -> None: ...

    def progress(self, snapshot: dict[str, Any], transport: str) -> None: ...

    def finished(self, result: Result) -> None: ...

    def waiting(self, text: str, elapsed: float | None) -> None:
        """``text`` (what is waited for) has been waited for ``elapsed`` seconds so
        far; ``None``: the wait is over."""
        ...


class Reoffer(Exception):
    """The server lost the transfer (it restarted): offer the file again."""


@dataclass(eq=False)
class TransferState:
    """A session's own bookkeeping for one transfer it sends or receives."""

    tid: str
    peer: str
    done: asyncio.Future[Result]
    started: float = field(default_factory=time.monotonic)
    resumed_bytes: int | None = None
    via: dict[str, int] = field(default_factory=lambda: {"direct": 0, "p2p": 0, "relay": 0})
    transport: str = "relay"
    safety_number: str | None = None
    """Of this end and the peer, once the transfer is known to be end to end."""

    def carried_by(self) -> str:
        """The path that carried most of the bytes (the chosen one if none moved yet;
        a tie goes to the first of direct, p2p, relay)."""
        if not any(self.via.values()):
            return self.transport
        return max(self.via, key=lambda path: self.via[path])


@dataclass(eq=False)
class SendState(TransferState):
    info: SourceInfo | None = None
    queue: dict[int, None] = field(default_factory=dict)
    """The chunks still to send, in order (a dict: re-queueing one is idempotent)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    offered: bool = False
    """The server has echoed the offer back (it holds the transfer)."""


@dataclass(eq=False)
class ReceiveState(TransferState):
    last_chunk: float = field(default_factory=time.monotonic)
    last_request: float = 0.0
    last_report: float = 0.0


class Host(Protocol):
    """What a role may ask of its session."""

    user: str
    room: str
    participants: set[str]
    max_transfers: int | None
    """How many transfers this user may have under way at once (``room-state``)."""
    reporter: Reporter
    settings: ClientSettings
    transport: Transport
    keyring: Keyring

    @property
    def server_transfers(self) -> dict[str, TransferObject]:
        """The transfers of the latest ``room-state``, by id."""
        ...

    async def send(self, kind: MessageType, payload: Any) -> None:
        """A control message to the server (raises ``NotConnected``)."""
        ...

    async def send_frame(self, frame: bytes) -> None:
        """A chunk frame through the server's relay (raises ``NotConnected``)."""
        ...

    def online(self) -> bool: ...

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        """Run ``coro`` in the background; closing the session cancels it."""
        ...

    async def wait_for(self, user: str) -> None:
        """Until ``user`` is in the room."""
        ...

    async def wait_for_others(self) -> None:
        """Until someone other than this participant is in the room."""
        ...

    def api(self) -> ServerApi: ...


S = TypeVar("S", bound=TransferState)


class Role(Generic[S]):
    """One direction of a session: its manager and its transfers by id."""

    #: A cancel by the server (not by the other party) keeps the received chunks.
    KEEPS_PART: ClassVar[bool] = False

    def __init__(self, host: Host, manager: FileTransferManager) -> None:
        self.host = host
        self.manager = manager
        self.states: dict[str, S] = {}

    def __contains__(self, tid: object) -> bool:
        return tid in self.states

    def live(self) -> Iterator[S]:
        """The transfers that have not ended yet (a copy: ending one is allowed)."""
        return iter([s for s in self.states.values() if not s.done.done()])

    def future(self) -> asyncio.Future[Result]:
        return asyncio.get_running_loop().create_future()

    def local_status(self, state: TransferState) -> Status | None:
        try:
            return self.manager.get_transfer(state.tid).status
        except TransferError:
            return None

    async def align(self, state: TransferState, server: Status) -> Status | None:
        """Bring a live local record to the server's status after a reconnect: a pause or
        resume sent while this end was away never reaches it (§11.3). Returns the status
        it was changed to, if any."""
        local = self.local_status(state)
        with contextlib.suppress(TransferError):
            if local is Status.PAUSED and server is Status.ACTIVE:
                await self.manager.resume_transfer(state.tid)
                return Status.ACTIVE
            if local is Status.ACTIVE and server is Status.PAUSED:
                await self.manager.pause_transfer(state.tid)
                return Status.PAUSED
        return None

    # --- what either party may do to a transfer -------------------------------------

    async def on_pause(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        state = self.states.get(str(payload.transfer_id))
        if state is None:
            return
        with contextlib.suppress(TransferError):
            await self.manager.pause_transfer(state.tid)
            who = "the server" if msg.sender_id is None else msg.sender_id
            why = f" ({payload.reason})" if payload.reason else ""
            self.host.reporter.note(f"paused by {who}{why}")

    async def on_resume(self, msg: Message) -> None:
        raise NotImplementedError

    async def on_complete(self, msg: Message) -> None:
        raise NotImplementedError

    async def _resumed(self, msg: Message) -> S | None:
        """``file-share-resume``: the local record is active again; the state, if known."""
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        state = self.states.get(str(payload.transfer_id))
        if state is not None:
            with contextlib.suppress(TransferError):
                await self.manager.resume_transfer(state.tid)
        return state

    async def on_cancel(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, TransferRef)
        state = self.states.get(str(payload.transfer_id))
        if state is None:
            return
        reason = payload.reason or "cancelled"
        with contextlib.suppress(TransferError):
            if self.KEEPS_PART and msg.sender_id is None:
                # the server gave up on it (sender gone, inactivity): keep what arrived
                await self.manager.fail_transfer(state.tid, "cancelled", reason)
            else:
                await self.manager.cancel_transfer(state.tid, reason)
        who = "the server" if msg.sender_id is None else msg.sender_id
        self.resolve(state, status="cancelled", error=f"cancelled by {who}: {reason}")

    async def on_file_share_error(self, msg: Message) -> None:
        payload = msg.payload
        assert isinstance(payload, FileShareError)
        state = self.states.get(str(payload.transfer_id))
        if state is None:
            return
        with contextlib.suppress(TransferError):
            await self.manager.fail_transfer(state.tid, payload.code, payload.message)
        self.resolve(state, status="failed", error=payload.message, code=payload.code)

    # --- results ---------------------------------------------------------------------

    def resolve(
        self,
        state: S,
        *,
        status: str,
        error: str | None = None,
        code: str | None = None,
    ) -> Result | None:
        """End ``state`` with ``status``: its result goes to whoever awaits it and to
        the reporter. Ending it twice keeps the first result (returns None)."""
        if state.done.done():
            return None
        try:
            record = self.manager.get_transfer(state.tid)
        except TransferError:
            record = None
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
            e2e=record is not None and record.e2e is not None,
            safety_number=state.safety_number if record is not None and record.e2e else None,
        )
        state.done.set_result(result)
        self.host.reporter.finished(result)
        return result


def adoptable(
    held: Iterable[TransferObject],
    user: str,
    to: str,
    info: SourceInfo,
    chunk_size: int,
    keys: tuple[str, str] | None,
    skip: Collection[str],
) -> str | None:
    """The id of a transfer of ``info``'s content from ``user`` to ``to`` among those the
    server ``held``, under way (active or paused), in ``chunk_size`` chunks and sealed
    with the ``keys`` (sender's, receiver's) a new offer would use (None: in the clear),
    that is not in ``skip``; None if there is none."""
    for t in held:
        sealed = (t.e2e.sender_key, t.e2e.receiver_key) if t.e2e is not None else None
        if (
            t.sender_id == user
            and t.receiver_id == to
            and t.sha256 == info.sha256
            and t.file_size == info.file_size
            and t.chunk_size == chunk_size
            and t.status in (Status.ACTIVE, Status.PAUSED)
            and t.transfer_id not in skip
            and sealed == keys
        ):
            return t.transfer_id
    return None
