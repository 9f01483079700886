"""WebRTC data channels to other participants (aiortc).

One :class:`PeerLink` per remote user: an ``RTCPeerConnection`` with one reliable,
ordered data channel labelled ``roomdrop`` that carries binary frames (docs/protocol.md
§3.3, each at most 65,536 bytes). The side with something to send makes the offer; the
SDP goes through the server's WebSocket as ``offer``/``answer`` signalling.

Candidates: the host candidates go in the SDP at once. With STUN or TURN servers the
rest are gathered in the background (:class:`_Gathering`): those found within
``ROOMDROP_ICE_GATHER_WAIT`` go in the SDP too, later ones follow as ``ice-candidate``
messages, then an ``ice-candidate`` with an empty ``candidate`` (end of candidates). So
a TURN server that does not answer no longer holds up a connection the host candidates
can make. Candidates that arrive (from a trickling peer, e.g. a browser) are added; the
remote end of candidates is passed on only once this side's own gathering is over, so
ICE does not give up before a late relay candidate of ours had its chance.

The only module that imports ``aiortc`` and ``aioice``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aioice.ice
from aioice import Candidate
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
#: How long a STUN or TURN server is waited for, in the background (aioice's bound).
GATHER_TIMEOUT = 5.0
#: The releases :class:`_Gathering` was checked against: it replaces one method of
#: aioice's ``Connection`` and reads a few of its attributes. With other releases aiortc
#: gathers as it does by itself (every STUN/TURN answer, or GATHER_TIMEOUT, before the
#: offer or answer goes out).
CHECKED = {"aioice": "0.13.", "aiortc": "1.16."}
#: What :class:`_Gathering` uses of an aioice ``Connection``.
_CONNECTION_PARTS = [
    "gather_candidates",
    "get_component_candidates",
    "_pair_remote_candidate",
    "sort_check_list",
    "stun_server",
    "turn_server",
    "local_candidates",
    "_local_candidates",
    "_local_candidates_start",
    "_components",
    "_protocols",
    "_remote_candidates",
    "_closing",
]

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


@functools.cache
def _checked_release() -> bool:
    versions = {name: importlib.metadata.version(name) for name in CHECKED}
    if all(versions[name].startswith(prefix) for name, prefix in CHECKED.items()):
        return True
    log.warning(
        "ICE candidates are gathered the aiortc way (each side waits for every STUN/TURN "
        "server before its offer or answer): %s not checked (checked: %s)",
        ", ".join(f"{name} {version}" for name, version in versions.items()),
        ", ".join(f"{name} {prefix}x" for name, prefix in CHECKED.items()),
    )
    return False


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


class _Gathering:
    """The local ICE candidates of one peer connection: host candidates at once, the
    STUN (server-reflexive) and TURN (relay) ones in the background.

    aioice's ``Connection.gather_candidates``, which aiortc's ``setLocalDescription``
    awaits before it writes the SDP, returns only once every STUN and TURN server
    answered or 5 s passed: a TURN server that does not answer held each side's offer
    and answer up by 5 s. This replaces that one method on this one connection (an
    instance attribute, aiortc calls ``self._connection.gather_candidates()``): it
    gathers the host candidates as aioice does (its STUN and TURN servers hidden for
    the call), starts the rest in the background and waits for them at most ``wait``
    seconds (until they are all there when there is no host candidate: the relay
    policy). A candidate found after that is added to the connection (a relay one is
    paired with the remote candidates, and aioice's check loop takes the new pairs) and
    put on :attr:`late`, then None once gathering is over.
    """

    def __init__(self, connection: aioice.Connection, wait: float) -> None:
        self._conn = connection
        self._wait = wait
        self.late: asyncio.Queue[Candidate | None] = asyncio.Queue()
        self.done = asyncio.Event()
        #: True if the SDP went out before gathering was over (then :attr:`late` gets
        #: what came after, and None)
        self.trickling = False
        self._described = False
        self._task: asyncio.Task[None] | None = None
        connection.gather_candidates = self._gather  # type: ignore[method-assign]

    @classmethod
    def on(cls, pc: RTCPeerConnection, wait: float) -> _Gathering | None:
        """A gathering for ``pc``'s connection, or None where aiortc's own is as fast (no
        STUN or TURN server) or this aioice is not the one it was checked with."""
        sctp = pc.sctp
        if sctp is None:
            return None
        connection = sctp.transport.transport.iceGatherer._connection
        if connection.stun_server is None and connection.turn_server is None:
            return None
        if not _checked_release() or not all(
            hasattr(connection, name) for name in _CONNECTION_PARTS
        ):
            return None
        return cls(connection, wait)

    async def _gather(self) -> None:
        conn = self._conn
        if conn._local_candidates_start:
            return
        stun, turn = conn.stun_server, conn.turn_server
        conn.stun_server = conn.turn_server = None
        try:
            await aioice.Connection.gather_candidates(conn)  # host candidates only
        finally:
            conn.stun_server, conn.turn_server = stun, turn
        task = self._task = asyncio.create_task(self._more(stun, turn), name="ice-gathering")
        wait = self._wait if conn.local_candidates else GATHER_TIMEOUT + 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), wait)
        self.trickling = not task.done()
        self._described = True  # what is added from here on is not in the SDP

    async def _more(self, stun: tuple[str, int] | None, turn: tuple[str, int] | None) -> None:
        conn = self._conn
        jobs: list[Awaitable[None]] = []
        if turn is not None:
            jobs += [self._relayed(component) for component in sorted(conn._components)]
        if stun is not None:
            for protocol in list(conn._protocols):
                host = protocol.local_candidate.host
                if ipaddress.ip_address(host).version == 4:
                    jobs.append(self._reflexive(protocol, stun))
        try:
            await asyncio.gather(*jobs)
        finally:
            self.done.set()
            if self._described:
                self.late.put_nowait(None)

    async def _relayed(self, component: int) -> None:
        conn = self._conn
        before = list(conn._protocols)
        try:
            found = await conn.get_component_candidates(
                component=component, addresses=[], timeout=int(GATHER_TIMEOUT)
            )
        except Exception as exc:
            log.debug("no relay candidate: %s", exc)
            return
        new = [p for p in conn._protocols if p not in before]
        if conn._closing:  # closed meanwhile: its allocation goes too
            for protocol in new:
                with contextlib.suppress(ValueError):
                    conn._protocols.remove(protocol)
                await protocol.close()
            return
        if not found:
            log.info("no relay candidate from the TURN server within %g s", GATHER_TIMEOUT)
        for candidate in found:
            self._add(candidate)
        if new:
            for remote in list(conn._remote_candidates):
                conn._pair_remote_candidate(remote)
            conn.sort_check_list()

    async def _reflexive(self, protocol: Any, stun: tuple[str, int]) -> None:
        try:
            async with asyncio.timeout(GATHER_TIMEOUT):
                candidate, _ = await aioice.ice.server_reflexive_candidate(protocol, stun)
        except Exception as exc:
            log.debug("no server-reflexive candidate: %s", exc)
            return
        if not self._conn._closing:
            self._add(candidate)

    def _add(self, candidate: Candidate) -> None:
        self._conn._local_candidates.append(candidate)
        if self._described:
            self.late.put_nowait(candidate)


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
        self._gathering: _Gathering | None = None
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
        gathering = self._gathering = _Gathering.on(pc, self._gather_wait)
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

    async def _send_late(self, pc: RTCPeerConnection, gathering: _Gathering) -> None:
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
