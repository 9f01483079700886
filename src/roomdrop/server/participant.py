"""A participant: one user's WebSocket in one room, on this instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID, uuid4

from roomdrop.protocol.chunks import chunk_length
from roomdrop.protocol.frames import FLAG_SEALED, TAG_SIZE, ChunkAssembler
from roomdrop.protocol.messages import Message
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.buckets import TokenBucket
from roomdrop.server.outbox import Outbox

__all__ = ["MAX_ROUTES", "Participant", "Route"]

MAX_ROUTES = 16
"""Transfers a connection's route cache remembers (more: it starts over)."""


@dataclass(eq=False)
class Participant:
    user_id: str
    room_id: str
    outbox: Outbox
    bucket: TokenBucket
    """Its control messages' rate limit."""
    key: str | None = None
    """The device key it published when it joined (``?key=``), if any."""
    conn_id: str = field(default_factory=lambda: uuid4().hex)
    """This connection, among every connection the user ever had (on any instance)."""
    assembler: ChunkAssembler = field(default_factory=lambda: ChunkAssembler(max_partial=2))
    routes: dict[bytes, Route] = field(default_factory=dict)
    """The transfers this connection has relayed whole frames of, by the frame header's
    16 transfer-id bytes: found and checked (this room, this sender) once."""

    def send(self, message: Message) -> None:
        self.outbox.send(message)

    def remember_route(self, record: Transfer) -> None:
        key = UUID(record.transfer_id).bytes
        route = self.routes.get(key)
        if route is None or route.record is not record:
            if len(self.routes) >= MAX_ROUTES:
                self.routes.clear()
            self.routes[key] = Route.of(record)


@dataclass(frozen=True, slots=True)
class Route:
    """What the relay's fast path needs of a transfer, computed once: the frame flags
    its chunks carry (``SEALED`` for an end-to-end encrypted transfer, else none) and
    their lengths on the wire (a sealed chunk is its plaintext and the GCM tag)."""

    tid: str
    record: Transfer
    flags: int
    length: int
    """The length of every chunk but the last, on the wire."""
    last_index: int
    last_length: int

    @classmethod
    def of(cls, record: Transfer) -> Route:
        sealed = record.e2e is not None
        extra = TAG_SIZE if sealed else 0
        last = record.total_chunks - 1
        length = chunk_length(last, record.file_size, record.chunk_size) + extra
        flags = FLAG_SEALED if sealed else 0
        return cls(record.transfer_id, record, flags, record.chunk_size + extra, last, length)
