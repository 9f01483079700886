"""``room-state``: what a participant is told when it joins (and again after the
server's view of the room was resynchronised)."""

from __future__ import annotations

from dataclasses import dataclass

from roomdrop.clock import Clock
from roomdrop.protocol.messages import Message, MessageType, MimeLists, RoomState, SeenUser
from roomdrop.protocol.transfer import Transfer, iso
from roomdrop.server.backend import Backend, Seen
from roomdrop.server.settings import Settings

__all__ = ["RoomView", "room_state"]


@dataclass(frozen=True, slots=True)
class RoomView:
    """A room as the backend shows it now: who is in it, their device keys, and who has
    been in it within the store's TTL."""

    room_id: str
    participants: list[str]
    keys: dict[str, str]
    seen: dict[str, Seen]

    @classmethod
    async def of(cls, backend: Backend, settings: Settings, clock: Clock, room_id: str) -> RoomView:
        participants = await backend.members(room_id)
        keys = await backend.device_keys(room_id)
        seen = await backend.seen(room_id, clock.time() - settings.store_ttl)
        return cls(room_id, participants, keys, seen)


def room_state(settings: Settings, room: RoomView, records: list[Transfer]) -> Message:
    """``room-state``: who is here and the device key each published, who has been here
    lately (whom a file may be kept for), the newcomer's transfers, and what the server
    requires of transfers (its MIME lists, which the receiving client applies to the
    decrypted content; whether only end-to-end encrypted transfers may travel; whether
    receivers must scan; how many transfers a user may have under way)."""
    state = RoomState(
        participants=room.participants,
        transfers=[r.snapshot() for r in records],
        keys={user: key for user, key in room.keys.items() if user in room.participants},
        mime=MimeLists(allow=settings.mime_allow, deny=settings.mime_deny),
        require_e2e=settings.require_e2e,
        direct=settings.allow_direct,
        require_scan=settings.require_scan,
        seen={u: SeenUser(key=s.key, last_seen=iso(s.at)) for u, s in room.seen.items()},
        max_transfers_per_user=settings.max_transfers_per_user,
    )
    return Message.build(MessageType.ROOM_STATE, state, room_id=room.room_id)
