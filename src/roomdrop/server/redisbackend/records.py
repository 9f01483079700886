"""Transfer records in Redis: created under the limits and changed through the state
table atomically across instances (``WATCH``/``MULTI``), progress written behind the
chunks' back, and this instance's cached copies kept current."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from roomdrop.clock import Clock
from roomdrop.exceptions import InvalidTransition, ProtocolError, UnknownTransfer
from roomdrop.protocol.messages import E2E, Offer
from roomdrop.protocol.state import Event, Status
from roomdrop.protocol.transfer import Limits, Transfer
from roomdrop.server.redisbackend.bus import Bus
from roomdrop.server.redisbackend.common import Keys, text, unavailable

__all__ = ["KEEP_FINISHED", "Records", "decode_record", "encode_record"]

KEEP_FINISHED: Final = 3600.0
"""Seconds an ended transfer's record stays readable."""
STORED_SWEEP_EVERY: Final = 60.0
"""Seconds between two sweeps of the kept files for expiry (at most a tenth of
ROOMDROP_STORE_TTL): the live transfers are swept every second, but the kept ones can
be many, and their expiry is counted in days."""
_PROGRESS_FIELDS: Final = ("chunks_sent", "bytes_transferred", "last_activity", "meter")
_STATE_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(Transfer) if f.name not in _PROGRESS_FIELDS
)
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') == 'active' then
  redis.call('HSET', KEYS[1], 'chunks', ARGV[1], 'bytes', ARGV[2], 'activity', ARGV[3],
             'speed', ARGV[4])
  return 1
end
return 0
"""


def encode_record(r: Transfer, clock: Clock) -> dict[str, str]:
    """The hash fields of a record; monotonic times become epoch seconds (instances
    share no monotonic clock)."""
    offset = clock.time() - clock.monotonic()
    state = {name: getattr(r, name) for name in _STATE_FIELDS}
    state["status"] = r.status.value
    state["created_mono"] = r.created_mono + offset
    if r.stored_mono is not None:
        state["stored_mono"] = r.stored_mono + offset
    state["e2e"] = r.e2e.model_dump(mode="json") if r.e2e is not None else None
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
    if state.get("stored_mono") is not None:
        state["stored_mono"] = float(state["stored_mono"]) - offset
    state["e2e"] = E2E.model_validate(state["e2e"]) if state.get("e2e") else None
    record = Transfer(**state)
    record.chunks_sent = int(fields[b"chunks"])
    record.bytes_transferred = int(fields[b"bytes"])
    record.last_activity = float(fields[b"activity"]) - offset
    _seed_meter(record, float(fields.get(b"speed", b"0")))
    return record


def _seed_meter(record: Transfer, speed: float) -> None:
    record.meter.reset()
    if speed > 0:
        now, nbytes = record.last_activity, record.bytes_transferred
        record.meter.record(now - 1.0, nbytes - int(speed))
        record.meter.record(now, nbytes)


class Records:
    """The records part of :class:`~roomdrop.server.redisbackend.RedisBackend`."""

    def __init__(
        self, r: aioredis.Redis, keys: Keys, bus: Bus, clock: Clock, limits: Limits
    ) -> None:
        self.r = r
        self.keys = keys
        self.bus = bus
        self.clock = clock
        self.limits = limits
        self.cache: dict[str, Transfer] = {}
        """This instance's copy of each record it has read (see :meth:`adopt`)."""
        self._stored_due = 0.0  # monotonic time the kept files are next swept
        self._progress = r.register_script(_PROGRESS)

    def adopt(self, fresh: Transfer) -> Transfer:
        """This instance's copy of a record just read: the cached object, brought up to
        date (progress only if the stored one is newer than what was seen here), so
        that references held elsewhere (the relay's routes) stay current."""
        cached = self.cache.get(fresh.transfer_id)
        if cached is None:
            self.cache[fresh.transfer_id] = fresh
            return fresh
        for name in _STATE_FIELDS:
            setattr(cached, name, getattr(fresh, name))
        if fresh.last_activity > cached.last_activity + 1e-6:
            cached.chunks_sent = fresh.chunks_sent
            cached.bytes_transferred = fresh.bytes_transferred
            cached.last_activity = fresh.last_activity
            cached.meter = fresh.meter
        return cached

    @unavailable
    async def create(self, offer: Offer, sender_id: str, room_id: str) -> Transfer:
        k = self.keys.k
        self.limits.check_size(offer.file_size)
        tid = str(offer.transfer_id)
        record = Transfer.from_offer(offer, sender_id, room_id, mono=self.clock.monotonic())
        parties = list(dict.fromkeys((sender_id, offer.receiver_id)))
        key = k("t", tid)
        user_sets = [k("live", "u", u) for u in parties]
        room_set = k("live", "r", room_id)
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
                    for s in (*user_sets, room_set, k("live")):
                        pipe.sadd(s, tid)
                    for u in parties:
                        pipe.sadd(k("all", "u", u), tid)
                    pipe.zadd(k("recent"), {tid: self.clock.time()})
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        return self.adopt(record)

    @unavailable
    async def get(self, transfer_id: str) -> Transfer:
        fields = await self.r.hgetall(self.keys.k("t", transfer_id))
        if not fields:
            self.cache.pop(transfer_id, None)
            raise UnknownTransfer(transfer_id)
        return self.adopt(decode_record(fields, self.clock))

    @unavailable
    async def apply(
        self,
        transfer_id: str,
        event: Event,
        *,
        code: str | None = None,
        error: str | None = None,
        sha256: str | None = None,
    ) -> Transfer:
        key = self.keys.k("t", transfer_id)
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
                    if record.ended:
                        self._end_record(pipe, record)
                    elif record.status is Status.STORED:  # kept: counts toward no limit
                        self._live_sets(pipe, record, add=False)
                        pipe.sadd(self.keys.k("stored"), transfer_id)
                    elif event is Event.ACCEPT and record.stored_at is not None:
                        self._live_sets(pipe, record, add=True)  # the delivery is live
                        pipe.srem(self.keys.k("stored"), transfer_id)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        self.bus.publish(self.keys.changed, {"o": self.bus.instance_id, "tid": transfer_id})
        cached = self.adopt(record)
        if event in (Event.ACCEPT, Event.COMPLETE):  # their progress is the record's now
            cached.chunks_sent = record.chunks_sent
            cached.bytes_transferred = record.bytes_transferred
            cached.last_activity = record.last_activity
        return cached

    def _end_record(self, pipe: Any, r: Transfer) -> None:
        """In a MULTI: an ended record leaves the live (and stored) sets and expires in
        an hour."""
        k, tid = self.keys.k, r.transfer_id
        self._live_sets(pipe, r, add=False)
        pipe.srem(k("dp"), tid)
        pipe.srem(k("stored"), tid)
        pipe.expire(k("t", tid), int(KEEP_FINISHED))

    def _live_sets(self, pipe: Any, r: Transfer, *, add: bool) -> None:
        k, tid = self.keys.k, r.transfer_id
        for s in (
            k("live"),
            k("live", "u", r.sender_id),
            k("live", "u", r.receiver_id),
            k("live", "r", r.room_id),
        ):
            (pipe.sadd if add else pipe.srem)(s, tid)

    def save_progress(self, record: Transfer) -> None:
        offset = self.clock.time() - self.clock.monotonic()
        self.bus.run_later(
            self._progress,
            [self.keys.k("t", record.transfer_id)],
            [
                str(record.chunks_sent),
                str(record.bytes_transferred),
                repr(record.last_activity + offset),
                repr(record.meter.rate()),
            ],
        )

    async def _fetch(self, tids: Iterable[bytes | str]) -> list[tuple[str, Transfer | None]]:
        names = [text(t) for t in tids]
        async with self.r.pipeline(transaction=False) as pipe:
            for tid in names:
                pipe.hgetall(self.keys.k("t", tid))
            rows = await pipe.execute()
        found: list[tuple[str, Transfer | None]] = []
        for tid, fields in zip(names, rows, strict=True):
            found.append((tid, self.adopt(decode_record(fields, self.clock)) if fields else None))
        return found

    @unavailable
    async def records(
        self, *, user: str | None = None, room: str | None = None, live_only: bool = False
    ) -> list[Transfer]:
        k = self.keys.k
        if user is None:
            index = k("live") if live_only else k("recent")
            found = await (self.r.smembers(index) if live_only else self.r.zrange(index, 0, -1))
        else:
            index = k("live", "u", user) if live_only else k("all", "u", user)
            found = await self.r.smembers(index)
        rows = await self._fetch(sorted(text(t) for t in cast(Iterable[bytes], found)))
        gone = [tid for tid, record in rows if record is None]
        if gone and user is not None:  # expired records leave the user's index
            await self.r.srem(index, *gone)
        return [
            r
            for _, r in rows
            if r is not None and (room is None or r.room_id == room) and (r.live or not live_only)
        ]

    @unavailable
    async def sweep(self, instance_id: str) -> list[Transfer]:
        k = self.keys.k
        for tid, cached in list(self.cache.items()):
            if cached.ended and self.clock.monotonic() - cached.last_activity > 60:
                del self.cache[tid]
        if not await self.r.set(k("sweep"), instance_id, nx=True, px=900):
            return []  # another instance sweeps this second
        await self.r.zremrangebyscore(
            k("recent"), "-inf", self.clock.time() - self.limits.expiry - KEEP_FINISHED
        )
        ended: list[Transfer] = []
        due_sets = [k("live")]
        now = self.clock.monotonic()
        if now >= self._stored_due:
            due_sets.append(k("stored"))
            self._stored_due = now + min(STORED_SWEEP_EVERY, self.limits.store_ttl / 10)
        tids = set().union(*[await self.r.smembers(s) for s in due_sets])
        for tid, record in await self._fetch(tids):
            if record is None:
                await self.r.srem(k("live"), tid)
                await self.r.srem(k("stored"), tid)
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

    @unavailable
    async def mark_disconnect_paused(self, transfer_id: str) -> None:
        await self.r.sadd(self.keys.k("dp"), transfer_id)

    @unavailable
    async def take_disconnect_paused(self, transfer_id: str) -> bool:
        return bool(await self.r.srem(self.keys.k("dp"), transfer_id))
