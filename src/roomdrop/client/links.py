"""Peer links: one WebRTC data channel per remote participant, made when there is
something to send to them or when they offer one, and lost when they leave or the
channel dies.

The sender's end makes the offer (:meth:`Links.ensure`); the other end answers it
(:meth:`Links.on_signal`). A new offer from a peer whose link is down (it restarted)
replaces the old link. Frames arriving on a link go to ``on_frame`` (the receiving
role), and a new link to a peer is announced to ``on_new`` (frames half-read on the
old one are dropped); a link that goes down is reported to ``on_down`` (both roles: the
sender goes on through the relay, the receiver asks again for what was in flight).

aiortc is imported when the first link is made: a relay-only session never loads it.
The page mirrors this module in ``static/links.js``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from roomdrop.client.errors import NotConnected
from roomdrop.client.transfers import Host
from roomdrop.protocol.messages import Message, MessageType, Signal

if TYPE_CHECKING:
    from roomdrop.client.rtc import PeerLink

__all__ = ["Links"]


class Links:
    """This session's peer links, by remote user id."""

    def __init__(
        self,
        host: Host,
        *,
        on_frame: Callable[[str, bytes], Awaitable[None]],
        on_down: Callable[[PeerLink], None],
        on_new: Callable[[str], None],
    ) -> None:
        self.host = host
        self._on_frame = on_frame
        self._on_down = on_down
        self._on_new = on_new
        self._links: dict[str, PeerLink] = {}
        self._ice_servers: list[dict[str, Any]] | None = None

    def get(self, remote: str) -> PeerLink | None:
        return self._links.get(remote)

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
        """``remote`` left the room: its link is closed."""
        link = self._links.pop(remote, None)
        if link is not None:
            await link.close()

    async def close(self) -> None:
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()

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

        link = rtc.PeerLink(
            remote,
            ice_servers=self._ice_servers,
            ice_policy=self.host.settings.ice_policy,
            gather_wait=self.host.settings.ice_gather_wait,
            signal=signal,
            on_frame=self._on_frame,
            on_down=self._on_down,
        )
        self._links[remote] = link
        self._on_new(remote)  # a frame half-read on the old link is not continued
        return link
