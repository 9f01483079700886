"""The sender waits for its receiver to join the room (``send --wait``)."""

from __future__ import annotations

import asyncio
import time

from roomdrop.client.transfers import Host

__all__ = ["WAITING_EVERY", "NobodyCame", "wait_for_receiver"]

WAITING_EVERY = 1.0
"""How often the time waited for the receiver to join is shown."""


class NobodyCame(Exception):
    """The receiver did not join the room within ``--wait`` seconds."""


async def wait_for_receiver(host: Host, to: str, limit: float | None) -> None:
    """Until ``to`` is in the room: said once, with the time waited so far (at most
    ``limit`` seconds, then :class:`NobodyCame`)."""
    if to in host.participants:
        return
    text = f"waiting for {to} to join room {host.room}"
    started = time.monotonic()
    arrived = asyncio.ensure_future(host.wait_for(to))
    try:
        while True:
            elapsed = time.monotonic() - started
            host.reporter.waiting(text, elapsed)
            if limit is not None and elapsed >= limit:
                raise NobodyCame(f"{to} did not join room {host.room} within {limit:g} s")
            step = WAITING_EVERY if limit is None else min(WAITING_EVERY, limit - elapsed)
            done, _ = await asyncio.wait({arrived}, timeout=step)
            if done:
                return
    finally:
        arrived.cancel()
        host.reporter.waiting(text, None)
