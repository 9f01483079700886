"""The receiving manager's ``content_check``: chunk 0's plaintext, decrypted or not, is
shown to it before it is written, and a PolicyError it raises fails the transfer and
removes the part file."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomdrop import FileTransferManager
from roomdrop.e2e import DeviceKey
from roomdrop.exceptions import MimeTypeNotAllowed
from roomdrop.protocol.policy import MimePolicy
from roomdrop.protocol.transfer import Transfer
from roomdrop.storage import sniff_mime_type

PNG = b"\x89PNG\r\n\x1a\n" + bytes(150_000)


class Checker:
    """The CLI's check, in small: the declared type against what the content is."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    def __call__(self, record: Transfer, head: bytes) -> None:
        self.seen.append((record.transfer_id, head))
        objection = MimePolicy([], []).objection(record.mime_type, sniff_mime_type(head))
        if objection is not None:
            raise MimeTypeNotAllowed(objection)


async def pair(
    tmp_path: Path, *, sealed: bool, declared: str | None = None
) -> tuple[FileTransferManager, FileTransferManager, str, Checker]:
    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    src = tmp_path / "picture.png"
    src.write_bytes(PNG)
    sender = FileTransferManager(download_dir=None)
    check = Checker()
    receiver = FileTransferManager(download_dir=tmp_path / "inbox", content_check=check)
    keys = {"device": alice, "receiver_key": bob.public_text} if sealed else {}
    t = await sender.create_offer(src, "alice", "bob", "room", **keys)  # type: ignore[arg-type]
    offer = sender.offer(t["transfer_id"])
    if declared is not None:  # a sender that lies about the type (sealed: it seals the lie)
        sender.get_transfer(t["transfer_id"]).mime_type = declared
        if sealed:
            from roomdrop.e2e import seal_offer

            record = sender.get_transfer(t["transfer_id"])
            e2e, key = seal_offer(record, alice, bob.public_text)
            record.e2e = e2e
            from roomdrop.e2e import ChunkCipher

            sender._transfers[t["transfer_id"]].source.cipher = ChunkCipher(  # type: ignore[union-attr]
                key, t["transfer_id"]
            )
        offer = sender.offer(t["transfer_id"])
    await receiver.register_offer(offer, "alice", "room", device=bob if sealed else None)
    for m in (sender, receiver):
        await m.accept_transfer(t["transfer_id"])
    return sender, receiver, t["transfer_id"], check


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "clear"])
async def test_content_that_is_what_was_declared_arrives(tmp_path: Path, sealed: bool) -> None:
    sender, receiver, tid, check = await pair(tmp_path, sealed=sealed)
    for index in (1, 2, 0):  # chunk 0 is checked whenever it comes
        await receiver.receive_chunk(tid, index, await sender.send_chunk(tid, index))
    assert (await receiver.get_progress(tid))["status"] == "completed"
    assert [(t, h[:8]) for t, h in check.seen] == [(tid, PNG[:8])]  # the plaintext, once
    assert len(check.seen[0][1]) == 8192


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "clear"])
async def test_content_that_contradicts_the_declared_type_fails_the_transfer(
    tmp_path: Path, sealed: bool
) -> None:
    sender, receiver, tid, _ = await pair(tmp_path, sealed=sealed, declared="application/pdf")
    await receiver.receive_chunk(tid, 1, await sender.send_chunk(tid, 1))
    with pytest.raises(MimeTypeNotAllowed) as refused:
        await receiver.receive_chunk(tid, 0, await sender.send_chunk(tid, 0))
    assert refused.value.message == "declared application/pdf, but the content is image/png"
    progress = await receiver.get_progress(tid)
    assert (progress["status"], progress["error_code"], progress["error"]) == (
        "failed",
        "mime-type-not-allowed",
        "declared application/pdf, but the content is image/png",
    )
    # the part file and its record are gone
    assert [p for p in (tmp_path / "inbox").rglob("*") if not p.is_dir()] == []
