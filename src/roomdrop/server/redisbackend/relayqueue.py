"""The relay between instances: per transfer, a short Redis list of frames (of a
transfer in the clear: sealed under a key derived from the server secret; of an
end-to-end encrypted one: as they are, ciphertext already), pushed by the sender's
instance with back-pressure, announced to the receiver's, popped there in batches; and
each room's relay bandwidth as one token bucket, whatever instance relays."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Final, cast
from uuid import UUID

import redis.asyncio as aioredis

from roomdrop.protocol.frames import FLAG_SEALED
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.redisbackend.bus import Bus
from roomdrop.server.redisbackend.common import Keys, unavailable
from roomdrop.server.staging import FrameSeal

__all__ = ["QUEUE_FRAMES", "RelayQueue"]

log = logging.getLogger("roomdrop.server")

QUEUE_FRAMES: Final = 16
"""Frames of one transfer that may wait in Redis between two instances (1 MiB of
64 KiB chunks)."""
POP_BATCH: Final = 16
_SEALED_HERE: Final = b"\x00"
"""First byte of a queued frame of a transfer in the clear, sealed by the sender's
instance (:class:`FrameSeal`); a frame of an end-to-end encrypted transfer is queued as
it is (it starts with the frame magic ``RD``, and its flags say ``SEALED``)."""
_SEALED_FLAG: Final = bytes([FLAG_SEALED])
ANNOUNCE_EVERY: Final = 0.5
"""Seconds between two announcements of frames waiting for one transfer (a receiver's
pump stops only after 1 s without frames, twice that)."""
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate) - n
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 60)
if tokens < 0 then return tostring(-tokens / rate) end
return '0'
"""


class RelayQueue:
    """The relay part of :class:`~roomdrop.server.redisbackend.RedisBackend`."""

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        bus: Bus,
        secret: str,
        *,
        expiry: float,
        room_bandwidth: float,
    ) -> None:
        self.r = r
        self.keys = keys
        self.bus = bus
        self.expiry = expiry
        self.room_bandwidth = room_bandwidth
        self._secret = secret
        self._seals: dict[str, FrameSeal] = {}
        self._queued: dict[str, int] = {}  # transfer -> its queue's length, last seen
        self._announced: dict[str, float] = {}  # transfer -> when its frames were announced
        self._bucket = r.register_script(_BUCKET)

    def _seal(self, transfer_id: str) -> FrameSeal:
        seal = self._seals.get(transfer_id)
        if seal is None:
            if len(self._seals) > 256:
                self._seals.clear()
            seal = self._seals[transfer_id] = FrameSeal(self._secret, transfer_id)
        return seal

    @unavailable
    async def push(self, record: Transfer, frame: bytes, *, wait: bool) -> bool:
        tid = record.transfer_id
        key = self.keys.k("q", tid)
        delay, announced = 0.001, time.monotonic()
        # what this instance last saw of the queue's length is an upper bound (only the
        # receiver's instance takes frames off): look again only when it says full
        while self._queued.get(tid, 0) >= QUEUE_FRAMES:
            self._queued[tid] = int(await self.r.llen(key))
            if self._queued[tid] < QUEUE_FRAMES:
                break
            if not wait:
                return False
            if time.monotonic() - announced > 1.0:  # in case nobody takes them: again
                self._announce(record, force=True)
                announced = time.monotonic()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        # an end-to-end encrypted chunk is ciphertext already: it travels as it came
        value = frame if record.e2e is not None else _SEALED_HERE + self._seal(tid).seal(frame)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.k("t", tid), "status")
            pipe.rpush(key, value)
            pipe.pexpire(key, int(self.expiry * 1000))
            status, queued, _ = await pipe.execute()
        if status != b"active":  # paused or ended meanwhile: nothing may wait for it
            await self.r.delete(key)
            self._queued.pop(tid, None)
            return False
        self._queued[tid] = int(queued)
        if queued == 1:  # the queue was empty: its pump may have stopped
            self._announce(record)
        return True

    def _announce(self, record: Transfer, *, force: bool = False) -> None:
        """Tell the receiver's instance that frames wait. Its pump runs on for a second
        after the last frame it took, so while frames keep coming one word every half
        second is enough (a publication per chunk cost as much as the chunk)."""
        tid, now = record.transfer_id, time.monotonic()
        if not force and now - self._announced.get(tid, -1.0) < ANNOUNCE_EVERY:
            return
        self._announced[tid] = now
        channel = self.keys.user_channel(record.room_id, record.receiver_id)
        self.bus.publish(channel, {"k": "relay", "tid": tid})

    @unavailable
    async def pop(self, transfer_id: str, timeout: float) -> Sequence[bytes]:
        popped = await self.r.blmpop(
            timeout, 1, self.keys.k("q", transfer_id), direction="LEFT", count=POP_BATCH
        )
        if not popped:
            return ()
        frames: list[bytes] = []
        tid_bytes = UUID(transfer_id).bytes
        for value in cast(list[bytes], popped[1]):
            if value[:1] == _SEALED_HERE:
                frame = self._seal(transfer_id).open(value[1:])
            elif value[3:4] == _SEALED_FLAG and value[4:20] == tid_bytes:
                # an end-to-end encrypted chunk of this transfer: the receiver checks it
                frame = value
            else:
                frame = None
            if frame is None:  # not ours, or tampered with: dropped; the receiver asks again
                log.error("a relayed frame of %s failed authentication; dropped", transfer_id)
            else:
                frames.append(frame)
        return frames

    @unavailable
    async def drop(self, transfer_id: str) -> None:
        self._queued.pop(transfer_id, None)
        self._announced.pop(transfer_id, None)
        await self.r.delete(self.keys.k("q", transfer_id))

    @unavailable
    async def take_bandwidth(self, room_id: str, nbytes: int) -> None:
        rate = float(self.room_bandwidth)
        if not rate:
            return
        key = self.keys.k("bw", room_id)
        wait = float(await self._bucket(keys=[key], args=[rate, rate, nbytes]))
        if wait > 0:
            await asyncio.sleep(wait)
