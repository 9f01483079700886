"""The sender waits for its receivers to join the room (``send --wait``), finds out who
they are (``send --to @room``: everyone else in the room), and sends to each of them
at once (:func:`to_each`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from roomdrop.client.transfers import Host, Result

__all__ = [
    "EVERYONE",
    "WAITING_EVERY",
    "NobodyCame",
    "receivers_of",
    "to_each",
    "wait_for_receiver",
]

EVERYONE = "@room"
"""``--to @room``: everyone in the room but the sender, when the sending begins."""

WAITING_EVERY = 1.0
"""How often the time waited for the receiver to join is shown."""


class NobodyCame(Exception):
    """The receiver did not join the room within ``--wait`` seconds."""


async def to_each(
    host: Host,
    to: Sequence[str],
    paths: list[Path],
    send: Callable[[Path, str], Awaitable[Result]],
    *,
    wait: float | None,
    online: bool = True,
) -> list[Result]:
    """``send(path, receiver)`` for each of ``paths`` and each receiver ``to`` names
    (:func:`receivers_of`): to each receiver the files one after another, to all
    receivers at once, at most as many at a time as the server lets a user have under
    way (``room-state``'s ``max_transfers_per_user``). A receiver still awaited holds no
    place meanwhile (``wait`` seconds at most, None: for ever); with ``online`` False
    (files kept for later, ``send --store``) nobody is awaited. The
    results by receiver; if one receiver could not be sent to (it never came), that is
    raised once the others are done."""
    receivers = await receivers_of(host, to, wait)
    slots = asyncio.Semaphore(host.max_transfers or len(receivers))

    async def each(receiver: str) -> list[Result]:
        results = []
        for path in paths:
            if online and len(receivers) > 1:  # waited for here, holding no place
                await wait_for_receiver(host, receiver, wait)
            async with slots:
                results.append(await send(path, receiver))
        return results

    if len(receivers) == 1:
        return await each(receivers[0])
    done = await asyncio.gather(*(each(r) for r in receivers), return_exceptions=True)
    results: list[Result] = []
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
        results.extend(outcome)
    return results


async def receivers_of(host: Host, to: Sequence[str], limit: float | None) -> list[str]:
    """The receivers ``to`` names: themselves, or for ``[EVERYONE]`` those in the room
    but this sender now, waiting (at most ``limit`` seconds) for a first one if nobody
    else is in it."""
    if list(to) != [EVERYONE]:
        return list(to)

    def others() -> list[str]:
        return sorted(host.participants - {host.user})

    if not others():
        text = f"waiting for someone to join room {host.room}"
        nobody = f"nobody else joined room {host.room}"
        await _wait(host, text, host.wait_for_others(), limit, nobody)
    return others()


async def wait_for_receiver(host: Host, to: str, limit: float | None) -> None:
    """Until ``to`` is in the room: said once, with the time waited so far (at most
    ``limit`` seconds, then :class:`NobodyCame`)."""
    if to in host.participants:
        return
    text = f"waiting for {to} to join room {host.room}"
    await _wait(host, text, host.wait_for(to), limit, f"{to} did not join room {host.room}")


async def _wait(
    host: Host, text: str, until: Awaitable[None], limit: float | None, nobody: str
) -> None:
    started = time.monotonic()
    arrived = asyncio.ensure_future(until)
    try:
        while True:
            elapsed = time.monotonic() - started
            host.reporter.waiting(text, elapsed)
            if limit is not None and elapsed >= limit:
                raise NobodyCame(f"{nobody} within {limit:g} s")
            step = WAITING_EVERY if limit is None else min(WAITING_EVERY, limit - elapsed)
            done, _ = await asyncio.wait({arrived}, timeout=step)
            if done:
                return
    finally:
        arrived.cancel()
        host.reporter.waiting(text, None)
