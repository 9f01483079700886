"""Where the server keeps what several instances must share: the backend interface.

Theory of operation
-------------------
A :class:`~roomdrop.server.hub.Hub` holds the WebSockets of *its own* participants and
nothing else of lasting value. Everything that must look the same from every instance
of a deployment goes through a :class:`Backend`:

* **transfer records** — created under the plan's limits (checked atomically against
  every instance's transfers), changed only through the state table (atomically: two
  instances acting on one transfer at once cannot both win), progress, and the mark of
  a transfer paused because a party dropped;
* **presence** — who is in which room, on whichever instance, with the device key each
  published, and the grace deadline of each participant that dropped;
* **delivery** — a message for a participant connected to another instance, a room
  broadcast, a transfer changed elsewhere (:class:`Inbound` is how the backend hands
  these to the hub);
* **the relay between instances** — frames a sender's instance verified, on their way
  to the instance the receiver is connected to, bounded and back-pressured;
* **the per-room relay bandwidth** — one token bucket per room, whatever instance
  relays.

Two implementations: :class:`~roomdrop.server.memorybackend.MemoryBackend` (the
default: one process, no other service; delivery and the relay between instances have
nothing to do)
and :class:`~roomdrop.server.redisbackend.RedisBackend` (``ROOMDROP_REDIS_URL``: several
instances sharing rooms through Redis). ``tests/server/test_backends.py`` runs the same
behaviour tests against both.

The hub reads a record it is about to act on with :meth:`Backend.get` (authoritative),
and the relay's per-chunk path reads this instance's copy with :meth:`Backend.peek` (no
I/O; kept current by change notices, at most a few milliseconds behind another
instance's change). Records returned by the backend are this instance's copies: the hub
may record progress on them (:meth:`Transfer.set_progress`) and hand them to
:meth:`Backend.save_progress`, never change their status itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from roomdrop.protocol.messages import Offer
from roomdrop.protocol.state import Event
from roomdrop.protocol.transfer import Transfer

__all__ = ["Backend", "Inbound"]


class Inbound(Protocol):
    """What a backend delivers to the hub from other instances."""

    def to_user(self, room_id: str, user_id: str, text: str) -> None:
        """A control message (JSON) for ``user_id``'s connection here, if any."""

    def to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        """A control message for every participant of the room connected here."""

    def replaced(self, room_id: str, user_id: str, conn_id: str) -> None:
        """``user_id`` joined ``room_id`` again as connection ``conn_id`` (elsewhere):
        another connection of theirs here is closed."""

    def relay_ready(self, room_id: str, user_id: str, transfer_id: str) -> None:
        """Relayed frames of ``transfer_id`` wait for its receiver ``user_id``."""

    def transfer_changed(self, transfer_id: str) -> None:
        """Another instance changed the record's status."""

    def resync(self) -> None:
        """Deliveries may have been lost (the subscription to them broke and was made
        again): every participant here is to be told the state it may have missed."""


@dataclass(frozen=True, slots=True)
class Seen:
    """A user who has been in a room: the device key they last published there (None:
    none), and when they were last there (epoch seconds; now, for those in it)."""

    key: str | None
    at: float


class Backend(Protocol):
    instance_id: str
    """This instance's name among those sharing the backend."""

    shared: bool
    """True if other instances may share this state (then the relay between
    instances and delivery elsewhere are in use)."""

    async def start(self, inbound: Inbound) -> None: ...

    async def close(self) -> None:
        """Stop delivering; this instance's presence is left to the hub to end."""

    # --- transfer records ------------------------------------------------------------

    async def create(self, offer: Offer, sender_id: str, room_id: str) -> Transfer:
        """A new pending record, if the plan's limits allow it (raises
        :class:`~roomdrop.exceptions.PolicyError` if not, and
        :class:`~roomdrop.exceptions.ProtocolError` for an id already in use)."""

    async def get(self, transfer_id: str) -> Transfer:
        """The current record (:class:`~roomdrop.exceptions.UnknownTransfer` if none)."""

    def peek(self, transfer_id: str) -> Transfer | None:
        """This instance's copy of the record, without I/O; None if it has none."""

    async def apply(
        self,
        transfer_id: str,
        event: Event,
        *,
        code: str | None = None,
        error: str | None = None,
        sha256: str | None = None,
    ) -> Transfer:
        """Change the record's status through the state table, atomically; ``code`` and
        ``error`` go with ``fail`` (and ``error`` with ``reject`` and ``cancel``), the
        receiver's ``sha256`` with ``complete``. Raises what the state table raises."""

    def save_progress(self, record: Transfer) -> None:
        """Make ``record``'s progress (set on this instance's copy) the shared one."""

    async def records(
        self, *, user: str | None = None, room: str | None = None, live_only: bool = False
    ) -> list[Transfer]:
        """Records ``user`` is a party to (every record if None), in ``room`` if given."""

    async def sweep(self) -> list[Transfer]:
        """End transfers whose time is up (idle, expired); the records this call ended.
        Forget records that ended long ago."""

    async def mark_disconnect_paused(self, transfer_id: str) -> None:
        """``transfer_id`` was paused because a party dropped (or its instance stopped)."""

    async def take_disconnect_paused(self, transfer_id: str) -> bool:
        """Clear the mark; True if it was set (then the caller resumes the transfer)."""

    # --- presence --------------------------------------------------------------------

    async def join(self, room_id: str, user_id: str, conn_id: str, key: str | None = None) -> bool:
        """``user_id`` is in ``room_id`` as connection ``conn_id`` of this instance
        (a connection of theirs elsewhere is told it is replaced), with the device
        ``key`` it published (None: none, and a key of an earlier connection is
        forgotten); True if they were in the room or within their grace window already."""

    async def leave(self, room_id: str, user_id: str, conn_id: str, grace: float) -> bool:
        """Connection ``conn_id`` ended: unless a newer connection of the user joined
        meanwhile, they leave the room and have ``grace`` seconds to come back. True if
        they left (False: replaced, nothing to do)."""

    async def members(self, room_id: str) -> list[str]:
        """Everyone in the room, on any instance, sorted."""

    async def is_member(self, room_id: str, user_id: str) -> bool: ...

    async def device_keys(self, room_id: str) -> dict[str, str]:
        """The device key of each participant of the room (on any instance) that
        published one."""

    async def seen(self, room_id: str, since: float) -> dict[str, Seen]:
        """Everyone who has been in the room at or after epoch ``since`` (those in it
        now among them), with the device key they last published there: whom a file may
        be kept for (``send --store``), and who the room shows as having been in it."""

    async def remember(self, room_id: str, user_id: str, key: str, at: float) -> None:
        """Count ``user_id`` as seen in the room at ``at`` with ``key``, unless they were
        seen since (a kept file taken up again after a restart)."""

    async def graces_over(self) -> list[tuple[str, str]]:
        """(room, user) of those whose grace window ran out without their return; each
        is handed to exactly one caller, on one instance."""

    async def orphans(self) -> list[tuple[str, str]]:
        """(room, user) of participants whose instance stopped without saying so (it
        missed its heartbeats): they have left, their grace window has begun; each is
        handed to one caller."""

    # --- delivery to other instances -------------------------------------------------

    def publish_to_user(self, room_id: str, user_id: str, text: str) -> None:
        """Deliver ``text`` to ``user_id`` if they are connected to another instance."""

    def publish_to_room(self, room_id: str, text: str, exclude: str | None) -> None:
        """Deliver ``text`` to the room's participants connected to other instances."""

    # --- the relay between instances -------------------------------------------------

    async def relay_push(self, record: Transfer, frame: bytes, *, wait: bool) -> bool:
        """Hand a verified frame to whichever instance the receiver is connected to.
        With ``wait``, waits while the transfer's queue between instances is full; else
        returns False at once if it is. False (nothing queued) if the transfer is not
        active, and always if the backend is not shared."""

    async def relay_pop(self, transfer_id: str, timeout: float) -> Sequence[bytes]:
        """The next frames for the receiver connected here (oldest first), waiting up to
        ``timeout`` seconds; empty if none came."""

    async def relay_drop(self, transfer_id: str) -> None:
        """Discard what waits between instances for ``transfer_id``."""

    # --- per-room relay bandwidth ----------------------------------------------------

    async def take_bandwidth(self, room_id: str, nbytes: int) -> None:
        """Wait until the room's relay bandwidth allows ``nbytes`` more."""
