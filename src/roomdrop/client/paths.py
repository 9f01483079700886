"""Which path a transfer's chunks take (the sender decides; docs/protocol.md §13):

* ``--transport auto`` (the default) tries the direct connection (:mod:`.direct`) and
  the WebRTC data channel at once, and takes the direct connection if it is up within
  ``ROOMDROP_ICE_TIMEOUT``, else the data channel, else the relay. When the data
  channel opens first while the peer is trying the direct path too (its hints came),
  the direct connection gets :data:`DIRECT_GRACE` more seconds: it is the faster path.
  A direct connection that comes up later takes over from the next chunk
  (:func:`upgrade`).
* ``direct`` and ``p2p`` use only that path; ``relay`` always the relay.

The notes and failures that follow from the choice are the sender's
(:meth:`~.outgoing.Outgoing._choose_transport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from roomdrop.client.direct import DirectLink
from roomdrop.client.links import Links

__all__ = ["DIRECT_GRACE", "LINKS", "Choice", "choose", "upgrade"]

#: Seconds the direct attempt may still take once the data channel is open.
DIRECT_GRACE = 1.0
#: The peer-to-peer paths, as the notes name them.
LINKS = {"direct": "direct connection", "p2p": "data channel"}
#: What ``--transport direct`` and ``p2p`` say when their path does not open, and what
#: they do not fall back to.
_NONE = {"direct": "direct connection", "p2p": "peer-to-peer connection"}
_NOT = {"direct": "the data channel or the relay", "p2p": "the relay"}


@dataclass(frozen=True, slots=True)
class Choice:
    path: str | None
    """``direct``, ``p2p``, ``relay``, or None: nothing opened in time."""
    took: float | None = None
    """Seconds from the start of the chosen link's attempt until it opened."""
    tried: float = 0.0
    """Seconds the peer-to-peer attempts had when nothing opened."""

    def unavailable(self, mode: str, peer: str) -> str:
        """Why ``--transport mode`` (``direct`` or ``p2p``) failed."""
        return (
            f"no {_NONE[mode]} to {peer} after {self.tried:.1f} s "
            f"(--transport {mode} does not fall back to {_NOT[mode]})"
        )


async def _first(events: list[asyncio.Event], timeout: float) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds."""
    if timeout <= 0:
        return
    if not events:
        await asyncio.sleep(timeout)
        return
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waits, return_exceptions=True)


async def choose(links: Links, peer: str, mode: str, timeout: float) -> Choice:
    """The path for a transfer to ``peer`` under ``--transport mode``."""
    if mode == "relay":
        return Choice("relay")
    waiting = time.monotonic()
    direct = links.ensure_direct(peer) if mode in ("auto", "direct") else None
    channel = await links.ensure(peer) if mode in ("auto", "p2p") else None
    deadline = waiting + timeout
    grace: float | None = None
    while True:
        now = time.monotonic()
        if direct is not None and direct.is_open:
            return Choice("direct", direct.took)
        if channel is not None and channel.is_open:
            if direct is None or direct.down.is_set() or not direct.hinted.is_set():
                return Choice("p2p", channel.took)
            grace = grace if grace is not None else now + DIRECT_GRACE
            if now >= grace:
                return Choice("p2p", channel.took)
        if now >= deadline:
            started = [link.started for link in (direct, channel) if link and link.started]
            return Choice(None, tried=now - min(started, default=waiting))
        events = [link.opened for link in (direct, channel) if link is not None]
        if direct is not None:
            events += [direct.down, direct.hinted]
        await _first([e for e in events if not e.is_set()], min(deadline, grace or deadline) - now)


def upgrade(links: Links, peer: str, mode: str, current: str) -> DirectLink | None:
    """The direct connection that should carry the next chunk of a transfer now on
    ``current`` (``auto`` only), if one opened meanwhile. With none under way, an attempt
    starts (:meth:`~.links.Links.ensure_direct`: not within DIRECT_RETRY of a direct
    connection to ``peer`` going down, unless ``peer`` left and came back meanwhile)."""
    if mode != "auto" or current == "direct":
        return None
    link = links.ensure_direct(peer)
    return link if link is not None and link.is_open else None
