"""Catching up from ``room-state``: what the server holds is the truth.

The server sends ``room-state`` at every (re)connection, and again on the same
connection when it may have lost messages meant for this end (its Redis subscription
broke: docs/protocol.md §11.11, §13.4). Either way this end aligns with it:

========================  ============================================================
the server says           the sender (:func:`catch_up_outgoing`)
========================  ============================================================
nothing (it restarted)    offers the file again (unless the offer is still on its way)
cancelled/failed/rejected ends it the same way
completed                 ends it as completed (the receiver verified it meanwhile)
stored                    ends it as stored (``send --store``: all in the server's store)
active/paused             takes a missed accept (all chunks queued), then pauses or
                          resumes the local record to match
========================  ============================================================

========================  ============================================================
the server says           the receiver (:func:`catch_up_incoming`)
========================  ============================================================
nothing (it restarted)    forgets it, keeping the part file for the offer again
completed                 ends it as completed
cancelled/failed/rejected ends it, keeping the verified chunks
active, verified here     announces the completion the server has not taken yet
paused, verified here     waits: a paused transfer cannot complete, so the completion
                          goes on the resume that follows (``Incoming.on_resume``)
active/paused             pauses or resumes to match and, active, asks for every chunk
                          it lacks
pending, accepted here    sends the accept again (lost as the connection went down)
pending, not known here   considers the offer it missed
stored, for this end      says it is waiting (the server offers it right after)
active/paused, not known  takes it up from its part file (this receiver restarted)
========================  ============================================================

Each side goes through its role's public methods only.
The page mirrors this module in ``static/catchup.js``.
"""

from __future__ import annotations

import contextlib

from pydantic import ValidationError

from roomdrop.client.errors import NotConnected
from roomdrop.client.incoming import Incoming, offer_of
from roomdrop.client.outgoing import Outgoing
from roomdrop.client.transfers import ENDED
from roomdrop.protocol.messages import RoomState
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject

__all__ = ["catch_up_incoming", "catch_up_outgoing", "transfers_of"]


def transfers_of(state: RoomState) -> dict[str, TransferObject]:
    """The transfers a ``room-state`` lists, by id (an entry that does not parse is
    left out)."""
    known: dict[str, TransferObject] = {}
    for raw in state.transfers:
        try:
            t = TransferObject.model_validate(raw)
        except ValidationError:
            continue
        known[t.transfer_id] = t
    return known


async def catch_up_outgoing(
    outgoing: Outgoing, known: dict[str, TransferObject], *, resync: bool
) -> None:
    for out in outgoing.live():
        held = known.get(out.tid)
        if held is None and resync and not out.offered:
            continue  # the offer was on its way when the state was taken: wait for it
        if held is None:
            outgoing.reoffer(out)
        elif held.status.value in ENDED:
            outgoing.resolve(out, status=held.status.value, error=held.error, code=held.error_code)
        elif held.status is Status.STORED:  # all in the server's store while this end was away
            outgoing.resolve(out, status=held.status.value)
        elif held.status is Status.COMPLETED:
            # the receiver verified it while this end was away (or the message saying so
            # was lost): the server took its file-share-complete, with the offer's sha256
            await outgoing.completed(out, held.sha256 or "")
        else:
            if outgoing.local_status(out) is Status.PENDING and held.status in (
                Status.ACTIVE,
                Status.PAUSED,
            ):
                # accepted while this end was away (or the accept was lost): which chunks
                # the receiver lacks is not known here, so all are queued (it drops those
                # it holds)
                await outgoing.take_accept(out, None)
            await outgoing.align(out, held.status)
        out.wake.set()


async def catch_up_incoming(incoming: Incoming, known: dict[str, TransferObject]) -> None:
    for inc in incoming.live():
        held = known.get(inc.tid)
        if held is None:
            await incoming.forget(inc)
        elif held.status is Status.COMPLETED:
            incoming.resolve_completed(inc)
        elif held.status.value in ENDED:
            await incoming.end(inc, held.status.value, held.error, held.error_code)
        elif held.status is Status.PENDING:
            if incoming.accepted_here(inc):  # the accept was lost as the connection went
                with contextlib.suppress(NotConnected):
                    await incoming.send_accept(inc)
        elif incoming.unannounced(inc):
            # verified here, not taken there: only an active transfer can complete (a
            # paused one is announced on its resume)
            if held.status is Status.ACTIVE:
                await incoming.announce_complete(inc)
        elif await incoming.align(inc, held.status) is Status.ACTIVE:
            await incoming.request_missing(inc, "resume")
    user = incoming.host.user
    kept = [t for t in known.values() if t.receiver_id == user and t.status is Status.STORED]
    for t in kept:  # the server offers each of them now
        incoming.host.reporter.note(
            f"kept for you on the server since {t.stored_at}: {t.filename} "
            f"({t.file_size:,} bytes) from {t.sender_id}"
        )
    for t in known.values():
        if t.receiver_id != user or t.transfer_id in incoming or t.sha256 is None:
            continue
        if t.status in (Status.ACTIVE, Status.PAUSED):
            incoming.host.spawn(incoming.take_up(t), f"take-up-{t.transfer_id}")
        elif t.status is Status.PENDING:
            incoming.on_offer(offer_of(t, user), t.sender_id)
