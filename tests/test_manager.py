"""FileTransferManager: the seed's API, from a sender's and a receiver's side."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest

from roomdrop import (
    BadChecksum,
    ChunkOutOfRange,
    ChunkRejected,
    ChunkSizeMismatch,
    FileTooLarge,
    FileTransferManager,
    IntegrityError,
    InvalidTransition,
    ManualClock,
    ProtocolError,
    StorageError,
    TooManyTransfers,
    TransferNotActive,
    UnknownTransfer,
)
from roomdrop.exceptions import E2EError
from roomdrop.protocol.frames import decode_frame, decode_json_chunk, encode_json_chunk

SEED_FIELDS = {
    "transfer_id",
    "room_id",
    "sender_id",
    "receiver_id",
    "filename",
    "file_size",
    "chunk_size",
    "total_chunks",
    "chunks_sent",
    "status",
    "progress_percent",
    "bytes_transferred",
    "started_at",
    "completed_at",
    "error",
}


def write_file(path: Path, size: int, seed: int = 0) -> Path:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB, deterministic
    with path.open("wb") as f:
        while size > 0:
            f.write(block[: min(size, len(block))])
            size -= len(block)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def transfer_all(m: FileTransferManager, tid: str, order: list[int] | None = None) -> None:
    total = (await m.get_progress(tid))["total_chunks"]
    for i in order if order is not None else range(total):
        await m.receive_chunk(tid, i, await m.send_chunk(tid, i))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write_file(tmp_path / "report.pdf", 1_000_000)


@pytest.fixture
def manager(tmp_path: Path) -> FileTransferManager:
    return FileTransferManager(download_dir=tmp_path / "downloads")


def test_the_seeds_methods_keep_their_names_and_parameters() -> None:
    expected = {
        "create_offer": ["file_path", "sender_id", "receiver_id", "room_id"],
        "accept_transfer": ["transfer_id"],
        "reject_transfer": ["transfer_id", "reason"],
        "send_chunk": ["transfer_id", "chunk_index"],
        "receive_chunk": ["transfer_id", "chunk_index", "data"],
        "get_progress": ["transfer_id"],
        "pause_transfer": ["transfer_id"],
        "resume_transfer": ["transfer_id"],
        "cancel_transfer": ["transfer_id"],
        "get_user_transfers": ["user_id", "status"],
    }
    for name, params in expected.items():
        method = getattr(FileTransferManager, name)
        assert inspect.iscoroutinefunction(method), name
        assert list(inspect.signature(method).parameters)[1 : 1 + len(params)] == params
    assert FileTransferManager().chunk_size == 64 * 1024


async def test_one_manager_holding_both_ends_delivers_a_verified_file(
    manager: FileTransferManager, src: Path
) -> None:
    offer = await manager.create_offer(src, "alice", "bob", "room1")
    assert offer["sha256"] == sha(src)
    assert offer["total_chunks"] == 16 and offer["status"] == "pending"
    tid = offer["transfer_id"]
    assert await manager.accept_transfer(tid) is True
    await transfer_all(manager, tid, order=list(reversed(range(16))))
    progress = await manager.get_progress(tid)
    assert progress["status"] == "completed"
    assert progress["progress_percent"] == 100.0
    assert progress["completed_at"] is not None
    saved = Path(progress["saved_path"])
    assert saved.name == "report.pdf" and sha(saved) == sha(src)
    assert sorted(p.name for p in saved.parent.iterdir()) == [".roomdrop-parts", "report.pdf"]
    assert list((saved.parent / ".roomdrop-parts").iterdir()) == []


async def test_progress_is_the_seeds_transfer_object_with_speed_and_eta(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    m = FileTransferManager(download_dir=tmp_path / "dl", clock=clock)
    src = write_file(tmp_path / "document.pdf", 10_485_760)
    tid = (await m.create_offer(src, "user1@example.com", "user2@example.com", "room_123"))[
        "transfer_id"
    ]
    await m.accept_transfer(tid)
    for i in range(85):
        clock.advance(0.01)
        await m.receive_chunk(tid, i, await m.send_chunk(tid, i))
    progress = await m.get_progress(tid)
    assert set(progress) >= SEED_FIELDS
    assert set(progress) - SEED_FIELDS == {
        "error_code",
        "speed_bps",
        "eta_seconds",
        "saved_path",
        "mime_type",
        "sha256",
        "e2e",
        "store",
        "stored_at",
    }
    assert progress["store"] is False and progress["stored_at"] is None
    assert progress["file_size"] == 10_485_760
    assert progress["total_chunks"] == 160
    assert progress["chunks_sent"] == 85
    assert progress["bytes_transferred"] == 5_570_560
    assert progress["progress_percent"] == 53.13
    assert progress["status"] == "active"
    assert progress["started_at"].endswith("Z") and progress["completed_at"] is None
    assert progress["speed_bps"] == pytest.approx(65_536 / 0.01)
    assert progress["eta_seconds"] == pytest.approx((10_485_760 - 5_570_560) / 6_553_600, abs=0.1)


async def test_create_offer_detects_the_mime_type_from_magic_bytes(
    manager: FileTransferManager, tmp_path: Path
) -> None:
    png = tmp_path / "picture.dat"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    assert (await manager.create_offer(png, "a", "b", "r"))["mime_type"] == "image/png"
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert (await manager.create_offer(text, "a", "b", "r"))["mime_type"] == "text/plain"


async def test_a_receive_only_manager_takes_an_offer_from_elsewhere(
    tmp_path: Path, src: Path
) -> None:
    sender = FileTransferManager(download_dir=None)
    receiver = FileTransferManager(download_dir=tmp_path / "inbox")
    tid = (await sender.create_offer(src, "alice", "bob", "room1"))["transfer_id"]
    await receiver.register_offer(sender.offer(tid).model_dump(mode="json"), "alice", "room1")
    await receiver.accept_transfer(tid)
    await sender.accept_transfer(tid)
    assert await receiver.missing_chunks(tid) == list(range(16))
    for i in range(16):
        assert await receiver.receive_chunk(tid, i, await sender.send_chunk(tid, i)) is True
    assert (await sender.get_progress(tid))["chunks_sent"] == 16
    saved = Path((await receiver.get_progress(tid))["saved_path"])
    assert sha(saved) == sha(src)
    assert not (tmp_path / "downloads").exists()  # the sender-only manager wrote nothing


async def test_a_name_that_exists_is_never_overwritten(
    manager: FileTransferManager, tmp_path: Path, src: Path
) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "report.pdf").write_text("precious")
    (downloads / "report (1).pdf").write_text("also precious")
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    await manager.accept_transfer(tid)
    await transfer_all(manager, tid)
    saved = Path((await manager.get_progress(tid))["saved_path"])
    assert saved.name == "report (2).pdf" and sha(saved) == sha(src)
    assert (downloads / "report.pdf").read_text() == "precious"
    assert (downloads / "report (1).pdf").read_text() == "also precious"


async def test_a_duplicate_chunk_is_a_no_op(manager: FileTransferManager, src: Path) -> None:
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    await manager.accept_transfer(tid)
    frame = await manager.send_chunk(tid, 3)
    assert await manager.receive_chunk(tid, 3, frame) is True
    assert await manager.receive_chunk(tid, 3, frame) is False
    assert (await manager.get_progress(tid))["chunks_sent"] == 1


async def test_bad_chunks_are_refused_and_never_counted(
    manager: FileTransferManager, src: Path
) -> None:
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    await manager.accept_transfer(tid)
    good = await manager.send_chunk(tid, 0)
    data = bytes(decode_frame(good).data)
    checksum = hashlib.sha256(data).hexdigest()

    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    with pytest.raises(BadChecksum, match="sha256 does not match"):
        await manager.receive_chunk(tid, 0, bytes(corrupt))
    with pytest.raises(BadChecksum):
        await manager.receive_chunk(tid, 0, b"x" * len(data), checksum=checksum)
    with pytest.raises(ChunkOutOfRange, match=r"index not in 0\.\.15"):
        await manager.receive_chunk(tid, 16, data, checksum=checksum)
    with pytest.raises(ChunkSizeMismatch, match="65535 bytes, expected 65536"):
        await manager.receive_chunk(tid, 0, data[:-1], checksum=checksum)
    with pytest.raises(ChunkRejected, match="frame is for chunk 0"):
        await manager.receive_chunk(tid, 1, good)
    with pytest.raises(ProtocolError, match="shorter than the 72-byte header"):
        await manager.receive_chunk(tid, 0, b"garbage")
    with pytest.raises(UnknownTransfer):
        await manager.receive_chunk("00000000-0000-0000-0000-000000000000", 0, good)
    await manager.pause_transfer(tid)
    with pytest.raises(TransferNotActive, match="transfer is paused"):
        await manager.receive_chunk(tid, 0, good)
    assert await manager.missing_chunks(tid) == list(range(16))
    assert (await manager.get_progress(tid))["chunks_sent"] == 0
    await manager.resume_transfer(tid)
    assert await manager.receive_chunk(tid, 0, data, checksum=checksum) is True


async def test_chunks_are_refused_before_acceptance(
    manager: FileTransferManager, src: Path
) -> None:
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    with pytest.raises(TransferNotActive, match="transfer is pending"):
        await manager.send_chunk(tid, 0)


async def test_illegal_state_changes_raise(manager: FileTransferManager, src: Path) -> None:
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    with pytest.raises(InvalidTransition, match="is pending: cannot pause"):
        await manager.pause_transfer(tid)
    await manager.accept_transfer(tid)
    with pytest.raises(InvalidTransition, match="is active: cannot accept"):
        await manager.accept_transfer(tid)
    with pytest.raises(InvalidTransition, match="is active: cannot reject"):
        await manager.reject_transfer(tid, "too late")
    await manager.cancel_transfer(tid)
    with pytest.raises(InvalidTransition, match="is cancelled: cannot resume"):
        await manager.resume_transfer(tid)
    assert (await manager.get_progress(tid))["status"] == "cancelled"


async def test_cancel_and_reject_remove_partial_files_and_records_at_once(
    manager: FileTransferManager, tmp_path: Path, src: Path
) -> None:
    parts = tmp_path / "downloads" / ".roomdrop-parts"
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    await manager.accept_transfer(tid)
    for i in range(5):
        await manager.receive_chunk(tid, i, await manager.send_chunk(tid, i))
    assert sorted(p.name for p in parts.iterdir()) == ["report.pdf.part", "report.pdf.part.jsonl"]
    await manager.cancel_transfer(tid)
    assert list(parts.iterdir()) == []

    # a part file left by an earlier run, then the same content offered and rejected
    other = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    await manager.accept_transfer(other)
    await manager.receive_chunk(other, 0, await manager.send_chunk(other, 0))
    await manager.close()
    restarted = FileTransferManager(download_dir=tmp_path / "downloads")
    again = (await restarted.create_offer(src, "a", "b", "r"))["transfer_id"]
    assert len(list(parts.iterdir())) == 2
    await restarted.reject_transfer(again, "no thanks")
    progress = await restarted.get_progress(again)
    assert (progress["status"], progress["error"]) == ("rejected", "no thanks")
    assert list(parts.iterdir()) == []


async def test_an_empty_file_completes_on_acceptance(
    manager: FileTransferManager, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    offer = await manager.create_offer(empty, "a", "b", "r")
    assert offer["total_chunks"] == 0
    await manager.accept_transfer(offer["transfer_id"])
    progress = await manager.get_progress(offer["transfer_id"])
    assert progress["status"] == "completed" and progress["progress_percent"] == 100.0
    assert Path(progress["saved_path"]).read_bytes() == b""


async def test_a_source_file_changed_after_the_offer_fails_the_transfer(
    manager: FileTransferManager, src: Path
) -> None:
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    await manager.accept_transfer(tid)
    with src.open("ab") as f:
        f.write(b"more")
    with pytest.raises(StorageError, match="changed since it was offered"):
        await manager.send_chunk(tid, 0)
    assert (await manager.get_progress(tid))["status"] == "failed"


async def test_file_size_limit_is_refused_before_reading(tmp_path: Path, src: Path) -> None:
    m = FileTransferManager(download_dir=tmp_path / "dl", max_file_size=999_999)
    with pytest.raises(FileTooLarge, match="1000000 bytes exceeds the 999999-byte limit"):
        await m.create_offer(src, "a", "b", "r")


async def test_five_live_transfers_per_user_and_ten_per_room(tmp_path: Path, src: Path) -> None:
    m = FileTransferManager(download_dir=tmp_path / "dl")
    ids = [(await m.create_offer(src, "alice", f"r{i}", "room"))["transfer_id"] for i in range(5)]
    with pytest.raises(TooManyTransfers, match="alice already has 5 transfers"):
        await m.create_offer(src, "alice", "bob", "room")
    with pytest.raises(TooManyTransfers, match="r0 already has 5"):
        for i in range(5):
            await m.create_offer(src, f"other{i}", "r0", "elsewhere")
    await m.cancel_transfer(ids[0])  # an ended transfer frees its slot
    await m.create_offer(src, "alice", "bob", "room")

    room = FileTransferManager(download_dir=tmp_path / "dl2")
    for i in range(10):
        await room.create_offer(src, f"s{i}", f"t{i}", "busy")
    with pytest.raises(TooManyTransfers, match="room busy already has 10"):
        await room.create_offer(src, "s99", "t99", "busy")
    await room.create_offer(src, "s99", "t99", "quiet")


async def test_get_user_transfers_lists_a_users_transfers_by_status(
    manager: FileTransferManager, src: Path
) -> None:
    a = (await manager.create_offer(src, "alice", "bob", "r"))["transfer_id"]
    b = (await manager.create_offer(src, "carol", "alice", "r"))["transfer_id"]
    await manager.create_offer(src, "carol", "dave", "r")
    await manager.accept_transfer(b)

    def ids(items: list[dict[str, Any]]) -> set[str]:
        return {t["transfer_id"] for t in items}

    assert ids(await manager.get_user_transfers("alice")) == {a, b}
    assert ids(await manager.get_user_transfers("alice", status="active")) == {b}
    assert ids(await manager.get_user_transfers("alice", status="pending")) == {a}
    assert await manager.get_user_transfers("nobody") == []
    with pytest.raises(ValueError):
        await manager.get_user_transfers("alice", status="teleporting")


async def test_an_idle_active_transfer_is_cancelled_after_30_seconds(
    tmp_path: Path, src: Path
) -> None:
    clock = ManualClock()
    m = FileTransferManager(download_dir=tmp_path / "dl", clock=clock)
    tid = (await m.create_offer(src, "a", "b", "r"))["transfer_id"]
    paused = (await m.create_offer(src, "a", "c", "r"))["transfer_id"]
    pending = (await m.create_offer(src, "a", "d", "r"))["transfer_id"]
    for t in (tid, paused):
        await m.accept_transfer(t)
        await m.receive_chunk(t, 0, await m.send_chunk(t, 0))
    await m.pause_transfer(paused)
    clock.advance(29.0)
    assert await m.sweep() == []
    await m.receive_chunk(tid, 1, await m.send_chunk(tid, 1))  # activity resets the timer
    clock.advance(29.0)
    assert await m.sweep() == []
    clock.advance(1.5)
    assert await m.sweep() == [tid]
    progress = await m.get_progress(tid)
    assert progress["status"] == "cancelled" and "no activity for 30 s" in progress["error"]
    assert progress["error_code"] == "inactive"
    assert (await m.get_progress(paused))["status"] == "paused"
    assert (await m.get_progress(pending))["status"] == "pending"
    assert sorted(p.name for p in (tmp_path / "dl" / ".roomdrop-parts").iterdir()) == [
        "report (1).pdf.part",
        "report (1).pdf.part.jsonl",
    ]  # only the paused transfer's part file remains (same content, so a second name)


async def test_a_transfer_older_than_an_hour_expires_keeping_its_chunks_for_a_new_offer(
    tmp_path: Path, src: Path
) -> None:
    clock = ManualClock()
    m = FileTransferManager(download_dir=tmp_path / "dl", clock=clock, idle_timeout=10_000)
    tid = (await m.create_offer(src, "a", "b", "r"))["transfer_id"]
    await m.accept_transfer(tid)
    for i in range(3):
        await m.receive_chunk(tid, i, await m.send_chunk(tid, i))
    await m.pause_transfer(tid)
    clock.advance(3599)
    assert await m.sweep() == []
    clock.advance(2)
    assert await m.sweep() == [tid]
    progress = await m.get_progress(tid)
    assert progress["status"] == "failed"
    assert (progress["error"], progress["error_code"]) == ("expired after 3600 s", "expired")
    with pytest.raises(TransferNotActive):
        await m.receive_chunk(tid, 3, await m.send_chunk(tid, 3))

    again = (await m.create_offer(src, "a", "b", "r"))["transfer_id"]
    await m.accept_transfer(again)
    assert await m.missing_chunks(again) == list(range(3, 16))
    clock.advance(3601)
    await m.sweep()
    with pytest.raises(UnknownTransfer):  # long-finished records are forgotten
        await m.get_progress(tid)


async def test_stale_part_files_left_by_a_dead_process_are_removed_after_a_day(
    tmp_path: Path, src: Path
) -> None:
    m = FileTransferManager(download_dir=tmp_path / "dl")
    tid = (await m.create_offer(src, "a", "b", "r"))["transfer_id"]
    await m.accept_transfer(tid)
    await m.receive_chunk(tid, 0, await m.send_chunk(tid, 0))
    await m.close()  # the process "dies": part file and record stay
    fresh = FileTransferManager(download_dir=tmp_path / "dl")
    parts = tmp_path / "dl" / ".roomdrop-parts"
    await fresh.sweep()
    assert len(list(parts.iterdir())) == 2
    old = os.stat(parts / "report.pdf.part.jsonl").st_mtime - 24 * 3600 - 100
    os.utime(parts / "report.pdf.part.jsonl", (old, old))
    await fresh.sweep()
    assert list(parts.iterdir()) == []


async def test_the_sending_end_completes_when_the_receiver_confirms_the_file(
    tmp_path: Path, src: Path
) -> None:
    sender = FileTransferManager(download_dir=None)
    tid = (await sender.create_offer(src, "alice", "bob", "r"))["transfer_id"]
    await sender.accept_transfer(tid)
    await sender.sync_progress(tid, missing=range(10, 16))  # the receiver had 0..9
    progress = await sender.get_progress(tid)
    assert (progress["chunks_sent"], progress["bytes_transferred"]) == (10, 655_360)
    for i in range(10, 16):
        await sender.send_chunk(tid, i)
    with pytest.raises(IntegrityError, match="receiver reports sha256 00"):
        await sender.mark_completed(tid, "0" * 64)
    assert await sender.mark_completed(tid, sha(src)) is True
    progress = await sender.get_progress(tid)
    assert (progress["status"], progress["progress_percent"]) == ("completed", 100.0)


async def test_a_chunk_in_the_seeds_json_form_is_received_like_a_binary_frame(
    manager: FileTransferManager, src: Path
) -> None:
    tid = (await manager.create_offer(src, "a", "b", "r"))["transfer_id"]
    await manager.accept_transfer(tid)
    for i in range(16):
        chunk = decode_frame(await manager.send_chunk(tid, i)).to_chunk()
        wire = json.loads(json.dumps(encode_json_chunk(chunk)))
        assert await manager.receive(decode_json_chunk(wire)) is True
    saved = Path((await manager.get_progress(tid))["saved_path"])
    assert sha(saved) == sha(src)


# --- end to end encrypted -------------------------------------------------------------


async def e2e_pair(tmp_path: Path, size: int) -> tuple[Any, Any, str, Path]:
    from roomdrop.e2e import DeviceKey

    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    sender = FileTransferManager()
    receiver = FileTransferManager(download_dir=tmp_path / "dl")
    src = write_file(tmp_path / "secret.bin", size)
    t = await sender.create_offer(
        src, "alice", "bob", "room", device=alice, receiver_key=bob.public_text
    )
    offer = sender.offer(t["transfer_id"])
    assert offer.e2e is not None and offer.e2e.receiver_key == bob.public_text
    await receiver.register_offer(offer, "alice", "room", device=bob)
    for m in (sender, receiver):
        await m.accept_transfer(t["transfer_id"])
    return sender, receiver, t["transfer_id"], src


async def test_an_encrypted_transfer_carries_only_ciphertext_and_saves_the_plaintext(
    tmp_path: Path,
) -> None:
    sender, receiver, tid, src = await e2e_pair(tmp_path, 200_000)
    plain = src.read_bytes()
    for i in range(4):
        frame = await sender.send_chunk(tid, i)
        decoded = decode_frame(frame)
        assert decoded.sealed and decoded.checksum == "0" * 64
        assert decoded.chunk_length == min(65536, 200_000 - i * 65536) + 16
        assert (
            bytes(decoded.data[:-16])
            != plain[i * 65536 : (i + 1) * 65536][: len(decoded.data) - 16]
        )
        await receiver.receive_chunk(tid, i, frame)
    progress = await receiver.get_progress(tid)
    assert progress["status"] == "completed"
    assert Path(progress["saved_path"]).read_bytes() == plain


async def test_a_tampered_or_moved_encrypted_chunk_is_a_bad_checksum_and_stores_nothing(
    tmp_path: Path,
) -> None:
    sender, receiver, tid, _ = await e2e_pair(tmp_path, 200_000)
    frame = bytearray(await sender.send_chunk(tid, 1))
    frame[100] ^= 1
    with pytest.raises(BadChecksum, match="does not decrypt"):
        await receiver.receive_chunk(tid, 1, bytes(frame))
    moved = bytearray(await sender.send_chunk(tid, 1))
    moved[20:24] = (2).to_bytes(4, "big")  # chunk 1's ciphertext presented as chunk 2
    with pytest.raises(BadChecksum, match="chunk 2 does not decrypt"):
        await receiver.receive_chunk(tid, 2, bytes(moved))
    assert await receiver.missing_chunks(tid) == [0, 1, 2, 3]
    await receiver.receive_chunk(tid, 1, await sender.send_chunk(tid, 1))
    assert await receiver.missing_chunks(tid) == [0, 2, 3]


async def test_an_encrypted_offer_to_another_device_is_refused(tmp_path: Path) -> None:
    from roomdrop.e2e import DeviceKey

    sender, _, tid, _ = await e2e_pair(tmp_path, 1000)
    stranger = FileTransferManager(download_dir=tmp_path / "other")
    with pytest.raises(E2EError, match="sealed to the receiver key"):
        await stranger.register_offer(
            sender.offer(tid), "alice", "room", device=DeviceKey.generate()
        )
    with pytest.raises(E2EError, match="has no key"):
        await stranger.register_offer(sender.offer(tid), "alice", "room")


async def test_a_manager_that_only_keeps_records_registers_a_sealed_offer_as_it_is(
    tmp_path: Path,
) -> None:
    """The server's manager (no download_dir) keeps the record of an end-to-end offer,
    its key sealed: it never holds a device key, and never receives a chunk."""
    sender, _, tid, _ = await e2e_pair(tmp_path, 1000)
    keeper = FileTransferManager(download_dir=None)
    record = await keeper.register_offer(sender.offer(tid), "alice", "room")
    assert record["e2e"] == sender.offer(tid).e2e.model_dump(mode="json")  # type: ignore[union-attr]
    await keeper.accept_transfer(tid)
    with pytest.raises(TransferNotActive, match="not receiving"):
        await keeper.receive_chunk(tid, 0, await sender.send_chunk(tid, 0))


async def test_a_restarted_sender_opens_its_own_sealed_copy_of_the_key(tmp_path: Path) -> None:
    from roomdrop.e2e import DeviceKey

    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    first = FileTransferManager()
    src = write_file(tmp_path / "f.bin", 70_000)
    t = await first.create_offer(
        src, "alice", "bob", "room", device=alice, receiver_key=bob.public_text
    )
    e2e = first.offer(t["transfer_id"]).e2e
    again = FileTransferManager()
    await again.create_offer(
        src, "alice", "bob", "room", transfer_id=t["transfer_id"], device=alice, e2e=e2e
    )
    receiver = FileTransferManager(download_dir=tmp_path / "dl")
    await receiver.register_offer(first.offer(t["transfer_id"]), "alice", "room", device=bob)
    for m in (first, again, receiver):
        await m.accept_transfer(t["transfer_id"])
    # chunk 0 from the first run, chunk 1 from the restarted one: one key
    await receiver.receive_chunk(t["transfer_id"], 0, await first.send_chunk(t["transfer_id"], 0))
    await receiver.receive_chunk(t["transfer_id"], 1, await again.send_chunk(t["transfer_id"], 1))
    assert (await receiver.get_progress(t["transfer_id"]))["status"] == "completed"
