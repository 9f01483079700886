"""Catching up from ``room-state`` (client/catchup.py), one row of its tables at a time:
each role is given a real manager and files on disk, the server's view is a
``room-state`` made from the manager's own record with the status the server holds,
and the session around the roles is a stand-in that records what they send."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from roomdrop.client.catchup import catch_up_incoming, catch_up_outgoing, transfers_of
from roomdrop.client.configdir import config_dir
from roomdrop.client.errors import NotConnected
from roomdrop.client.incoming import Incoming
from roomdrop.client.keyring import Keyring
from roomdrop.client.outgoing import Outgoing
from roomdrop.client.peerkeys import PeerKeys
from roomdrop.client.settings import ClientSettings
from roomdrop.client.transfers import ReceiveState, Reoffer, Result, SendState, Transport
from roomdrop.e2e import DeviceKey
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.frames import ChunkAssembler, decode_frame
from roomdrop.protocol.messages import (
    Accept,
    Complete,
    Message,
    MessageType,
    RoomState,
    TransferRef,
)
from roomdrop.protocol.state import Status
from roomdrop.protocol.transfer import TransferObject
from roomdrop.storage import scan_source

ROOM, ALICE, BOB = "room", "alice", "bob"
SIZE = 200_000  # four chunks of 64 KiB


class Recorder:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.results: list[Result] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def progress(self, snapshot: dict[str, Any], transport: str) -> None:
        pass

    def finished(self, result: Result) -> None:
        self.results.append(result)


class StandIn:
    """The part of a session the roles use (transfers.Host)."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.room = ROOM
        self.reporter = Recorder()
        self.settings = ClientSettings()
        self.transport: Transport = "relay"
        # trusted keys in the test's XDG_CONFIG_HOME (tests/client/conftest.py)
        self.keyring = Keyring(
            user, DeviceKey.generate(), PeerKeys(config_dir()), server=lambda: "http://server"
        )
        self.server_transfers: dict[str, TransferObject] = {}
        self.sent: list[tuple[MessageType, Any]] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def send(self, kind: MessageType, payload: Any) -> None:
        self.sent.append((kind, payload))

    async def send_frame(self, frame: bytes) -> None:
        raise AssertionError("no chunks are sent while catching up")

    def online(self) -> bool:
        return True

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def wait_for(self, user: str) -> None:
        return None

    def api(self) -> Any:
        raise AssertionError("catching up needs no REST call here")

    def kinds(self) -> list[MessageType]:
        return [kind for kind, _ in self.sent]


def unlimited(download_dir: Path | None) -> FileTransferManager:
    big = 1 << 62
    return FileTransferManager(
        download_dir=download_dir,
        max_file_size=big,
        max_transfers_per_user=big,
        max_transfers_per_room=big,
    )


def source(tmp_path: Path) -> Path:
    path = tmp_path / "photo.bin"
    path.write_bytes(hashlib.sha256(b"seed").digest() * (SIZE // 32) + b"x" * (SIZE % 32))
    return path


def server_view(manager: FileTransferManager, tid: str, status: Status, **more: Any) -> Any:
    """What ``room-state`` lists for ``tid``: the record, with the server's status."""
    snapshot = {**manager.get_transfer(tid).snapshot(), "status": status.value, **more}
    return transfers_of(RoomState(participants=[ALICE, BOB], transfers=[snapshot]))


async def offered(tmp_path: Path) -> tuple[StandIn, Outgoing, SendState]:
    """A sender whose offer the server took (it echoed it back)."""
    host = StandIn(ALICE)
    outgoing = Outgoing(host, unlimited(None), links=None)  # type: ignore[arg-type]
    info = scan_source(source(tmp_path))
    record = await outgoing.manager.create_offer(info.path, ALICE, BOB, ROOM, scanned=info)
    tid = record["transfer_id"]
    out = SendState(tid=tid, peer=BOB, done=outgoing.future(), info=info, offered=True)
    outgoing.states[tid] = out
    return host, outgoing, out


async def receiving(tmp_path: Path, *, chunks: int) -> tuple[StandIn, Incoming, ReceiveState]:
    """A receiver that accepted a transfer and holds its first ``chunks`` chunks."""
    _, sender, out = await offered(tmp_path / "sender")
    host = StandIn(BOB)
    incoming = Incoming(host, unlimited(tmp_path / "inbox"), ask=None)
    offer = sender.manager.offer(out.tid)
    await incoming.manager.register_offer(offer, ALICE, ROOM)
    await incoming.manager.accept_transfer(out.tid)
    await sender.manager.accept_transfer(out.tid)
    for index in range(chunks):
        frame = await sender.manager.send_chunk(out.tid, index)
        chunk = ChunkAssembler(max_partial=1, max_chunk_size=1 << 20).feed(decode_frame(frame))
        assert chunk is not None
        assert await incoming.manager.receive(chunk)
    inc = ReceiveState(tid=out.tid, peer=ALICE, done=incoming.future())
    incoming.states[out.tid] = inc
    return host, incoming, inc


@pytest.fixture(autouse=True)
def _mkdirs(tmp_path: Path) -> None:
    (tmp_path / "sender").mkdir()


# --- the sender ------------------------------------------------------------------------


async def test_a_sender_whose_transfer_the_server_forgot_offers_the_file_again(
    tmp_path: Path,
) -> None:
    _, outgoing, out = await offered(tmp_path)
    await catch_up_outgoing(outgoing, {}, resync=False)
    with pytest.raises(Reoffer):
        await out.done
    assert out.tid not in outgoing


async def test_a_resync_leaves_alone_an_offer_still_on_its_way(tmp_path: Path) -> None:
    _, outgoing, out = await offered(tmp_path)
    out.offered = False  # not echoed yet: the state was taken before the server had it
    await catch_up_outgoing(outgoing, {}, resync=True)
    assert not out.done.done()
    assert out.tid in outgoing


async def test_a_sender_ends_completed_when_the_server_took_the_receivers_complete(
    tmp_path: Path,
) -> None:
    host, outgoing, out = await offered(tmp_path)
    await outgoing.manager.accept_transfer(out.tid)
    sha = outgoing.manager.get_transfer(out.tid).sha256
    await catch_up_outgoing(
        outgoing, server_view(outgoing.manager, out.tid, Status.COMPLETED), resync=False
    )
    result = await out.done
    assert (result.status, result.sha256) == ("completed", sha)
    assert host.reporter.results == [result]


async def test_a_sender_ends_a_transfer_the_server_cancelled_with_its_reason(
    tmp_path: Path,
) -> None:
    _, outgoing, out = await offered(tmp_path)
    view = server_view(
        outgoing.manager, out.tid, Status.CANCELLED, error="sent the wrong file", error_code=None
    )
    await catch_up_outgoing(outgoing, view, resync=False)
    result = await out.done
    assert (result.status, result.error) == ("cancelled", "sent the wrong file")


async def test_a_sender_that_missed_the_accept_queues_every_chunk(tmp_path: Path) -> None:
    _, outgoing, out = await offered(tmp_path)
    assert outgoing.local_status(out) is Status.PENDING
    await catch_up_outgoing(
        outgoing, server_view(outgoing.manager, out.tid, Status.ACTIVE), resync=True
    )
    assert outgoing.local_status(out) is Status.ACTIVE
    assert out.accepted.is_set()
    assert list(out.queue) == [0, 1, 2, 3]
    assert not out.done.done()


async def test_a_sender_pauses_when_the_server_shows_its_transfer_paused(tmp_path: Path) -> None:
    _, outgoing, out = await offered(tmp_path)
    await outgoing.take_accept(out, [(2, 4)])
    assert outgoing.local_status(out) is Status.ACTIVE
    await catch_up_outgoing(
        outgoing, server_view(outgoing.manager, out.tid, Status.PAUSED), resync=False
    )
    assert outgoing.local_status(out) is Status.PAUSED
    assert list(out.queue) == [2, 3]  # what the receiver lacks is still queued


# --- the receiver ----------------------------------------------------------------------


async def test_a_receiver_whose_transfer_the_server_forgot_keeps_its_part_file(
    tmp_path: Path,
) -> None:
    _, incoming, inc = await receiving(tmp_path, chunks=2)
    await catch_up_incoming(incoming, {})
    assert inc.done.cancelled()
    assert inc.tid not in incoming
    record = incoming.manager.get_transfer(inc.tid)
    assert (record.status, record.error_code) == (Status.FAILED, "unknown-transfer")
    parts = list((tmp_path / "inbox").rglob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0


async def test_a_receiver_ends_a_cancelled_transfer_keeping_its_verified_chunks(
    tmp_path: Path,
) -> None:
    _, incoming, inc = await receiving(tmp_path, chunks=2)
    view = server_view(incoming.manager, inc.tid, Status.CANCELLED, error="gone", error_code=None)
    await catch_up_incoming(incoming, view)
    result = await inc.done
    assert (result.status, result.error) == ("cancelled", "gone")
    assert result.bytes_transferred == 2 * 65_536
    assert await incoming.receive_files(1) == [result]
    assert list((tmp_path / "inbox").rglob("*.part")), "the part file was deleted"


async def test_a_receiver_that_missed_a_resume_resumes_and_asks_for_what_it_lacks(
    tmp_path: Path,
) -> None:
    host, incoming, inc = await receiving(tmp_path, chunks=1)
    await incoming.manager.pause_transfer(inc.tid)
    await catch_up_incoming(incoming, server_view(incoming.manager, inc.tid, Status.ACTIVE))
    assert incoming.local_status(inc) is Status.ACTIVE
    requests = [p for kind, p in host.sent if kind is MessageType.FILE_SHARE_CHUNK_REQUEST]
    assert [(r.ranges, r.reason) for r in requests] == [([(1, 4)], "resume")]


def completes(host: StandIn) -> list[Complete]:
    """The ``file-share-complete`` messages the receiver sent."""
    return [p for kind, p in host.sent if kind is MessageType.FILE_SHARE_COMPLETE]


async def test_a_receiver_announces_a_completion_the_server_holds_active_and_has_not_taken(
    tmp_path: Path,
) -> None:
    host, incoming, inc = await receiving(tmp_path, chunks=4)  # verified while away
    assert incoming.local_status(inc) is Status.COMPLETED
    sha = incoming.manager.get_transfer(inc.tid).sha256
    view = server_view(incoming.manager, inc.tid, Status.ACTIVE)
    await catch_up_incoming(incoming, view)
    assert completes(host) == [Complete(transfer_id=inc.tid, sha256=sha)]
    assert not inc.done.done()  # until the server answers with its file-share-complete
    # that answer never came (lost with the socket): the next catch-up announces it again
    await catch_up_incoming(incoming, view)
    assert len(completes(host)) == 2


async def test_a_receiver_announces_a_completion_the_server_holds_paused_on_its_resume(
    tmp_path: Path,
) -> None:
    host, incoming, inc = await receiving(tmp_path, chunks=4)
    sha = incoming.manager.get_transfer(inc.tid).sha256
    await catch_up_incoming(incoming, server_view(incoming.manager, inc.tid, Status.PAUSED))
    assert host.sent == []  # the server refuses to complete a paused transfer
    resume = Message.build(
        MessageType.FILE_SHARE_RESUME, TransferRef(transfer_id=inc.tid, reason="reconnected")
    )
    await incoming.on_resume(resume)
    assert host.sent == [
        (MessageType.FILE_SHARE_COMPLETE, Complete(transfer_id=inc.tid, sha256=sha))
    ]
    assert incoming.local_status(inc) is Status.COMPLETED
    done = Message.build(
        MessageType.FILE_SHARE_COMPLETE, Complete(transfer_id=inc.tid, sha256=sha), sender_id=BOB
    )
    await incoming.on_complete(done)
    result = await inc.done
    assert (result.status, result.sha256) == ("completed", sha)


async def test_a_receiver_considers_a_pending_offer_it_never_saw(tmp_path: Path) -> None:
    _, sender, out = await offered(tmp_path / "sender")
    host = StandIn(BOB)
    incoming = Incoming(host, unlimited(tmp_path / "inbox"), ask=None)
    await catch_up_incoming(incoming, server_view(sender.manager, out.tid, Status.PENDING))
    await asyncio.gather(*host.tasks)
    accepts = [p for kind, p in host.sent if kind is MessageType.FILE_SHARE_ACCEPT]
    assert accepts == [Accept(transfer_id=out.tid, missing=None)]
    assert out.tid in incoming


async def test_a_receiver_whose_accept_was_lost_with_the_connection_sends_it_again(
    tmp_path: Path,
) -> None:
    """The connection went down just as the accept went out: the receiver accepted (its
    record is active), the server still holds the offer pending, and waits for ever
    unless the catch-up sends the accept again."""
    _, sender, out = await offered(tmp_path / "sender")
    host = StandIn(BOB)
    incoming = Incoming(host, unlimited(tmp_path / "inbox"), ask=None)
    down = NotConnected("not connected to the server")

    async def offline(kind: MessageType, payload: Any) -> None:
        raise down

    host.send = offline  # type: ignore[method-assign]
    incoming.on_offer(sender.manager.offer(out.tid), ALICE)
    await asyncio.gather(*host.tasks)
    inc = incoming.states[out.tid]
    assert not inc.done.done(), "a lost accept does not end the transfer"
    assert incoming.local_status(inc) is Status.ACTIVE

    del host.send  # online again: the StandIn's own send records
    await catch_up_incoming(incoming, server_view(sender.manager, out.tid, Status.PENDING))
    accepts = [p for kind, p in host.sent if kind is MessageType.FILE_SHARE_ACCEPT]
    assert accepts == [Accept(transfer_id=out.tid, missing=None)]
    await catch_up_incoming(incoming, server_view(sender.manager, out.tid, Status.ACTIVE))
    assert len([k for k in host.kinds() if k is MessageType.FILE_SHARE_ACCEPT]) == 1
