"""The shared backend: several ``roomdrop serve`` instances share rooms through Redis.

The only module that imports ``redis``. Every key and channel starts with the
deployment's prefix ``P`` (``ROOMDROP_REDIS_PREFIX``, default ``roomdrop``)::

    P:t:{tid}            hash   a transfer record: rec (JSON), status, and the progress
                                fields chunks, bytes, activity (epoch s), speed (B/s)
    P:live               set    live transfer ids (the sweeper's work list)
    P:live:u:{user}      set    live transfers a user is a party to (the per-user limit)
    P:live:r:{room}      set    live transfers of a room (the per-room limit)
    P:all:u:{user}       set    every transfer of a user (GET /file-transfers)
    P:recent             zset   every transfer id, by creation time (metrics)
    P:dp                 set    transfers paused because a party dropped
    P:m:{room}           hash   user -> "{instance}/{connection}": who is in the room
    P:g                  zset   ["room", "user"] -> end of their grace window (epoch s)
    P:i:{instance}       string an instance's heartbeat (expires after INSTANCE_TIMEOUT)
    P:i:{instance}:m     set    ["room", "user"] of the participants it hosts
    P:insts              set    instances known to be running
    P:q:{tid}            list   relayed frames on their way to the receiver's instance
    P:bw:{room}          hash   the room's relay token bucket (tokens, ts)
    P:secret             string the JWT secret, when ROOMDROP_SECRET is not set
    P:sweep              string which instance sweeps this second

    channel P:u:{room}:{user}  a participant's messages; the instance that hosts them
                               subscribes: {"k": "m", "t": json} a message, {"k":
                               "kick", "c": conn} a newer connection joined, {"k":
                               "relay", "tid": tid} frames wait in P:q:{tid}
    channel P:r:{room}         room broadcasts {"o": origin, "x": exclude, "t": json}
    channel P:changed          {"o": origin, "tid": tid}: a record's status changed

Atomicity: a status change reads the record under ``WATCH`` and writes it in
``MULTI``/``EXEC`` (retrying if another instance changed it meanwhile), so the state
table decides every change exactly once; an offer counts the live sets under the same
``WATCH``, so the limits hold across instances. Joining, leaving, claiming ended grace
windows, taking over a vanished instance's participants, progress writes (only while
the transfer is active) and the room's token bucket are Lua scripts.

The relay between instances: the sender's instance verifies a chunk, encrypts the
whole frame with AES-GCM under a key derived from the server secret and the transfer
id (HKDF-SHA256, :class:`~roomdrop.server.relay.FrameSeal`; no key is stored anywhere,
and Redis never holds a chunk in the clear), and pushes it onto ``P:q:{tid}`` (with the
record's status read in the same ``MULTI``: a transfer no longer active has its queue
dropped) only while fewer than ``QUEUE_FRAMES`` wait there (else it waits:
back-pressure to the sender's socket). Pushing onto an empty queue announces the frames
on the receiver's channel (at most every ``ANNOUNCE_EVERY``); the instance hosting the
receiver pops them (``BLMPOP``), decrypts and sends them as the receiver's socket takes
them. Memory: ``QUEUE_FRAMES`` frames per transfer in Redis, one batch on each side.
(A Lua script taking the frame as an argument cost Redis ~150 us a chunk, copying it;
the pipeline costs ~10.)

Liveness: every instance refreshes ``P:i:{instance}`` several times per
``ROOMDROP_INSTANCE_TIMEOUT`` (10 s); one whose key expired vanished without leaving
(killed), and the first instance to notice claims it and ends its participants' stay
(their grace windows begin, as for a dropped socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import platform
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, ParamSpec, TypeVar, cast
from uuid import uuid4

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from roomdrop.clock import Clock, SystemClock
from roomdrop.exceptions import (
    BackendUnavailable,
    InvalidTransition,
    ProtocolError,
    UnknownTransfer,
)
from roomdrop.protocol.messages import Offer
from roomdrop.protocol.state import Event, Status
from roomdrop.protocol.transfer import Limits, Transfer
from roomdrop.server.backend import Inbound
from roomdrop.server.relay import FrameSeal
from roomdrop.server.settings import Settings

__all__ = ["QUEUE_FRAMES", "RedisBackend", "decode_record", "encode_record", "shared_secret"]

log = logging.getLogger("roomdrop.server")

QUEUE_FRAMES: Final = 16
"""Frames of one transfer that may wait in Redis between two instances (1 MiB of
64 KiB chunks)."""
KEEP_FINISHED: Final = 3600.0
"""Seconds an ended transfer's record stays readable."""
POP_BATCH: Final = 16
WRITE_BATCH: Final = 1000
ANNOUNCE_EVERY: Final = 0.5
"""Seconds between two announcements of frames waiting for one transfer (a receiver's
pump stops only after 1 s without frames, twice that)."""
_PROGRESS_FIELDS: Final = ("chunks_sent", "bytes_transferred", "last_activity", "meter")
_STATE_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(Transfer) if f.name not in _PROGRESS_FIELDS
)

P = ParamSpec("P")
R = TypeVar("R")

# --- Lua ------------------------------------------------------------------------------

_JOIN = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local away = redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
if prev then return {1, prev} end
return {away, ''}
"""
_LEAVE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  redis.call('SREM', KEYS[3], ARGV[3])
  return 1
end
if (not cur) or string.sub(cur, 1, #ARGV[5] + 1) ~= ARGV[5] .. '/' then
  redis.call('SREM', KEYS[3], ARGV[3])
end
return 0
"""
_REAP = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2] + 1) == ARGV[2] .. '/' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  return 1
end
return 0
"""
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, m in ipairs(due) do redis.call('ZREM', KEYS[1], m) end
return due
"""
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') == 'active' then
  redis.call('HSET', KEYS[1], 'chunks', ARGV[1], 'bytes', ARGV[2], 'activity', ARGV[3],
             'speed', ARGV[4])
  return 1
end
return 0
"""
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


def _unavailable(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis out of reach is :class:`BackendUnavailable` (HTTP 503), never a 500."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except RedisError as exc:
            raise BackendUnavailable(f"the shared state (Redis) is out of reach: {exc}") from None

    return guarded


# --- records ----------------------------------------------------------------------


def encode_record(r: Transfer, clock: Clock) -> dict[str, str]:
    """The hash fields of a record; monotonic times become epoch seconds (instances
    share no monotonic clock)."""
    offset = clock.time() - clock.monotonic()
    state = {name: getattr(r, name) for name in _STATE_FIELDS}
    state["status"] = r.status.value
    state["created_mono"] = r.created_mono + offset
    return {
        "rec": json.dumps(state),
        "status": r.status.value,
        "chunks": str(r.chunks_sent),
        "bytes": str(r.bytes_transferred),
        "activity": repr(r.last_activity + offset),
        "speed": repr(r.meter.rate()),
    }


def decode_record(fields: dict[Any, Any], clock: Clock) -> Transfer:
    """The record those hash fields hold, its times on ``clock``'s monotonic scale; its
    rate meter starts from the stored speed."""
    offset = clock.time() - clock.monotonic()
    state = json.loads(fields[b"rec"])
    state["status"] = Status(fields[b"status"].decode())
    state["created_mono"] = float(state["created_mono"]) - offset
    record = Transfer(**state)
    record.chunks_sent = int(fields[b"chunks"])
    record.bytes_transferred = int(fields[b"bytes"])
    record.last_activity = float(fields[b"activity"]) - offset
    _seed_meter(record, float(fields.get(b"speed", b"0")))
    return record


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seed_meter(record: Transfer, speed: float) -> None:
    record.meter.reset()
    if speed > 0:
        now, nbytes = record.last_activity, record.bytes_transferred
        record.meter.record(now - 1.0, nbytes - int(speed))
        record.meter.record(now, nbytes)


def shared_secret(url: str, prefix: str) -> str:
    """The JWT secret every instance of the deployment uses: generated by the first to
    ask and kept in Redis (``P:secret``), so that instances and ``roomdrop token
    --redis-url`` agree without configuration. ROOMDROP_SECRET overrides it."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        key = f"{prefix}:secret"
        client.set(key, secrets.token_urlsafe(48), nx=True)
        value = client.get(key)
    except RedisError as exc:
        raise BackendUnavailable(f"cannot read the secret from Redis: {exc}") from None
    finally:
        client.close()
    assert isinstance(value, bytes)
    return value.decode()


class RedisBackend:
    """:class:`~roomdrop.server.backend.Backend` over Redis (see the module docstring)."""

    shared = True

    def __init__(
        self,
        settings: Settings,
        secret: str,
        *,
        clock: Clock | None = None,
        instance_id: str | None = None,
    ) -> None:
        assert settings.redis_url, "RedisBackend needs ROOMDROP_REDIS_URL"
        self.settings = settings
        self.clock = clock or SystemClock()
        self.instance_id = instance_id or f"{platform.node()}-{uuid4().hex[:8]}"
        self.limits = Limits(
            settings.max_file_size,
            settings.max_transfers_per_user,
            settings.max_transfers_per_room,
            settings.idle_timeout,
            settings.expiry,
        )
        self.p = settings.redis_prefix
        self.r: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, health_check_interval=10
        )
        self._secret = secret
        self._seals: dict[str, FrameSeal] = {}
        self._queued: dict[str, int] = {}  # transfer -> its queue's length, last seen
        self._announced: dict[str, float] = {}  # transfer -> when its frames were announced
        self._cache: dict[str, Transfer] = {}
        self._inbound: Inbound | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._heart: asyncio.Task[None] | None = None
        self._outgoing: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        """The subscription works: deliveries to this instance's participants arrive."""
        self._user_channels: dict[bytes, tuple[str, str]] = {}
        self._room_channels: dict[bytes, str] = {}
        self._subscriptions: dict[bytes, int] = {}
        self._join = self.r.register_script(_JOIN)
        self._leave = self.r.register_script(_LEAVE)
        self._reap = self.r.register_script(_REAP)
        self._claim_due = self.r.register_script(_CLAIM_DUE)
        self._progress = self.r.register_script(_PROGRESS)
        self._bucket = self.r.register_script(_BUCKET)
        self._changed = f"{self.p}:changed".encode()

    # --- keys ------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self.p, *parts))

    def _user_channel(self, room_id: str, user_id: str) -> bytes:
        return self._k("u", room_id, user_id).encode()

    def _room_channel(self, room_id: str) -> bytes:
        return self._k("r", room_id).encode()

    # --- lifecycle -------------------------------------------------------------------

    @_unavailable
    async def start(self, inbound: Inbound) -> None:
        """Subscribe, say this instance is alive, and start the reader, the writer (of
        publications and progress) and the heartbeat."""
        self._inbound = inbound
        self._pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._changed)
        self._listening.set()
        await self._beat()
        self._reader = asyncio.create_task(self._read(), name="redis-reader")
        self._writer = asyncio.create_task(self._write(), name="redis-writer")
        self._heart = asyncio.create_task(self._heartbeat(), name="redis-heartbeat")
        log.info("instance %s shares state through Redis (prefix %s)", self.instance_id, self.p)

    async def close(self) -> None:
        """Flush what waits to be published, then stop. The heartbeat key goes, so that
        participants still recorded here (if any) are taken as gone at once."""
        if self._writer is not None:
            for _ in range(50):
                if not self._outgoing:
                    break
                await asyncio.sleep(0.02)
            self._writer.cancel()
        for task in (self._reader, self._heart):
            if task is not None:
                task.cancel()
        with contextlib.suppress(RedisError, OSError):
            hosted = self._k("i", self.instance_id, "m")
            if not await self.r.scard(hosted):  # everyone left properly: nothing to reap
                await self.r.srem(self._k("insts"), self.instance_id)
            await self.r.delete(self._k("i", self.instance_id))
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            if self._pubsub is not None:
                await self._pubsub.aclose()
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            await self.r.aclose()

    async def _beat(self) -> None:
        ttl_ms = int(self.settings.instance_timeout * 1000)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.set(self._k("i", self.instance_id), "1", px=ttl_ms)
            pipe.sadd(self._k("insts"), self.instance_id)
            await pipe.execute()

    async def _heartbeat(self) -> None:
        """Tell the other instances this one is alive, four times per timeout."""
        interval = min(1.0, self.settings.instance_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat to Redis failed: %s", exc)

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
                self._listening.clear()  # no one joins here until it is renewed
                while not await self._renew_subscription():
                    await asyncio.sleep(0.2)
                self._listening.set()
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
            while wanted := {self._changed, *self._subscriptions} - done:
                await self._pubsub.subscribe(*wanted)  # joins meanwhile: their channels too
                done |= wanted
        except (RedisError, OSError):
            return False
        log.info("Redis subscription renewed (%d channels)", len(done))
        return True

    def _deliver(self, channel: bytes, data: dict[str, Any]) -> None:
        inbound = self._inbound
        assert inbound is not None
        if channel == self._changed:
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

    async def _write(self) -> None:
        """Publications and progress writes, in order, pipelined."""
        while True:
            if not self._outgoing:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._outgoing, WRITE_BATCH))
            try:
                async with self.r.pipeline(transaction=False) as pipe:
                    for kind, args in batch:
                        if kind == "publish":
                            pipe.publish(*args)
                        else:
                            await self._progress(keys=[args[0]], args=args[1:], client=pipe)
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

    def _queue(self, kind: str, *args: Any) -> None:
        if len(self._outgoing) >= 100_000:
            log.error("dropping a publication: %d wait for Redis", len(self._outgoing))
            return
        self._outgoing.append((kind, args))
        self._wake.set()

    def _publish(self, channel: bytes, data: dict[str, Any]) -> None:
        self._queue("publish", channel, json.dumps(data))

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

    # --- transfer records ------------------------------------------------------------

    def _adopt(self, fresh: Transfer) -> Transfer:
        """This instance's copy of a record just read: the cached object, brought up to
        date (progress only if the stored one is newer than what was seen here), so
        that references held elsewhere (the relay's routes) stay current."""
        cached = self._cache.get(fresh.transfer_id)
        if cached is None:
            self._cache[fresh.transfer_id] = fresh
            return fresh
        for name in _STATE_FIELDS:
            setattr(cached, name, getattr(fresh, name))
        if fresh.last_activity > cached.last_activity + 1e-6:
            cached.chunks_sent = fresh.chunks_sent
            cached.bytes_transferred = fresh.bytes_transferred
            cached.last_activity = fresh.last_activity
            cached.meter = fresh.meter
        return cached

    @_unavailable
    async def create(self, offer: Offer, sender_id: str, room_id: str) -> Transfer:
        self.limits.check_size(offer.file_size)
        tid = str(offer.transfer_id)
        record = Transfer.from_offer(offer, sender_id, room_id, mono=self.clock.monotonic())
        parties = list(dict.fromkeys((sender_id, offer.receiver_id)))
        key = self._k("t", tid)
        user_sets = [self._k("live", "u", u) for u in parties]
        room_set = self._k("live", "r", room_id)
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, room_set, *user_sets)
                    if await pipe.exists(key):
                        raise ProtocolError(f"transfer {tid} is already known here")
                    live = {
                        u: int(await pipe.scard(s)) for u, s in zip(parties, user_sets, strict=True)
                    }
                    self.limits.check_counts(live, room_id, int(await pipe.scard(room_set)))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, mapping=encode_record(record, self.clock))  # type: ignore[arg-type]
                    for s in (*user_sets, room_set, self._k("live")):
                        pipe.sadd(s, tid)
                    for u in parties:
                        pipe.sadd(self._k("all", "u", u), tid)
                    pipe.zadd(self._k("recent"), {tid: self.clock.time()})
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        return self._adopt(record)

    @_unavailable
    async def get(self, transfer_id: str) -> Transfer:
        fields = await self.r.hgetall(self._k("t", transfer_id))
        if not fields:
            self._cache.pop(transfer_id, None)
            raise UnknownTransfer(transfer_id)
        return self._adopt(decode_record(fields, self.clock))

    def peek(self, transfer_id: str) -> Transfer | None:
        return self._cache.get(transfer_id)

    @_unavailable
    async def apply(
        self,
        transfer_id: str,
        event: Event,
        *,
        code: str | None = None,
        error: str | None = None,
        sha256: str | None = None,
    ) -> Transfer:
        key = self._k("t", transfer_id)
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    fields = await pipe.hgetall(key)
                    if not fields:
                        raise UnknownTransfer(transfer_id)
                    record = decode_record(fields, self.clock)
                    record.change(
                        event,
                        wall=self.clock.time(),
                        mono=self.clock.monotonic(),
                        code=code,
                        error=error,
                        sha256=sha256,
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, mapping=encode_record(record, self.clock))  # type: ignore[arg-type]
                    if not record.live:
                        self._end_record(pipe, record)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        self._publish(self._changed, {"o": self.instance_id, "tid": transfer_id})
        cached = self._adopt(record)
        if event in (Event.ACCEPT, Event.COMPLETE):  # their progress is the record's now
            cached.chunks_sent = record.chunks_sent
            cached.bytes_transferred = record.bytes_transferred
            cached.last_activity = record.last_activity
        return cached

    def _end_record(self, pipe: Any, r: Transfer) -> None:
        """In a MULTI: an ended record leaves the live sets and expires in an hour."""
        tid = r.transfer_id
        for s in (
            self._k("live"),
            self._k("live", "u", r.sender_id),
            self._k("live", "u", r.receiver_id),
            self._k("live", "r", r.room_id),
            self._k("dp"),
        ):
            pipe.srem(s, tid)
        pipe.expire(self._k("t", tid), int(KEEP_FINISHED))

    def save_progress(self, record: Transfer) -> None:
        offset = self.clock.time() - self.clock.monotonic()
        self._queue(
            "progress",
            self._k("t", record.transfer_id),
            str(record.chunks_sent),
            str(record.bytes_transferred),
            repr(record.last_activity + offset),
            repr(record.meter.rate()),
        )

    async def _fetch(self, tids: Iterable[bytes | str]) -> list[tuple[str, Transfer | None]]:
        names = [t.decode() if isinstance(t, bytes) else t for t in tids]
        async with self.r.pipeline(transaction=False) as pipe:
            for tid in names:
                pipe.hgetall(self._k("t", tid))
            rows = await pipe.execute()
        found: list[tuple[str, Transfer | None]] = []
        for tid, fields in zip(names, rows, strict=True):
            found.append((tid, self._adopt(decode_record(fields, self.clock)) if fields else None))
        return found

    @_unavailable
    async def records(
        self, *, user: str | None = None, room: str | None = None, live_only: bool = False
    ) -> list[Transfer]:
        if user is None:
            index = self._k("live") if live_only else self._k("recent")
            found = await (self.r.smembers(index) if live_only else self.r.zrange(index, 0, -1))
        else:
            index = self._k("live", "u", user) if live_only else self._k("all", "u", user)
            found = await self.r.smembers(index)
        rows = await self._fetch(sorted(_text(t) for t in cast(Iterable[bytes], found)))
        gone = [tid for tid, record in rows if record is None]
        if gone and user is not None:  # expired records leave the user's index
            await self.r.srem(index, *gone)
        return [
            r
            for _, r in rows
            if r is not None and (room is None or r.room_id == room) and (r.live or not live_only)
        ]

    @_unavailable
    async def sweep(self) -> list[Transfer]:
        for tid, cached in list(self._cache.items()):
            if not cached.live and self.clock.monotonic() - cached.last_activity > 60:
                del self._cache[tid]
        if not await self.r.set(self._k("sweep"), self.instance_id, nx=True, px=900):
            return []  # another instance sweeps this second
        await self.r.zremrangebyscore(
            self._k("recent"), "-inf", self.clock.time() - self.limits.expiry - KEEP_FINISHED
        )
        ended: list[Transfer] = []
        for tid, record in await self._fetch(await self.r.smembers(self._k("live"))):
            if record is None:
                await self.r.srem(self._k("live"), tid)
                continue
            due = self.limits.overdue(record, self.clock.monotonic())
            if due is None:
                continue
            event, code, message = due
            try:
                ended.append(await self.apply(tid, event, code=code, error=message))
            except (UnknownTransfer, InvalidTransition):  # ended meanwhile
                continue
        return ended

    @_unavailable
    async def mark_disconnect_paused(self, transfer_id: str) -> None:
        await self.r.sadd(self._k("dp"), transfer_id)

    @_unavailable
    async def take_disconnect_paused(self, transfer_id: str) -> bool:
        return bool(await self.r.srem(self._k("dp"), transfer_id))

    # --- presence --------------------------------------------------------------------

    def _who(self, room_id: str, user_id: str) -> str:
        return json.dumps([room_id, user_id])

    @_unavailable
    async def join(self, room_id: str, user_id: str, conn_id: str) -> bool:
        if not self._listening.is_set():  # a participant joined now would miss messages
            try:
                await asyncio.wait_for(self._listening.wait(), 5.0)
            except TimeoutError:
                raise BackendUnavailable("the subscription to Redis is not back yet") from None
        channel = self._user_channel(room_id, user_id)
        self._user_channels[channel] = (room_id, user_id)
        await self._subscribe(channel)  # before anyone can see them in the room
        room_channel = self._room_channel(room_id)
        self._room_channels[room_channel] = room_id
        await self._subscribe(room_channel)
        try:
            returning, previous = await self._join(
                keys=[self._k("m", room_id), self._k("g"), self._k("i", self.instance_id, "m")],
                args=[user_id, f"{self.instance_id}/{conn_id}", self._who(room_id, user_id)],
            )
        except BaseException:
            await self._unsubscribe_member(room_id, user_id)
            raise
        if previous:  # a connection of theirs elsewhere (or here) is replaced
            self._publish(channel, {"k": "kick", "c": conn_id})
        return bool(returning)

    @_unavailable
    async def leave(self, room_id: str, user_id: str, conn_id: str, grace: float) -> bool:
        left = await self._leave(
            keys=[self._k("m", room_id), self._k("g"), self._k("i", self.instance_id, "m")],
            args=[
                user_id,
                f"{self.instance_id}/{conn_id}",
                self._who(room_id, user_id),
                repr(self.clock.time() + grace),
                self.instance_id,
            ],
        )
        await self._unsubscribe_member(room_id, user_id)
        return bool(left)

    async def _unsubscribe_member(self, room_id: str, user_id: str) -> None:
        channel = self._user_channel(room_id, user_id)
        if await self._unsubscribe(channel):
            self._user_channels.pop(channel, None)
        room_channel = self._room_channel(room_id)
        if await self._unsubscribe(room_channel):
            self._room_channels.pop(room_channel, None)

    @_unavailable
    async def members(self, room_id: str) -> list[str]:
        return sorted(_text(u) for u in await self.r.hkeys(self._k("m", room_id)))

    @_unavailable
    async def is_member(self, room_id: str, user_id: str) -> bool:
        return bool(await self.r.hexists(self._k("m", room_id), user_id))

    @_unavailable
    async def graces_over(self) -> list[tuple[str, str]]:
        due = await self._claim_due(keys=[self._k("g")], args=[repr(self.clock.time())])
        return [(room_id, user_id) for room_id, user_id in map(json.loads, due)]

    @_unavailable
    async def orphans(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for raw in await self.r.smembers(self._k("insts")):
            inst = _text(raw)
            if inst == self.instance_id or await self.r.exists(self._k("i", inst)):
                continue
            if not await self.r.srem(self._k("insts"), inst):
                continue  # another instance claimed it first
            hosted = self._k("i", inst, "m")
            deadline = repr(self.clock.time() + self.settings.reconnect_grace)
            gone = 0
            for entry in await self.r.smembers(hosted):
                room_id, user_id = json.loads(entry)
                if await self._reap(
                    keys=[self._k("m", room_id), self._k("g")],
                    args=[user_id, inst, entry, deadline],
                ):
                    found.append((room_id, user_id))
                    gone += 1
            await self.r.delete(hosted)
            if gone:
                log.warning("instance %s stopped answering; %d participants left", inst, gone)
        return found

    # --- delivery to other instances -------------------------------------------------

    def publish_to_user(self, room_id: str, user_id: str, text: str) -> None:
        self._publish(self._user_channel(room_id, user_id), {"k": "m", "t": text})

    def publish_to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        self._publish(self._room_channel(room_id), {"o": self.instance_id, "x": exclude, "t": text})

    # --- the relay between instances -------------------------------------------------

    def _seal(self, transfer_id: str) -> FrameSeal:
        seal = self._seals.get(transfer_id)
        if seal is None:
            if len(self._seals) > 256:
                self._seals.clear()
            seal = self._seals[transfer_id] = FrameSeal(self._secret, transfer_id)
        return seal

    @_unavailable
    async def relay_push(self, record: Transfer, frame: bytes, *, wait: bool) -> bool:
        tid = record.transfer_id
        key = self._k("q", tid)
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
        sealed = self._seal(tid).seal(frame)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hget(self._k("t", tid), "status")
            pipe.rpush(key, sealed)
            pipe.pexpire(key, int(self.settings.expiry * 1000))
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
        channel = self._user_channel(record.room_id, record.receiver_id)
        self._publish(channel, {"k": "relay", "tid": tid})

    @_unavailable
    async def relay_pop(self, transfer_id: str, timeout: float) -> Sequence[bytes]:
        popped = await self.r.blmpop(
            timeout, 1, self._k("q", transfer_id), direction="LEFT", count=POP_BATCH
        )
        if not popped:
            return ()
        seal = self._seal(transfer_id)
        frames: list[bytes] = []
        for sealed in cast(list[bytes], popped[1]):
            frame = seal.open(sealed)
            if frame is None:  # not ours, or tampered with: dropped; the receiver asks again
                log.error("a relayed frame of %s failed authentication; dropped", transfer_id)
            else:
                frames.append(frame)
        return frames

    @_unavailable
    async def relay_drop(self, transfer_id: str) -> None:
        self._queued.pop(transfer_id, None)
        self._announced.pop(transfer_id, None)
        await self.r.delete(self._k("q", transfer_id))

    # --- per-room relay bandwidth ----------------------------------------------------

    @_unavailable
    async def take_bandwidth(self, room_id: str, nbytes: int) -> None:
        rate = float(self.settings.room_bandwidth)
        if not rate:
            return
        wait = float(await self._bucket(keys=[self._k("bw", room_id)], args=[rate, rate, nbytes]))
        if wait > 0:
            await asyncio.sleep(wait)
