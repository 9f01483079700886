"""What a kept file is, written beside it in the store, so that a server whose records
live in its own memory (no Redis) finds its kept files again after a restart.

Beside each stored object ``<transfer id>`` the store holds ``<transfer id>.offer``: the
offer as it came (its sealed content key, which only the two devices can open), its
sender, room and when it was stored. At start (and at each sweep until it worked), a
server without a shared backend makes a ``stored`` record again of each one it does not
know, with its time in the store counted from when it was first stored, and remembers the
two parties' keys as seen in the room then (the receiver checks the sender's key against
it). With Redis the records outlive the instances: nothing to restore.
"""

from __future__ import annotations

import json
import logging
from typing import Final

from roomdrop.clock import Clock
from roomdrop.exceptions import RoomdropError, UnknownTransfer
from roomdrop.protocol.messages import Offer
from roomdrop.protocol.state import Event
from roomdrop.protocol.transfer import Transfer, iso
from roomdrop.server.backend import Backend
from roomdrop.server.store import ObjectStore

__all__ = ["SUFFIX", "offer_of", "restore", "write"]

log = logging.getLogger("roomdrop.server")

SUFFIX: Final = ".offer"


def offer_of(record: Transfer) -> Offer:
    """The offer of a kept file, as its receiver gets it."""
    return record.offer().model_copy(update={"store": True})


async def write(store: ObjectStore, record: Transfer, stored_at: float) -> None:
    """Keep ``record``'s offer beside its object."""
    body = {
        "offer": offer_of(record).model_dump(mode="json"),
        "sender_id": record.sender_id,
        "room_id": record.room_id,
        "stored_at": stored_at,
    }
    key = record.transfer_id + SUFFIX
    upload = await store.begin(key)
    part = await store.put_part(key, upload, 1, json.dumps(body).encode())
    await store.finish(key, upload, [part])


async def restore(store: ObjectStore, backend: Backend, clock: Clock) -> int:
    """Make a ``stored`` record again of every kept file the backend does not know; the
    number restored. A description without its object is deleted."""
    restored = 0
    keys = set(await store.keys())
    for key in sorted(k for k in keys if k.endswith(SUFFIX)):
        tid = key.removesuffix(SUFFIX)
        if tid not in keys:
            await store.delete(key)
            continue
        try:
            await backend.get(tid)
            continue
        except UnknownTransfer:
            pass
        try:
            size = await store.size(key) or 0
            body = json.loads(await store.read(key, 0, size))
            offer = Offer.model_validate(body["offer"])
            sender, room, at = body["sender_id"], body["room_id"], float(body["stored_at"])
            await backend.create(offer, sender, room)
            await backend.apply(tid, Event.ACCEPT)
            record = await backend.apply(tid, Event.STORE)
        except (RoomdropError, ValueError, KeyError, TypeError) as exc:
            log.warning("the kept file %s could not be taken up again: %s", tid, exc)
            continue
        record.stored_at = iso(at)  # its time in the store counts from the first time
        record.stored_mono = clock.monotonic() - (clock.time() - at)
        if offer.e2e is not None:
            await backend.remember(room, sender, offer.e2e.sender_key, at)
            await backend.remember(room, offer.receiver_id, offer.e2e.receiver_key, at)
        restored += 1
    return restored
