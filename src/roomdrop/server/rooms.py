"""The participants connected to this instance, by room, and where a message for one of
them, for both parties of a transfer or for a whole room goes: to a socket here, or
through the backend to the instance that holds it."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from roomdrop.protocol.messages import Message, MessageType
from roomdrop.protocol.transfer import Transfer
from roomdrop.server.backend import Backend
from roomdrop.server.participant import Participant

__all__ = ["Room", "Rooms"]


@dataclass(eq=False)
class Room:
    """A room's participants connected to this instance."""

    room_id: str
    members: dict[str, Participant] = field(default_factory=dict)


class Rooms:
    """This instance's rooms and delivery to participants, here or elsewhere."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.by_id: dict[str, Room] = {}
        """The rooms with a participant connected to this instance, and those participants."""
        self._heard: dict[str, int] = {}

    def heard(self, room_id: str) -> int:
        """How many room messages this instance has handed to ``room_id``'s participants
        (a snapshot of the room taken while this stays the same is not older than any)."""
        return self._heard.get(room_id, 0)

    def counts(self) -> dict[str, int]:
        """Rooms with a participant connected here, and connections to this instance."""
        return {
            "rooms": sum(1 for r in self.by_id.values() if r.members),
            "connections": sum(len(r.members) for r in self.by_id.values()),
        }

    def everyone(self) -> list[tuple[str, str, Participant]]:
        """(room, user, connection) of every participant connected here."""
        return [
            (room_id, user, member)
            for room_id, room in list(self.by_id.items())
            for user, member in list(room.members.items())
        ]

    def add(self, participant: Participant) -> Participant | None:
        """``participant`` is in its room here from now on; the connection of the same
        user it replaces, if any."""
        room = self.by_id.setdefault(participant.room_id, Room(participant.room_id))
        previous = room.members.get(participant.user_id)
        room.members[participant.user_id] = participant
        return previous

    def remove(self, participant: Participant) -> bool:
        """Drop ``participant`` from this instance's rooms; False if a newer connection
        of the same user had replaced it already."""
        room = self.by_id.get(participant.room_id)
        if room is None or room.members.get(participant.user_id) is not participant:
            return False
        del room.members[participant.user_id]
        if not room.members:
            del self.by_id[participant.room_id]
            self._heard.pop(participant.room_id, None)
        return True

    def local(self, room_id: str, user: str) -> Participant | None:
        """``user``'s connection to this instance, if they have one in ``room_id``."""
        room = self.by_id.get(room_id)
        return room.members.get(user) if room else None

    def present(self, room_id: str, user: str) -> Participant | None:
        """``user``'s open connection to this instance in ``room_id``, if any."""
        member = self.local(room_id, user)
        return member if member is not None and not member.outbox.closed else None

    # --- delivery --------------------------------------------------------------------

    def to_local_room(self, room_id: str, text: str, exclude: str | None) -> None:
        """A message for every participant of ``room_id`` connected here but ``exclude``."""
        room = self.by_id.get(room_id)
        if room is not None:
            self._heard[room_id] = self._heard.get(room_id, 0) + 1
        for user, member in list(room.members.items()) if room else ():
            if user != exclude:
                member.outbox.send_text(text)

    def send_to(self, room_id: str, user: str, message: Message) -> None:
        """``message`` to ``user``'s connection, here or on another instance."""
        member = self.local(room_id, user)
        if member is not None:
            member.send(message)
        elif self.backend.shared:
            self.backend.publish_to_user(room_id, user, message.to_json())

    def to_parties(
        self, record: Transfer, kind: MessageType, payload: BaseModel, by: str | None
    ) -> None:
        """``kind`` to both parties of ``record`` (sent by ``by``, or by the server)."""
        message = Message.build(kind, payload, sender_id=by, room_id=record.room_id)
        for user in dict.fromkeys((record.sender_id, record.receiver_id)):
            self.send_to(record.room_id, user, message)

    def broadcast(
        self, room_id: str, kind: MessageType, payload: BaseModel, exclude: str | None = None
    ) -> None:
        """``kind`` to everyone in the room but ``exclude``, here and elsewhere."""
        message = Message.build(kind, payload, room_id=room_id)
        text = message.to_json()
        self.to_local_room(room_id, text, exclude)
        if self.backend.shared:
            self.backend.publish_to_room(room_id, text, exclude)
