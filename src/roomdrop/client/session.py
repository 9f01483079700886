"""One participant's connection to one room: it connects, hands every message to the
role it concerns through one table, and ticks.

The roles (docs/architecture.md draws the map; docs/protocol.md §13 says the rules
from the wire's point of view):

* :mod:`.outgoing` — the sender: offers, the pump, choosing and switching transport;
* :mod:`.incoming` — the receiver: offers considered, chunks in, completion;
* :mod:`.links` — peer links (WebRTC data channels, direct TCP connections), made and
  lost;
* :mod:`.catchup` — aligning both roles with ``room-state`` after a reconnect;
* :mod:`.transfers` — what the roles share, and :class:`~.transfers.Host`, the part of
  this session they may use.

A session may be given several servers (the instances of one deployment, sharing their
state); it joins the room through the first that answers, and when that one is lost
reconnects to it or, if it does not answer, to the next (:mod:`.signalling`). Closing a
session (Ctrl-C) pauses its active transfers first, so that running the same command
again resumes them.

The page mirrors this module in ``static/session.js``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from roomdrop.client.catchup import catch_up_incoming, catch_up_outgoing, transfers_of
from roomdrop.client.configdir import config_dir
from roomdrop.client.errors import NotConnected
from roomdrop.client.incoming import Incoming
from roomdrop.client.keyring import Keyring
from roomdrop.client.keys import load_or_create
from roomdrop.client.links import Links
from roomdrop.client.malware import refusal, scanner_for
from roomdrop.client.outgoing import Outgoing
from roomdrop.client.peerkeys import PeerKeys
from roomdrop.client.scans import Scans
from roomdrop.client.settings import ClientSettings, user_of
from roomdrop.client.signalling import Signalling, websocket_url
from roomdrop.client.transfers import Reporter, Result, Role, Transport
from roomdrop.e2e import DeviceKey
from roomdrop.exceptions import RoomdropError, TransferError
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.messages import (
    Message,
    MessageType,
    Offer,
    RoomState,
    TransferRef,
    UserEvent,
)
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject

if TYPE_CHECKING:  # aiortc and httpx are imported when first needed: start-up is faster
    from roomdrop.client.http import ServerApi

__all__ = ["Left", "Reporter", "Result", "Session", "Transport"]

log = logging.getLogger("roomdrop.client")

T = MessageType
#: The client's own managers leave policy to the server.
UNLIMITED = 1 << 62
DISPLAY_EVERY = 0.25


def _unfinished(role: Role[Any]) -> list[Any]:
    """``role.live()`` and the transfers whose waiting a Ctrl-C cancelled: a sender's
    command awaits each transfer's ``done``, so cancelling it cancels that future, but
    the transfer has not ended for that (closing pauses it)."""
    return [s for s in role.states.values() if not s.done.done() or s.done.cancelled()]


@dataclass(frozen=True)
class Left:
    """Where a transfer that had not ended stood when the session stopped."""

    filename: str
    sending: bool
    status: Status
    """This end's record of it."""
    percent: int
    pause_sent: bool
    """Closing sent the server a ``file-share-pause`` for it."""


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
        device: DeviceKey | None = None,
        trust_new_key: bool = False,
    ) -> None:
        """``device``: this end's device key (default: the one kept in the config
        directory, made if there is none: ConfigError if it cannot be used);
        ``trust_new_key``: a peer's changed key is trusted, not refused."""
        self.settings = settings or ClientSettings()
        self.user = user_of(token)
        directory = config_dir(self.settings.config_dir)
        device = device if device is not None else load_or_create(directory)
        self.room = room
        self.reporter = reporter
        self.transport: Transport = transport
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers:
            raise ValueError("no server URL")
        self._token = token
        self._server_api: ServerApi | None = None
        self.keyring = Keyring(
            self.user,
            device,
            PeerKeys(directory),
            server=lambda: self.signalling.name,
            trust_new_key=trust_new_key,
        )
        self.signalling = Signalling(
            [websocket_url(server, room, token, device.public_text) for server in self.servers],
            names=self.servers,
            on_connect=self._on_connect,
            on_message=self._on_message,
            on_frame=self._on_relay_frame,
            on_disconnect=self._on_disconnect,
            reconnect_timeout=self.settings.reconnect_timeout,
            ping_timeout=self.settings.ping_timeout,
        )
        self.participants: set[str] = set()
        self.max_transfers: int | None = None
        self._server_transfers: dict[str, TransferObject] = {}
        self._joined = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._pause_sent: set[str] = set()

        limits: dict[str, Any] = {
            "max_file_size": UNLIMITED,
            "max_transfers_per_user": UNLIMITED,
            "max_transfers_per_room": UNLIMITED,
        }
        self.links = Links(
            self, on_frame=self._on_link_frame, on_down=self._on_link_down, on_new=self._on_new_link
        )
        self.outgoing = Outgoing(self, FileTransferManager(download_dir=None, **limits), self.links)
        self.scanner = scanner_for(self.settings, reporter.note) if download_dir else None
        manager = FileTransferManager(
            download_dir=download_dir,
            content_check=self.keyring.check_content,
            scan=self.scanner,
            **limits,
        )
        self.incoming = Incoming(self, manager, ask) if download_dir is not None else None

    # --- what the roles may use (transfers.Host) -------------------------------------

    @property
    def server_transfers(self) -> dict[str, TransferObject]:
        return self._server_transfers

    async def send(self, kind: MessageType, payload: Any) -> None:
        await self.signalling.send(kind, payload)

    async def send_frame(self, frame: bytes) -> None:
        await self.signalling.send_frame(frame)

    def online(self) -> bool:
        return self.signalling.connected.is_set()

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def wait_for(self, user: str) -> None:
        await self._until(lambda: user in self.participants)

    async def wait_for_others(self) -> None:
        await self._until(lambda: bool(self.participants - {self.user}))

    async def _until(self, joined: Callable[[], bool]) -> None:
        while not joined():  # checked again at each user-joined and room-state
            self._joined.clear()
            await self._joined.wait()

    def api(self) -> ServerApi:
        if self._server_api is None:
            from roomdrop.client.http import ServerApi

            # the server the WebSocket is connected to (the others if it cannot be reached)
            self._server_api = ServerApi(
                self.servers, self._token, preferred=lambda: self.signalling.name
            )
        return self._server_api

    # --- what the command does -------------------------------------------------------

    async def send_files(
        self, paths: list[Path], to: str | Sequence[str], scans: Scans | None = None
    ) -> list[Result]:
        """Send ``paths`` to ``to`` (one receiver, several, or ``["@room"]``), one after
        another; a result for each file and receiver (``scans``: their hashing, begun
        before the session started: :class:`.scans.Scans`)."""
        return await self.outgoing.send_files(paths, to, scans)

    async def receive_files(self, count: int | None = None) -> list[Result]:
        """Take offers until ``count`` transfers have ended (forever if None)."""
        if self.incoming is None:
            raise ValueError("this session has no download directory")
        return await self.incoming.receive_files(count)

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

    async def until_gone(self, work: Awaitable[list[Result]]) -> list[Result]:
        """``work``'s result, unless the connection to the server ends for good first
        (no server reachable for ROOMDROP_RECONNECT_TIMEOUT, or a refusal): then ``work``
        is cancelled and what ended the connection is raised, whatever ``work`` was
        waiting for (a participant to join, an offer, an answer)."""
        runner = self._runner
        assert runner is not None, "start() first"
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, runner}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # the transfers under way end with the connection
                await asyncio.wait({task}, timeout=1.0)
        finally:  # the connection ended, or this was cancelled (Ctrl-C)
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled():
            exc = None if runner.cancelled() else runner.exception()
            raise exc or RoomdropError("the connection to the server ended")
        return task.result()

    async def close(self, *, pause: bool = True) -> None:
        """Leave the room; with ``pause``, active transfers are paused first so that
        running the same command again resumes them."""
        if pause and self.online():
            await self._pause_all()
        for task in [self._ticker, *self._tasks]:
            if task is not None:
                task.cancel()
        await self.signalling.close()
        if self._runner is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._runner, timeout=2.0)
        await self.links.close()
        for role in self._roles():
            await role.manager.close()
        if self._server_api is not None:
            await self._server_api.close()

    def left(self) -> list[Left]:
        """The transfers that have not ended, and where each stands (for a command
        stopped before its close could finish)."""
        out = []
        for role in self._roles():
            for state in _unfinished(role):
                with contextlib.suppress(TransferError):
                    r = role.manager.get_transfer(state.tid)
                    percent = 100 * r.bytes_transferred // r.file_size if r.file_size else 100
                    sent = state.tid in self._pause_sent
                    out.append(Left(r.filename, role is self.outgoing, r.status, percent, sent))
        return out

    def _roles(self) -> list[Role[Any]]:
        return [self.outgoing] if self.incoming is None else [self.outgoing, self.incoming]

    def _on_runner_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return  # closed on purpose
        exc = task.exception()
        assert exc is not None
        for role in self._roles():
            for state in role.live():
                state.done.set_exception(exc)
                state.done.exception()  # the command reports it (until_gone): not lost
        if self.incoming is not None:
            self.incoming.connection_lost(exc)

    async def pause_now(self) -> None:
        """Ask the server to pause every active transfer closing has not paused yet,
        and wait for nothing else (a second Ctrl-C: the command ends at once)."""
        if self.online():
            await self._pause_all(settle=0.0)

    async def _pause_all(self, settle: float = 0.3) -> None:
        paused = False
        for role in self._roles():
            for state in _unfinished(role):
                if state.tid in self._pause_sent:
                    continue
                if role.local_status(state) is Status.ACTIVE:
                    with contextlib.suppress(NotConnected):
                        await self.send(T.FILE_SHARE_PAUSE, TransferRef(transfer_id=state.tid))
                        self._pause_sent.add(state.tid)
                        paused = True
        if paused and settle:
            await asyncio.sleep(settle)  # let the pause reach the server before we leave

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    # --- the connection --------------------------------------------------------------

    async def _on_connect(self, state: RoomState, *, resync: bool = False) -> None:
        """The server's ``room-state``: at every (re)connection, and again on the same
        connection (``resync``) when the server may have lost messages meant for this
        end (§11.11). Either way both roles catch up from it (:mod:`.catchup`)."""
        self.keyring.on_room_state(state)
        self.links.on_room_state(state)
        self.participants = set(state.participants)
        self.max_transfers = state.max_transfers_per_user
        self._joined.set()
        known = transfers_of(state)
        self._server_transfers = known
        if self.signalling.connections > 1 and not resync:
            self.reporter.note(f"reconnected to the server at {self.signalling.name}")
        if self.incoming is not None and (no := refusal(state, self.room, self.scanner)):
            self.incoming.connection_lost(no)  # the receive ends: nothing may arrive here
            return
        await catch_up_outgoing(self.outgoing, known, resync=resync)
        if self.incoming is not None:
            await catch_up_incoming(self.incoming, known)

    async def _on_disconnect(self) -> None:
        self.reporter.note(
            f"lost the connection to the server at {self.signalling.name}; reconnecting"
        )

    async def _on_relay_frame(self, data: bytes) -> None:
        if self.incoming is not None:
            await self.incoming.on_relay_frame(data)

    async def _on_link_frame(self, remote: str, data: bytes, via: str) -> None:
        if self.incoming is not None:
            await self.incoming.on_link_frame(remote, data, via)

    def _on_new_link(self, remote: str) -> None:
        if self.incoming is not None:
            self.incoming.on_new_link(remote)

    def _on_link_down(self, remote: str) -> None:
        self.outgoing.on_link_down(remote)
        if self.incoming is not None:
            self.incoming.on_link_down(remote)

    # --- the dispatch table ----------------------------------------------------------

    async def _on_message(self, msg: Message) -> None:
        handler = self._handlers.get(msg.type)
        if handler is None:
            return
        try:
            await handler(self, msg)
        except NotConnected:
            log.info("could not answer %s: not connected", msg.type.value)

    def _owner(self, msg: Message) -> Role[Any] | None:
        """The role whose transfer ``msg`` is about."""
        tid = str(getattr(msg.payload, "transfer_id", ""))
        if tid in self.outgoing:
            return self.outgoing
        if self.incoming is not None and tid in self.incoming:
            return self.incoming
        return None

    async def _on_signal(self, msg: Message) -> None:
        await self.links.on_signal(msg)

    async def _on_hints(self, msg: Message) -> None:
        await self.links.on_hints(msg)

    async def _on_room_state(self, msg: Message) -> None:
        assert isinstance(msg.payload, RoomState)
        await self._on_connect(msg.payload, resync=True)

    async def _on_user_joined(self, msg: Message) -> None:
        assert isinstance(msg.payload, UserEvent)
        self.keyring.on_joined(msg.payload.user_id, msg.payload.key)
        self.participants.add(msg.payload.user_id)
        self.links.on_joined(msg.payload.user_id)
        self._joined.set()

    async def _on_user_left(self, msg: Message) -> None:
        assert isinstance(msg.payload, UserEvent)
        self.participants.discard(msg.payload.user_id)
        self.keyring.on_left(msg.payload.user_id)
        await self.links.lose(msg.payload.user_id)

    async def _on_refusal(self, msg: Message) -> None:
        await self.outgoing.on_refusal(msg)

    async def _on_offer(self, msg: Message) -> None:
        offer = msg.payload
        assert isinstance(offer, Offer)
        sender = msg.sender_id or ""
        if sender == self.user:
            self.outgoing.on_offer_seen(offer)
        elif offer.receiver_id != self.user:
            return
        elif self.incoming is None:
            reason = f"{self.user} is not receiving files now"
            ref = TransferRef(transfer_id=offer.transfer_id, reason=reason)
            await self.send(T.FILE_SHARE_REJECT, ref)
        else:
            self.incoming.on_offer(offer, sender)

    async def _on_accept(self, msg: Message) -> None:
        await self.outgoing.on_accept(msg)

    async def _on_reject(self, msg: Message) -> None:
        await self.outgoing.on_reject(msg)

    async def _on_chunk_request(self, msg: Message) -> None:
        await self.outgoing.on_chunk_request(msg)

    async def _on_stored(self, msg: Message) -> None:
        await self.outgoing.on_stored(msg)

    async def _on_complete(self, msg: Message) -> None:
        if (owner := self._owner(msg)) is not None:
            await owner.on_complete(msg)

    async def _on_pause(self, msg: Message) -> None:
        if (owner := self._owner(msg)) is not None:
            await owner.on_pause(msg)

    async def _on_resume(self, msg: Message) -> None:
        if (owner := self._owner(msg)) is not None:
            await owner.on_resume(msg)

    async def _on_cancel(self, msg: Message) -> None:
        if (owner := self._owner(msg)) is not None:
            await owner.on_cancel(msg)

    async def _on_file_share_error(self, msg: Message) -> None:
        if (owner := self._owner(msg)) is not None:
            await owner.on_file_share_error(msg)

    _handlers: ClassVar[dict[MessageType, Callable[[Session, Message], Awaitable[None]]]] = {
        T.OFFER: _on_signal,
        T.ANSWER: _on_signal,
        T.ICE_CANDIDATE: _on_signal,
        T.DIRECT_HINTS: _on_hints,
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
        T.FILE_SHARE_STORED: _on_stored,
    }

    # --- the clock -------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(DISPLAY_EVERY)
            self.outgoing.tick()
            if self.incoming is not None:
                await self.incoming.tick(time.monotonic())
