"""Whether a file may be kept for later (an offer with ``store``, protocol.md §16.1).

The sender's ``store`` is the consent the plan asks for; the server adds its own
conditions: only ciphertext is kept (an end-to-end encrypted offer), only for someone
it has seen in the room with a device key within ``ROOMDROP_STORE_TTL`` (sealed to the
key they last published there), and only within the stored-bytes quotas of the sender
(across rooms) and of the room. Each refusal says which condition failed and how to
meet it.
"""

from __future__ import annotations

import time

from roomdrop.exceptions import E2EError, E2ERequired, StoreQuotaExceeded, UnknownReceiver
from roomdrop.protocol.messages import Offer
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.backend import Backend
from roomdrop.server.settings import Settings

__all__ = ["check_kept_offer", "kept_bytes"]


def kept_bytes(records: list[Transfer]) -> int:
    """The bytes these records hold in the store, or will once uploaded."""
    return sum(
        r.file_size
        for r in records
        if r.store and (r.status is Status.STORED or (r.live and r.stored_at is None))
    )


async def check_kept_offer(
    backend: Backend, settings: Settings, room_id: str, user: str, offer: Offer
) -> None:
    """Raise the precise refusal if ``user``'s ``offer`` may not be kept."""
    e2e = offer.e2e
    if e2e is None:
        raise E2ERequired(
            "only an end-to-end encrypted file may be kept for later: the offer has no "
            "e2e part (the content key sealed to the receiver's device key)"
        )
    since = time.time() - settings.store_ttl
    seen = (await backend.seen(room_id, since)).get(offer.receiver_id)
    if seen is None or seen.key is None:
        raise UnknownReceiver(
            f"{offer.receiver_id!r} has not been in room {room_id!r} with a device key "
            f"in the last {settings.store_ttl:g} s: there is no key to keep the file for "
            "them under"
        )
    if e2e.receiver_key != seen.key:
        raise E2EError(
            f"stale receiver key: the offer names {e2e.receiver_key}, but "
            f"{offer.receiver_id!r} last published {seen.key}"
        )
    size = offer.file_size
    mine = kept_bytes([r for r in await backend.records(user=user) if r.sender_id == user])
    if mine + size > settings.store_quota_user:
        raise StoreQuotaExceeded(
            f"{user} has {mine:,} bytes kept for others; {size:,} more would pass the "
            f"{settings.store_quota_user:,}-byte quota (ROOMDROP_STORE_QUOTA_USER)"
        )
    room = kept_bytes(await backend.records(room=room_id))
    if room + size > settings.store_quota_room:
        raise StoreQuotaExceeded(
            f"room {room_id} has {room:,} bytes kept; {size:,} more would pass the "
            f"{settings.store_quota_room:,}-byte quota (ROOMDROP_STORE_QUOTA_ROOM)"
        )
