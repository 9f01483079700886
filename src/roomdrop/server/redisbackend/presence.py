"""Who is in which room, across instances: membership (with each participant's device
key), grace windows, the participants each instance hosts (so that a vanished
instance's can be let go), and delivery to a participant or a room wherever they are
connected. Lua scripts keep each change atomic."""

from __future__ import annotations

import asyncio
import json
import logging

import redis.asyncio as aioredis

from roomdrop.clock import Clock
from roomdrop.exceptions import BackendUnavailable
from roomdrop.server.backend import Seen
from roomdrop.server.redisbackend.bus import Bus
from roomdrop.server.redisbackend.common import Keys, text, unavailable

__all__ = ["Presence"]

log = logging.getLogger("roomdrop.server")

_JOIN = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
else
  redis.call('HDEL', KEYS[4], ARGV[1])
end
local away = redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
if prev then return {1, prev} end
return {away, ''}
"""
_LEAVE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
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
  redis.call('HDEL', KEYS[3], ARGV[1])
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


class Presence:
    """The presence part of :class:`~roomdrop.server.redisbackend.RedisBackend`."""

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        bus: Bus,
        clock: Clock,
        reconnect_grace: float,
        seen_ttl: float = 7 * 86_400.0,
    ) -> None:
        self.seen_ttl = seen_ttl
        """How long a room's ``seen`` hash outlives its last write (ROOMDROP_STORE_TTL:
        no file may be kept for someone seen longer ago), so that the hash of a room
        nobody visits any more goes too; its stale entries go when it is read."""
        self.r = r
        self.keys = keys
        self.bus = bus
        self.clock = clock
        self.reconnect_grace = reconnect_grace
        self.instance_id = bus.instance_id
        self._join = r.register_script(_JOIN)
        self._leave = r.register_script(_LEAVE)
        self._reap = r.register_script(_REAP)
        self._claim_due = r.register_script(_CLAIM_DUE)

    def _member_keys(self) -> list[str]:
        k = self.keys.k
        return [k("g"), k("i", self.instance_id, "m")]

    @unavailable
    async def join(self, room_id: str, user_id: str, conn_id: str, key: str | None = None) -> bool:
        if not self.bus.listening.is_set():  # a participant joined now would miss messages
            try:
                await asyncio.wait_for(self.bus.listening.wait(), 5.0)
            except TimeoutError:
                raise BackendUnavailable("the subscription to Redis is not back yet") from None
        await self.bus.subscribe_member(room_id, user_id)  # before anyone can see them
        try:
            returning, previous = await self._join(
                keys=[self.keys.k("m", room_id), *self._member_keys(), self.keys.k("k", room_id)],
                args=[
                    user_id,
                    f"{self.instance_id}/{conn_id}",
                    self.keys.who(room_id, user_id),
                    key or "",
                ],
            )
        except BaseException:
            await self.bus.unsubscribe_member(room_id, user_id)
            raise
        await self._saw(room_id, user_id, key)
        if previous:  # a connection of theirs elsewhere (or here) is replaced
            self.bus.publish(self.keys.user_channel(room_id, user_id), {"k": "kick", "c": conn_id})
        return bool(returning)

    @unavailable
    async def leave(self, room_id: str, user_id: str, conn_id: str, grace: float) -> bool:
        left = await self._leave(
            keys=[self.keys.k("m", room_id), *self._member_keys(), self.keys.k("k", room_id)],
            args=[
                user_id,
                f"{self.instance_id}/{conn_id}",
                self.keys.who(room_id, user_id),
                repr(self.clock.time() + grace),
                self.instance_id,
            ],
        )
        await self.bus.unsubscribe_member(room_id, user_id)
        if left:
            seen = await self.r.hget(self.keys.k("seen", room_id), user_id)
            key = json.loads(seen)["key"] if seen else None
            await self._saw(room_id, user_id, key)
        return bool(left)

    async def _saw(self, room_id: str, user_id: str, key: str | None) -> None:
        await self._note_seen(room_id, user_id, key, self.clock.time(), only_new=False)

    @unavailable
    async def remember(self, room_id: str, user_id: str, key: str, at: float) -> None:
        await self._note_seen(room_id, user_id, key, at, only_new=True)

    async def _note_seen(
        self, room_id: str, user_id: str, key: str | None, at: float, *, only_new: bool
    ) -> None:
        """``user_id`` seen in ``room_id`` at ``at`` (``only_new``: unless known already);
        the room's hash then lives ``seen_ttl`` more seconds, and a minute to spare."""
        entry = json.dumps({"key": key, "at": at})
        seen = self.keys.k("seen", room_id)
        async with self.r.pipeline(transaction=True) as pipe:
            (pipe.hsetnx if only_new else pipe.hset)(seen, user_id, entry)
            pipe.expire(seen, int(self.seen_ttl) + 60)
            await pipe.execute()

    @unavailable
    async def seen(self, room_id: str, since: float) -> dict[str, Seen]:
        k = self.keys.k
        found = await self.r.hgetall(k("seen", room_id))
        members = set(await self.members(room_id))
        now, seen, gone = self.clock.time(), {}, []
        for user, raw in found.items():
            entry = json.loads(raw)
            name = text(user)
            if name in members:
                seen[name] = Seen(entry["key"], now)
            elif entry["at"] >= since:
                seen[name] = Seen(entry["key"], float(entry["at"]))
            else:
                gone.append(name)
        if gone:  # forgotten: no file may be kept for them any more
            await self.r.hdel(k("seen", room_id), *gone)
        return seen

    @unavailable
    async def members(self, room_id: str) -> list[str]:
        return sorted(text(u) for u in await self.r.hkeys(self.keys.k("m", room_id)))

    @unavailable
    async def is_member(self, room_id: str, user_id: str) -> bool:
        return bool(await self.r.hexists(self.keys.k("m", room_id), user_id))

    @unavailable
    async def device_keys(self, room_id: str) -> dict[str, str]:
        found = await self.r.hgetall(self.keys.k("k", room_id))
        return {text(user): text(key) for user, key in found.items()}

    @unavailable
    async def graces_over(self) -> list[tuple[str, str]]:
        due = await self._claim_due(keys=[self.keys.k("g")], args=[repr(self.clock.time())])
        return [(room_id, user_id) for room_id, user_id in map(json.loads, due)]

    @unavailable
    async def orphans(self) -> list[tuple[str, str]]:
        k = self.keys.k
        found: list[tuple[str, str]] = []
        for raw in await self.r.smembers(k("insts")):
            inst = text(raw)
            if inst == self.instance_id or await self.r.exists(k("i", inst)):
                continue
            if not await self.r.srem(k("insts"), inst):
                continue  # another instance claimed it first
            hosted = k("i", inst, "m")
            deadline = repr(self.clock.time() + self.reconnect_grace)
            gone = 0
            for entry in await self.r.smembers(hosted):
                room_id, user_id = json.loads(entry)
                if await self._reap(
                    keys=[k("m", room_id), k("g"), k("k", room_id)],
                    args=[user_id, inst, entry, deadline],
                ):
                    found.append((room_id, user_id))
                    gone += 1
            await self.r.delete(hosted)
            if gone:
                log.warning("instance %s stopped answering; %d participants left", inst, gone)
        return found

    def publish_to_user(self, room_id: str, user_id: str, text: str) -> None:
        self.bus.publish(self.keys.user_channel(room_id, user_id), {"k": "m", "t": text})

    def publish_to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        data = {"o": self.instance_id, "x": exclude, "t": text}
        self.bus.publish(self.keys.room_channel(room_id), data)
