"""The data channel to one remote participant: :class:`PeerLink` (the package docstring
has the whole picture).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

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
from roomdrop.client.rtc.gathering import Gathering

__all__ = ["LABEL", "PeerLink"]

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


def _split_end(sdp: str) -> tuple[str, bool]:
    """``sdp`` without its ``a=end-of-candidates`` lines, and whether it had any."""
    lines = sdp.split("\r\n")
    kept = [line for line in lines if line != "a=end-of-candidates"]
    return "\r\n".join(kept), len(kept) != len(lines)


def _media_id(sdp: str) -> tuple[str | None, int]:
    """(``a=mid``, m-line index) of the data channel's media section in ``sdp``."""
    index, mid, in_application = -1, None, False
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_application:
                break
            index += 1
            in_application = line.startswith("m=application")
        elif in_application and line.startswith("a=mid:"):
            mid = line.removeprefix("a=mid:")
    return mid, max(index, 0)


class PeerLink:
    """The data channel to one remote participant."""

    def __init__(
        self,
        remote: str,
        *,
        ice_servers: list[dict[str, Any]],
        ice_policy: str = "all",
        gather_wait: float = 0.1,
        signal: Signal,
        on_frame: FrameHandler,
        on_down: Callable[[PeerLink], None] | None = None,
    ) -> None:
        self.remote = remote
        self._ice_servers = ice_servers
        self._ice_policy = ice_policy
        self._gather_wait = gather_wait
        self._signal = signal
        self._on_frame = on_frame
        self._on_down = on_down
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        #: when this side sent its offer or took the remote's (time.monotonic())
        self.started: float | None = None
        #: seconds from :attr:`started` until the channel opened
        self.took: float | None = None
        self._gathering: Gathering | None = None
        self._trickle: asyncio.Task[None] | None = None
        self._remote_ended = False  # the remote's end of candidates, held until ours
        self._ended = False  # ... and passed on
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
        self.started = time.monotonic()
        self._watch(pc.createDataChannel(LABEL, ordered=True))
        await self._describe(pc, await pc.createOffer())

    async def on_signal(self, kind: str, payload: dict[str, Any]) -> None:
        """Handle ``offer``, ``answer`` or ``ice-candidate`` from the remote user."""
        if kind == "offer":
            if self._pc is not None:  # the remote side started over
                await self._close_connection()
                self.opened.clear()
                self.down.clear()
            pc = self._new_connection()
            self.started = time.monotonic()
            sdp, self._remote_ended = _split_end(payload["sdp"])
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            await self._describe(pc, await pc.createAnswer())
        elif kind == "answer" and (current := self._pc) is not None:
            sdp, ended = _split_end(payload["sdp"])
            await current.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
            if ended:
                self._remote_ended = True
                await self._maybe_end(current)
        elif kind == "ice-candidate" and (current := self._pc) is not None:
            if payload.get("candidate") == "":  # the remote's end of candidates
                self._remote_ended = True
                await self._maybe_end(current)
            else:
                await self._add_candidate(payload)

    async def _describe(self, pc: RTCPeerConnection, description: RTCSessionDescription) -> None:
        """Set and send this side's offer or answer; candidates gathered after it follow
        as ``ice-candidate`` messages."""
        gathering = self._gathering = Gathering.on(pc, self._gather_wait)
        await pc.setLocalDescription(description)
        payload = self._description(pc)
        if gathering is not None and gathering.trickling:
            payload["sdp"], _ = _split_end(payload["sdp"])
            await self._signal(description.type, payload)
            self._trickle = asyncio.create_task(
                self._send_late(pc, gathering), name=f"trickle-{self.remote}"
            )
        else:
            await self._signal(description.type, payload)
            await self._maybe_end(pc)

    async def _send_late(self, pc: RTCPeerConnection, gathering: Gathering) -> None:
        mid, index = _media_id(pc.localDescription.sdp)
        try:
            while True:
                candidate = await gathering.late.get()
                line = "" if candidate is None else f"candidate:{candidate.to_sdp()}"
                await self._signal(
                    "ice-candidate",
                    {
                        "target_id": self.remote,
                        "candidate": line,
                        "sdpMid": mid,
                        "sdpMLineIndex": index,
                    },
                )
                if candidate is None:
                    break
        except Exception as exc:  # not connected to the server: the checks go on
            log.debug("could not send a candidate to %s: %s", self.remote, exc)
        await gathering.done.wait()
        if pc is self._pc:
            await self._maybe_end(pc)

    async def _maybe_end(self, pc: RTCPeerConnection) -> None:
        """Pass the remote's end of candidates to ICE once this side's gathering is over
        too: ICE fails once every pair failed and no candidate can come any more."""
        gathering = self._gathering
        if self._ended or not self._remote_ended or pc is not self._pc:
            return
        if gathering is not None and not gathering.done.is_set():
            return
        self._ended = True
        with contextlib.suppress(Exception):
            await pc.addIceCandidate(None)

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
        self._gathering, self._remote_ended, self._ended = None, False, False

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
            if self.started is not None:
                self.took = time.monotonic() - self.started
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
        trickle, self._trickle = self._trickle, None
        if trickle is not None:
            trickle.cancel()
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()
