"""The room-state a resync sends is never older than what the room already heard: a
``user-joined`` delivered while the state was being read (another instance's resync
putting its participant back) makes the hub read the state again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_hub_clock import Socket, sent

from roomdrop.protocol.messages import Message, MessageType, UserEvent
from roomdrop.server.auth import TokenAuthority
from roomdrop.server.hub import Hub
from roomdrop.server.memorybackend import MemoryBackend
from roomdrop.server.settings import Settings


class OvertakenBackend(MemoryBackend):
    """While the hub reads the room's members the first time, carol joins elsewhere and
    her ``user-joined`` reaches this instance: that read answers without her."""

    hub: Hub
    overtaken = False

    async def members(self, room_id: str) -> list[str]:
        before = await super().members(room_id)
        if not self.overtaken:
            self.overtaken = True
            await super().join(room_id, "carol", "elsewhere")
            joined = Message.build(
                MessageType.USER_JOINED, UserEvent(user_id="carol"), room_id=room_id
            )
            self.hub.to_room(room_id, joined.to_json(), None)
        return before


async def test_a_resync_reads_the_room_again_when_a_message_overtook_its_read(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    backend = OvertakenBackend(settings)
    hub = Hub(settings, TokenAuthority("k" * 40), backend=backend)
    backend.hub = hub
    backend.overtaken = True  # the joins below read the room as it is
    alice = await hub.join("room", "alice", Socket())
    bob = await hub.join("room", "bob", Socket())
    writers = [asyncio.create_task(p.outbox.run()) for p in (alice, bob)]
    try:
        backend.overtaken = False
        hub.resync()
        for _ in range(100):
            if len(sent(bob, "room-state")) == 2:
                break
            await asyncio.sleep(0.01)
        messages = bob.outbox.socket.sent  # type: ignore[attr-defined]
        kinds = [(m["type"], m["payload"].get("user_id")) for m in messages]
        last_state = max(i for i, m in enumerate(messages) if m["type"] == "room-state")
        heard = kinds.index(("user-joined", "carol"))
        assert heard < last_state, kinds
        assert messages[last_state]["payload"]["participants"] == ["alice", "bob", "carol"]
    finally:
        for writer in writers:
            writer.cancel()
        await hub.close()
