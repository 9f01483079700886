"""The default backend: everything in this process's memory, nothing else to run.

Records live in a :class:`~roomdrop.manager.FileTransferManager` with no download
directory (the server holds no end of a transfer, only its record, its policy and its
state); presence and grace deadlines in two dicts. Nothing is shared, so delivery to
other instances and the relay between instances have nothing to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from roomdrop.clock import Clock, SystemClock
from roomdrop.exceptions import UnknownTransfer
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.messages import Offer
from roomdrop.protocol.state import Event
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.backend import Inbound, Seen
from roomdrop.server.buckets import TokenBucket
from roomdrop.server.settings import Settings

__all__ = ["MemoryBackend"]


class MemoryBackend:
    shared = False

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.instance_id = "memory"
        self.transfers = FileTransferManager(
            settings.chunk_size,
            download_dir=None,
            max_file_size=settings.max_file_size,
            max_transfers_per_user=settings.max_transfers_per_user,
            max_transfers_per_room=settings.max_transfers_per_room,
            idle_timeout=settings.idle_timeout,
            expiry=settings.expiry,
            store_ttl=settings.store_ttl,
            clock=self.clock,
        )
        self._members: dict[str, dict[str, str]] = {}  # room -> user -> connection
        self._keys: dict[str, dict[str, str]] = {}  # room -> user -> device key
        self._graces: dict[tuple[str, str], float] = {}  # (room, user) -> deadline
        self._seen: dict[str, dict[str, Seen]] = {}  # room -> user -> last key, when
        self._disconnect_paused: set[str] = set()
        self._bandwidth: dict[str, TokenBucket] = {}

    async def start(self, inbound: Inbound) -> None:
        pass

    async def close(self) -> None:
        pass

    # --- transfer records ------------------------------------------------------------

    async def create(self, offer: Offer, sender_id: str, room_id: str) -> Transfer:
        # the record keeps the sealed content key as it came: the server has no device
        # key to open it with (a manager would try), and needs none
        await self.transfers.register_offer(
            offer.model_copy(update={"e2e": None}), sender_id, room_id
        )
        record = self.transfers.get_transfer(str(offer.transfer_id))
        record.e2e = offer.e2e
        return record

    async def get(self, transfer_id: str) -> Transfer:
        return self.transfers.get_transfer(transfer_id)

    def peek(self, transfer_id: str) -> Transfer | None:
        try:
            return self.transfers.get_transfer(transfer_id)
        except UnknownTransfer:
            return None

    async def apply(
        self,
        transfer_id: str,
        event: Event,
        *,
        code: str | None = None,
        error: str | None = None,
        sha256: str | None = None,
    ) -> Transfer:
        m, tid = self.transfers, transfer_id
        if event is Event.ACCEPT:
            await m.accept_transfer(tid)
        elif event is Event.REJECT:
            await m.reject_transfer(tid, error or "")
        elif event is Event.PAUSE:
            await m.pause_transfer(tid)
        elif event is Event.RESUME:
            await m.resume_transfer(tid)
        elif event is Event.CANCEL:
            await m.cancel_transfer(tid, error or "")
        elif event is Event.FAIL:
            await m.fail_transfer(tid, code or "failed", error or "")
        elif event is Event.STORE:
            await m.store_transfer(tid)
        else:
            await m.mark_completed(tid, sha256 or "")
        record = m.get_transfer(tid)
        if not record.live:
            self._disconnect_paused.discard(tid)
        return record

    def save_progress(self, record: Transfer) -> None:
        pass  # the record is the shared one

    async def records(
        self, *, user: str | None = None, room: str | None = None, live_only: bool = False
    ) -> list[Transfer]:
        return [
            r
            for r in self.transfers.records()
            if (user is None or r.involves(user))
            and (room is None or r.room_id == room)
            and (r.live or not live_only)
        ]

    async def sweep(self) -> list[Transfer]:
        ended = [self.transfers.get_transfer(tid) for tid in await self.transfers.sweep()]
        known = {r.transfer_id for r in self.transfers.records() if r.live}
        self._disconnect_paused &= known
        return ended

    async def mark_disconnect_paused(self, transfer_id: str) -> None:
        self._disconnect_paused.add(transfer_id)

    async def take_disconnect_paused(self, transfer_id: str) -> bool:
        if transfer_id in self._disconnect_paused:
            self._disconnect_paused.discard(transfer_id)
            return True
        return False

    # --- presence --------------------------------------------------------------------

    async def join(self, room_id: str, user_id: str, conn_id: str, key: str | None = None) -> bool:
        members = self._members.setdefault(room_id, {})
        returning = self._graces.pop((room_id, user_id), None) is not None
        returning = user_id in members or returning
        members[user_id] = conn_id
        keys = self._keys.setdefault(room_id, {})
        if key is not None:
            keys[user_id] = key
        else:
            keys.pop(user_id, None)
        self._seen.setdefault(room_id, {})[user_id] = Seen(key, self.clock.time())
        return returning

    async def leave(self, room_id: str, user_id: str, conn_id: str, grace: float) -> bool:
        members = self._members.get(room_id, {})
        if members.get(user_id) != conn_id:
            return False
        del members[user_id]
        seen = self._seen.setdefault(room_id, {})
        seen[user_id] = Seen(self._keys.get(room_id, {}).get(user_id), self.clock.time())
        keys = self._keys.get(room_id, {})
        keys.pop(user_id, None)
        if not keys:
            self._keys.pop(room_id, None)
        self._graces[(room_id, user_id)] = self.clock.monotonic() + grace
        return True

    async def members(self, room_id: str) -> list[str]:
        return sorted(self._members.get(room_id, {}))

    async def is_member(self, room_id: str, user_id: str) -> bool:
        return user_id in self._members.get(room_id, {})

    async def device_keys(self, room_id: str) -> dict[str, str]:
        return dict(self._keys.get(room_id, {}))

    async def seen(self, room_id: str, since: float) -> dict[str, Seen]:
        room = self._seen.get(room_id, {})
        for user in [u for u, s in room.items() if s.at < since]:
            del room[user]  # forgotten: no file may be kept for them any more
        now = self.clock.time()
        members = self._members.get(room_id, {})
        return {u: Seen(s.key, now) if u in members else s for u, s in room.items()}

    async def remember(self, room_id: str, user_id: str, key: str, at: float) -> None:
        seen = self._seen.setdefault(room_id, {})
        if user_id not in seen or seen[user_id].at < at:
            seen[user_id] = Seen(key, at)

    async def graces_over(self) -> list[tuple[str, str]]:
        now = self.clock.monotonic()
        over = [key for key, deadline in self._graces.items() if deadline <= now]
        for room_id, user_id in over:
            del self._graces[(room_id, user_id)]
            if not self._members.get(room_id) and not any(r == room_id for r, _ in self._graces):
                self._members.pop(room_id, None)
                self._bandwidth.pop(room_id, None)
        return over

    async def orphans(self) -> list[tuple[str, str]]:
        return []  # one process: no instance can vanish without this one

    # --- delivery to other instances: there are none ---------------------------------

    def publish_to_user(self, room_id: str, user_id: str, text: str) -> None:
        pass

    def publish_to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        pass

    async def relay_push(self, record: Transfer, frame: bytes, *, wait: bool) -> bool:
        return False

    async def relay_pop(self, transfer_id: str, timeout: float) -> Sequence[bytes]:
        await asyncio.sleep(timeout)
        return ()

    async def relay_drop(self, transfer_id: str) -> None:
        pass

    # --- per-room relay bandwidth ----------------------------------------------------

    async def take_bandwidth(self, room_id: str, nbytes: int) -> None:
        rate = float(self.settings.room_bandwidth)
        if not rate:
            return
        bucket = self._bandwidth.get(room_id)
        if bucket is None:
            bucket = self._bandwidth[room_id] = TokenBucket(rate, rate)
        await bucket.take(nbytes)
