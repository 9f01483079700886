"""Peer links: one WebRTC data channel per remote participant, made when there is
something to send to them or when they offer one, and lost when they leave or the
channel dies; and beside it, to a remote CLI, a direct TCP connection
(:mod:`.direct`) when both ends and the server allow it.

The sender's end makes the offer (:meth:`Links.ensure`); the other end answers it
(:meth:`Links.on_signal`). A new offer from a peer whose link is down (it restarted)
replaces the old link. Frames arriving on a link go to ``on_frame`` (the receiving
role), and a new link to a peer is announced to ``on_new`` (frames half-read on the
old one are dropped); a link that goes down is reported to ``on_down`` (both roles: the
sender goes on through the relay, the receiver asks again for what was in flight).

The direct path works the same way: the sender starts it (:meth:`Links.ensure_direct`),
the other end answers the hints (:meth:`Links.on_hints`); fresh hints from a peer whose
attempt is down or already paired with other hints (it restarted) start a new one. A
direct connection that went down is not tried again for :data:`DIRECT_RETRY` seconds
(unless the peer left or joined again meanwhile): the transfer goes on over the data
channel or the relay.

aiortc is imported when the first link is made: a relay-only session never loads it.
The page mirrors this module in ``static/links.js`` (it has no direct path: it ignores
``direct-hints``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from roomdrop.client.direct import DirectLink
from roomdrop.client.errors import LinkDown, NotConnected
from roomdrop.client.transfers import Host
from roomdrop.protocol.frames import DATA_CHANNEL_MAX_MESSAGE, split_frame
from roomdrop.protocol.messages import DirectHints, Message, MessageType, RoomState, Signal

if TYPE_CHECKING:
    from roomdrop.client.rtc import PeerLink

__all__ = ["DIRECT_RETRY", "Links"]

#: Seconds after a direct connection to a peer went down before another is tried.
DIRECT_RETRY = 30.0


class Links:
    """This session's peer links, by remote user id."""

    def __init__(
        self,
        host: Host,
        *,
        on_frame: Callable[[str, bytes, str], Awaitable[None]],
        on_down: Callable[[str], None],
        on_new: Callable[[str], None],
    ) -> None:
        self.host = host
        self._on_frame = on_frame
        self._on_down = on_down
        self._on_new = on_new
        self._links: dict[str, PeerLink] = {}
        self._direct: dict[str, DirectLink] = {}
        self._direct_lost: dict[str, float] = {}
        self._ice_servers: list[dict[str, Any]] | None = None
        self.server_direct = True
        """Whether the server forwards ``direct-hints`` (its ``room-state`` says)."""

    def get(self, remote: str) -> PeerLink | None:
        return self._links.get(remote)

    def on_room_state(self, state: RoomState) -> None:
        self.server_direct = state.direct is not False

    def on_joined(self, remote: str) -> None:
        """``remote`` (re)joined: a new session of it may be reached directly at once."""
        self._direct_lost.pop(remote, None)

    async def send(self, remote: str, path: str, frame: bytes) -> None:
        """``frame`` to ``remote`` over its open ``direct`` connection (one record) or
        data channel (``p2p``, in fragments); LinkDown if there is none."""
        link = self.direct(remote) if path == "direct" else self._links.get(remote)
        if link is None:
            raise LinkDown(f"no {path} link to {remote}")
        if path == "direct":
            await link.send([frame])
        else:
            await link.send(split_frame(frame, DATA_CHANNEL_MAX_MESSAGE))

    # --- the direct path ---------------------------------------------------------------

    def direct(self, remote: str) -> DirectLink | None:
        """The open direct connection to ``remote``, if there is one."""
        link = self._direct.get(remote)
        return link if link is not None and link.is_open else None

    def ensure_direct(self, remote: str) -> DirectLink | None:
        """The attempt at a direct connection to ``remote`` that is not down, or a new
        one whose hints go out once ``remote`` is in the room; None where the direct
        path is off (``--no-direct``, the server, no trusted key of ``remote``, or it
        went down less than DIRECT_RETRY seconds ago)."""
        link = self._direct.get(remote)
        if link is not None and not link.down.is_set():
            return link
        lost = self._direct_lost.get(remote)
        if lost is not None and time.monotonic() - lost < DIRECT_RETRY:
            return None
        link = self._new_direct(remote)
        if link is not None:
            self.host.spawn(self._start_direct(link), f"direct-hints-{remote}")
        return link

    async def on_hints(self, msg: Message) -> None:
        """``direct-hints`` from another participant: an answer to this end's attempt,
        or the peer's own attempt, answered with this end's hints."""
        hints, remote = msg.payload, msg.sender_id
        assert isinstance(hints, DirectHints)
        if remote is None or remote == self.host.user:
            return
        link = self._direct.get(remote)
        if hints.answers is not None:
            if link is not None and hints.answers == link.token:
                link.on_hints(hints)
            return
        if link is not None and not link.down.is_set() and link.peer_token in (None, hints.token):
            link.on_hints(hints)  # both ends started at once: the two attempts pair up
            return
        link = self._new_direct(remote)
        if link is not None:
            link.on_hints(hints)
            try:
                await link.start(answers=hints.token)
            except NotConnected:
                await link.close()

    def _new_direct(self, remote: str) -> DirectLink | None:
        host = self.host
        key = host.keyring.direct_key(remote)
        if not host.settings.direct or not self.server_direct or key is None:
            return None
        old = self._direct.pop(remote, None)
        if old is not None:
            host.spawn(old.close(), f"direct-close-{remote}")

        async def signal(payload: dict[str, Any]) -> None:
            await host.send(MessageType.DIRECT_HINTS, payload)

        async def on_frame(remote: str, frame: bytes) -> None:
            await self._on_frame(remote, frame, "direct")

        link = self._direct[remote] = DirectLink(
            remote,
            me=host.user,
            room=host.room,
            device=host.keyring.device,
            peer_key=key,
            addresses=self._addresses(),
            signal=signal,
            on_frame=on_frame,
            on_down=self._direct_down,
        )
        return link

    def _addresses(self) -> list[str]:
        pinned = self.host.settings.ice_hosts
        if pinned:
            return list(pinned)
        from roomdrop.client import rtc

        return rtc.host_addresses()

    async def _start_direct(self, link: DirectLink) -> None:
        await self.host.wait_for(link.remote)
        try:
            await link.start()
        except NotConnected:
            await link.close()

    def _direct_down(self, link: DirectLink) -> None:
        self._direct_lost[link.remote] = time.monotonic()
        self._on_down(link.remote)

    # --- the data channel --------------------------------------------------------------

    async def ensure(self, remote: str) -> PeerLink:
        """A link to ``remote`` that is not down: the one there is, or a new one whose
        offer goes out once ``remote`` is in the room."""
        link = self._links.get(remote)
        if link is not None and not link.down.is_set():
            return link
        link = await self._new(remote)
        self.host.spawn(self._start(link), f"link-offer-{remote}")
        return link

    async def on_signal(self, msg: Message) -> None:
        """``offer``, ``answer`` or ``ice-candidate`` from another participant."""
        payload = msg.payload
        assert isinstance(payload, Signal)
        remote = msg.sender_id
        if remote is None or remote == self.host.user:
            return
        link = self._links.get(remote)
        if link is None or (msg.type is MessageType.OFFER and link.down.is_set()):
            link = await self._new(remote)
        await link.on_signal(msg.type.value, payload.model_dump())

    async def lose(self, remote: str) -> None:
        """``remote`` left the room: its links are closed."""
        link = self._links.pop(remote, None)
        if link is not None:
            await link.close()
        direct = self._direct.pop(remote, None)
        if direct is not None:
            await direct.close()
        self._direct_lost.pop(remote, None)

    async def close(self) -> None:
        for link in list(self._links.values()):
            await link.close()
        for direct in list(self._direct.values()):
            await direct.close()
        self._links.clear()
        self._direct.clear()

    async def _start(self, link: PeerLink) -> None:
        await self.host.wait_for(link.remote)
        try:
            await link.offer()
        except NotConnected:
            link.down.set()

    async def _new(self, remote: str) -> PeerLink:
        from roomdrop.client import rtc

        if self._ice_servers is None:
            rtc.pin_ice_hosts(self.host.settings.ice_hosts)
            self._ice_servers = await self.host.api().ice_servers()
        old = self._links.pop(remote, None)
        if old is not None:
            self.host.spawn(old.close(), f"link-close-{remote}")

        async def signal(kind: str, payload: dict[str, Any]) -> None:
            await self.host.send(MessageType(kind), payload)

        async def on_frame(remote: str, frame: bytes) -> None:
            await self._on_frame(remote, frame, "p2p")

        link = rtc.PeerLink(
            remote,
            ice_servers=self._ice_servers,
            ice_policy=self.host.settings.ice_policy,
            gather_wait=self.host.settings.ice_gather_wait,
            signal=signal,
            on_frame=on_frame,
            on_down=lambda link: self._on_down(link.remote),
        )
        self._links[remote] = link
        self._on_new(remote)  # a frame half-read on the old link is not continued
        return link
