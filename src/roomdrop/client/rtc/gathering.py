"""ICE candidate gathering for aiortc's peer connections: host candidates pinned to the
addresses the client may use (``ROOMDROP_ICE_HOSTS``), and the STUN and TURN ones
gathered in the background so that a server that does not answer holds nothing up
(:class:`Gathering`; the package docstring says how the candidates travel).

The only module that imports ``aioice``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import ipaddress
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

import aioice.ice
from aioice import Candidate
from aiortc import RTCPeerConnection

__all__ = ["GATHER_TIMEOUT", "Gathering", "pin_ice_hosts"]

log = logging.getLogger("roomdrop.client")

#: How long a STUN or TURN server is waited for, in the background (aioice's bound).
GATHER_TIMEOUT = 5.0
#: The releases :class:`Gathering` was checked against: it replaces one method of
#: aioice's ``Connection`` and reads a few of its attributes. With other releases aiortc
#: gathers as it does by itself (every STUN/TURN answer, or GATHER_TIMEOUT, before the
#: offer or answer goes out).
CHECKED = {"aioice": "0.13.", "aiortc": "1.16."}
#: What :class:`Gathering` uses of an aioice ``Connection``.
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


def host_addresses() -> list[str]:
    """The local addresses ICE gathers host candidates on (as pinned by
    :func:`pin_ice_hosts`, else aioice's: every address but loopback), which the direct
    path listens on too."""
    return list(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))


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


class Gathering:
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
    def on(cls, pc: RTCPeerConnection, wait: float) -> Gathering | None:
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
