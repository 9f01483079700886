"""WebRTC data channels to other participants (aiortc).

One :class:`PeerLink` per remote user: an ``RTCPeerConnection`` with one reliable,
ordered data channel labelled ``roomdrop`` that carries binary frames (docs/protocol.md
§3.3, each at most 65,536 bytes). The side with something to send makes the offer; the
SDP goes through the server's WebSocket as ``offer``/``answer`` signalling. aiortc puts
every candidate in the SDP once gathering is done, so no ``ice-candidate`` messages are
sent; any that arrive (from a trickling peer, e.g. a browser) are added.

The only module that imports ``aiortc`` and ``aioice``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from roomdrop.client.errors import LinkDown

__all__ = ["LABEL", "PeerLink", "pin_ice_hosts"]

log = logging.getLogger("roomdrop.client")

LABEL = "roomdrop"
#: The sender waits when this much is queued in the channel, until it drains to LOW.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
#: A channel that takes nothing from its queue for this long counts as dead.
DRAIN_TIMEOUT = 5.0
#: Frames received but not yet handled; aiortc cannot be slowed down from here, and
#: handling a frame (hash + write) is far faster than aiortc delivers one.
INBOX = 1024

Signal = Callable[[str, dict[str, Any]], Awaitable[None]]
FrameHandler = Callable[[str, bytes], Awaitable[None]]


def pin_ice_hosts(hosts: Iterable[str]) -> None:
    """Gather ICE host candidates only on ``hosts`` (``ROOMDROP_ICE_HOSTS``).

    aioice offers every address of the machine except loopback and has no option to
    choose; this replaces its address lookup for the whole process. An empty list
    leaves aioice's own behaviour.
    """
    chosen = list(hosts)
    if not chosen:
        return

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [h for h in chosen if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]

    aioice.ice.get_host_addresses = addresses


def _configuration(ice_servers: list[dict[str, Any]], policy: str) -> RTCConfiguration:
    servers = [
        RTCIceServer(
            urls=server["urls"],
            username=server.get("username"),
            credential=server.get("credential"),
        )
        for server in ice_servers
    ]
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy(policy))


class PeerLink:
    """The data channel to one remote participant."""

    def __init__(
        self,
        remote: str,
        *,
        ice_servers: list[dict[str, Any]],
        ice_policy: str = "all",
        signal: Signal,
        on_frame: FrameHandler,
        on_down: Callable[[PeerLink], None] | None = None,
    ) -> None:
        self.remote = remote
        self._ice_servers = ice_servers
        self._ice_policy = ice_policy
        self._signal = signal
        self._on_frame = on_frame
        self._on_down = on_down
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self.opened = asyncio.Event()
        self.down = asyncio.Event()
        self._drained = asyncio.Event()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue(INBOX)
        self._reader = asyncio.create_task(self._read(), name=f"link-{remote}")

    @property
    def is_open(self) -> bool:
        return self.opened.is_set() and not self.down.is_set()

    # --- setting up ------------------------------------------------------------------

    async def offer(self) -> None:
        """Start the connection from this side (the side that will send)."""
        pc = self._new_connection()
        self._watch(pc.createDataChannel(LABEL, ordered=True))
        await pc.setLocalDescription(await pc.createOffer())
        await self._signal("offer", self._description(pc))

    async def on_signal(self, kind: str, payload: dict[str, Any]) -> None:
        """Handle ``offer``, ``answer`` or ``ice-candidate`` from the remote user."""
        if kind == "offer":
            if self._pc is not None:  # the remote side started over
                await self._close_connection()
                self.opened.clear()
                self.down.clear()
            pc = self._new_connection()
            await pc.setRemoteDescription(RTCSessionDescription(payload["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self._signal("answer", self._description(pc))
        elif kind == "answer" and self._pc is not None:
            await self._pc.setRemoteDescription(RTCSessionDescription(payload["sdp"], "answer"))
        elif kind == "ice-candidate" and self._pc is not None:
            await self._add_candidate(payload)

    async def wait_open(self, timeout: float) -> bool:
        """True once the channel is open; False if it is not within ``timeout``."""
        if self.is_open:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.opened.wait()
        return self.is_open

    def _new_connection(self) -> RTCPeerConnection:
        pc = self._pc = RTCPeerConnection(_configuration(self._ice_servers, self._ice_policy))

        @pc.on("datachannel")
        def _on_channel(channel: RTCDataChannel) -> None:
            if channel.label == LABEL:
                self._watch(channel)

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            log.debug("connection to %s is %s", self.remote, pc.connectionState)
            if pc.connectionState in ("failed", "closed") and pc is self._pc:
                self._mark_down()

        return pc

    def _watch(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.bufferedAmountLowThreshold = LOW_WATER

        def _open() -> None:
            log.debug("data channel to %s is open", self.remote)
            self.opened.set()

        if channel.readyState == "open":
            _open()
        channel.on("open", _open)
        channel.on("close", lambda: self._mark_down() if channel is self._channel else None)
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("message", self._inbox_put)

    def _inbox_put(self, message: bytes | str) -> None:
        if isinstance(message, str):
            log.warning("ignoring a text message on the data channel from %s", self.remote)
            return
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            # Only a peer sending far faster than we can write gets here; the chunk is
            # dropped and will be asked for again.
            log.warning("dropping a frame from %s: %d are waiting", self.remote, INBOX)

    async def _read(self) -> None:
        while (message := await self._inbox.get()) is not None:
            try:
                await self._on_frame(self.remote, message)
            except Exception:
                log.exception("handling a frame from %s failed", self.remote)

    async def _add_candidate(self, payload: dict[str, Any]) -> None:
        line = payload.get("candidate")
        if not isinstance(line, str) or not line or self._pc is None:
            return
        candidate = candidate_from_sdp(line.removeprefix("candidate:"))
        candidate.sdpMid = payload.get("sdpMid")
        candidate.sdpMLineIndex = payload.get("sdpMLineIndex")
        with contextlib.suppress(Exception):
            await self._pc.addIceCandidate(candidate)

    def _description(self, pc: RTCPeerConnection) -> dict[str, Any]:
        local = pc.localDescription
        return {"target_id": self.remote, "type": local.type, "sdp": local.sdp}

    def _mark_down(self) -> None:
        if self.down.is_set():
            return
        if self.opened.is_set():
            log.info("data channel to %s closed", self.remote)
        self.down.set()
        self._drained.set()
        if self._on_down is not None:
            self._on_down(self)

    # --- sending ---------------------------------------------------------------------

    async def send(self, frames: Iterable[bytes]) -> None:
        """Queue frames on the channel, then wait while more than HIGH_WATER bytes are
        queued. :class:`LinkDown` if the channel is not open."""
        channel = self._channel
        if channel is None or not self.is_open:
            raise LinkDown(f"no data channel to {self.remote}")
        try:
            for frame in frames:
                channel.send(frame)
        except Exception as exc:  # aiortc raises InvalidStateError on a closed channel
            self._mark_down()
            raise LinkDown(f"data channel to {self.remote} failed: {exc}") from exc
        while channel.bufferedAmount > HIGH_WATER:
            self._drained.clear()
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await self._drained.wait()
            except TimeoutError:
                self._mark_down()
                raise LinkDown(
                    f"data channel to {self.remote} took nothing for {DRAIN_TIMEOUT:g} s"
                ) from None
            if not self.is_open:
                raise LinkDown(f"data channel to {self.remote} closed")

    async def close(self) -> None:
        self._mark_down()
        await self._close_connection()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _close_connection(self) -> None:
        pc, self._pc, self._channel = self._pc, None, None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()
