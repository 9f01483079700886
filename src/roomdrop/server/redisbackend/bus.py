"""Pub/sub between instances: one subscription that reads deliveries in order and
renews itself when it breaks, and one writer that pipelines publications and progress
writes (which must never make a chunk's path wait for Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from typing import Any, Final

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from roomdrop.server.backend import Inbound
from roomdrop.server.redisbackend.common import Keys

__all__ = ["Bus"]

log = logging.getLogger("roomdrop.server")

WRITE_BATCH: Final = 1000
MAX_WAITING: Final = 100_000
"""Publications that may wait for Redis before new ones are dropped (and logged)."""


class Bus:
    """This instance's subscription (its participants' channels, their rooms', record
    changes) and its queue of writes to Redis."""

    def __init__(self, r: aioredis.Redis, keys: Keys, instance_id: str) -> None:
        self.r = r
        self.keys = keys
        self.instance_id = instance_id
        self.listening = asyncio.Event()
        """The subscription works: deliveries to this instance's participants arrive."""
        self._inbound: Inbound | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outgoing: deque[tuple[AsyncScript | None, tuple[Any, ...]]] = deque()
        self._wake = asyncio.Event()
        self._user_channels: dict[bytes, tuple[str, str]] = {}
        self._room_channels: dict[bytes, str] = {}
        self._subscriptions: dict[bytes, int] = {}

    async def start(self, inbound: Inbound) -> None:
        self._inbound = inbound
        self._pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.keys.changed)
        self.listening.set()
        self._reader = asyncio.create_task(self._read(), name="redis-reader")
        self._writer = asyncio.create_task(self._write(), name="redis-writer")

    async def close(self) -> None:
        """Flush what waits to be written (for a second at most), then stop."""
        if self._writer is not None:
            for _ in range(50):
                if not self._outgoing:
                    break
                await asyncio.sleep(0.02)
            self._writer.cancel()
        if self._reader is not None:
            self._reader.cancel()
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            if self._pubsub is not None:
                await self._pubsub.aclose()

    # --- writing ---------------------------------------------------------------------

    def publish(self, channel: bytes, data: dict[str, Any]) -> None:
        self._queue(None, (channel, json.dumps(data)))

    def run_later(self, script: AsyncScript, keys: list[str], args: list[str]) -> None:
        """Run ``script`` in the writer's next pipeline (progress writes)."""
        self._queue(script, (keys, args))

    def _queue(self, script: AsyncScript | None, args: tuple[Any, ...]) -> None:
        if len(self._outgoing) >= MAX_WAITING:
            log.error("dropping a publication: %d wait for Redis", len(self._outgoing))
            return
        self._outgoing.append((script, args))
        self._wake.set()

    async def _write(self) -> None:
        """Publications and script writes, in order, pipelined."""
        while True:
            if not self._outgoing:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._outgoing, WRITE_BATCH))
            try:
                async with self.r.pipeline(transaction=False) as pipe:
                    for script, args in batch:
                        if script is None:
                            pipe.publish(*args)
                        else:
                            await script(keys=args[0], args=args[1], client=pipe)
                    results = await pipe.execute(raise_on_error=False)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:  # Redis out of reach: the batch again
                log.warning("publishing to other instances failed (%s); retrying", exc)
                await asyncio.sleep(0.2)
                continue
            for result in results:  # one refused command is not retried for ever
                if isinstance(result, Exception):
                    log.warning("Redis refused a publication or progress write: %s", result)
            for _ in batch:
                self._outgoing.popleft()

    # --- reading ---------------------------------------------------------------------

    async def _read(self) -> None:
        """Deliveries from other instances, in the order they were published. When the
        subscription breaks (Redis restarted, the network failed), a new one is made,
        to every channel this instance needs, as soon as Redis answers again. What was
        published meanwhile is lost; the hub then sends its participants a fresh
        room-state to catch up from (:meth:`Inbound.resync`)."""
        while True:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("lost the Redis subscription (%s); renewing it", exc)
                self.listening.clear()  # no one joins here until it is renewed
                while not await self._renew_subscription():
                    await asyncio.sleep(0.2)
                self.listening.set()
                if self._inbound is not None:
                    self._inbound.resync()
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                self._deliver(message["channel"], json.loads(message["data"]))
            except Exception:
                log.exception("delivering a message from another instance failed")

    async def _renew_subscription(self) -> bool:
        """A new subscription to every channel in use; False if Redis did not answer."""
        old, self._pubsub = self._pubsub, self.r.pubsub(ignore_subscribe_messages=True)
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            await old.aclose()
        done: set[bytes] = set()
        try:
            while wanted := {self.keys.changed, *self._subscriptions} - done:
                await self._pubsub.subscribe(*wanted)  # joins meanwhile: their channels too
                done |= wanted
        except (RedisError, OSError):
            return False
        log.info("Redis subscription renewed (%d channels)", len(done))
        return True

    def _deliver(self, channel: bytes, data: dict[str, Any]) -> None:
        inbound = self._inbound
        assert inbound is not None
        if channel == self.keys.changed:
            if data.get("o") != self.instance_id:
                inbound.transfer_changed(data["tid"])
        elif (who := self._user_channels.get(channel)) is not None:
            room_id, user_id = who
            kind = data.get("k")
            if kind == "m":
                inbound.to_user(room_id, user_id, data["t"])
            elif kind == "kick":
                inbound.replaced(room_id, user_id, data["c"])
            elif kind == "relay":
                inbound.relay_ready(room_id, user_id, data["tid"])
        elif (room := self._room_channels.get(channel)) is not None and data.get(
            "o"
        ) != self.instance_id:
            inbound.to_room(room, data["t"], data.get("x"))

    # --- subscriptions ---------------------------------------------------------------

    async def subscribe_member(self, room_id: str, user_id: str) -> None:
        """Deliveries to ``user_id`` and to their room reach this instance from now on."""
        channel = self.keys.user_channel(room_id, user_id)
        self._user_channels[channel] = (room_id, user_id)
        await self._subscribe(channel)
        room_channel = self.keys.room_channel(room_id)
        self._room_channels[room_channel] = room_id
        await self._subscribe(room_channel)

    async def unsubscribe_member(self, room_id: str, user_id: str) -> None:
        channel = self.keys.user_channel(room_id, user_id)
        if await self._unsubscribe(channel):
            self._user_channels.pop(channel, None)
        room_channel = self.keys.room_channel(room_id)
        if await self._unsubscribe(room_channel):
            self._room_channels.pop(room_channel, None)

    async def _subscribe(self, channel: bytes) -> None:
        count = self._subscriptions.get(channel, 0)
        if count == 0:
            await self._pubsub.subscribe(channel)
        self._subscriptions[channel] = count + 1

    async def _unsubscribe(self, channel: bytes) -> bool:
        count = self._subscriptions.get(channel, 0) - 1
        if count > 0:
            self._subscriptions[channel] = count
            return False
        self._subscriptions.pop(channel, None)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.unsubscribe(channel)
        return True
