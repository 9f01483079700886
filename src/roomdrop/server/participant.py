"""A participant: one user's WebSocket in one room, on this instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID, uuid4

from roomdrop.protocol.chunks import chunk_length
from roomdrop.protocol.frames import ChunkAssembler
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
    """What the relay's fast path needs of a transfer, computed once."""

    tid: str
    record: Transfer
    last_index: int
    last_length: int

    @classmethod
    def of(cls, record: Transfer) -> Route:
        last = record.total_chunks - 1
        length = chunk_length(last, record.file_size, record.chunk_size)
        return cls(record.transfer_id, record, last, length)
