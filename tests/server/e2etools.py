"""End-to-end encryption for the server tests: what a real client does, made small.

Each test user has a device key (:func:`device`, made on first use: user names are
fresh per test), which :meth:`conftest.Server.connect` publishes when it joins.
:func:`sealed_offer` seals a fresh content key into an offer payload with
:func:`roomdrop.e2e.seal_offer` and remembers the transfer's :class:`ChunkCipher`, so
that :func:`chunk_of` / :func:`frame_of` / :func:`json_chunk_of` send chunk ``i`` as the
sender would (sealed), and :func:`plaintext_of` opens what the receiver gets.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from roomdrop.e2e import ChunkCipher, DeviceKey, open_offer, seal_offer
from roomdrop.protocol.frames import (
    ZERO_CHECKSUM,
    Chunk,
    Frame,
    decode_frame,
    encode_frames,
    encode_json_chunk,
)
from roomdrop.protocol.messages import E2E
from roomdrop.protocol.transfer import Transfer

CHUNK = 64 * 1024

_DEVICES: dict[str, DeviceKey] = {}
_CIPHERS: dict[str, ChunkCipher] = {}


def device(user: str) -> DeviceKey:
    """``user``'s device key (the same for the whole test session)."""
    key = _DEVICES.get(user)
    if key is None:
        key = _DEVICES[user] = DeviceKey.generate()
    return key


def public(user: str) -> str:
    """``user``'s device public key, as it travels (43 characters)."""
    return device(user).public_text


def offer_fields(
    receiver: str,
    *,
    size: int = 3 * CHUNK - 100,
    sha256: str = "0" * 64,
    filename: str = "file.bin",
    mime_type: str = "application/octet-stream",
    chunk_size: int = CHUNK,
    transfer_id: str | None = None,
) -> dict[str, Any]:
    """A clear ``file-share-offer`` payload (``total_chunks`` computed)."""
    return {
        "transfer_id": transfer_id or str(uuid.uuid4()),
        "receiver_id": receiver,
        "filename": filename,
        "file_size": size,
        "mime_type": mime_type,
        "chunk_size": chunk_size,
        "total_chunks": -(-size // chunk_size),
        "sha256": sha256,
    }


def _record(sender: str, payload: dict[str, Any]) -> Transfer:
    return Transfer(
        transfer_id=str(uuid.UUID(payload["transfer_id"])),
        room_id="-",
        sender_id=sender,
        receiver_id=payload["receiver_id"],
        filename=payload["filename"],
        file_size=payload["file_size"],
        chunk_size=payload["chunk_size"],
        total_chunks=payload["total_chunks"],
        sha256=payload["sha256"],
        mime_type=payload.get("mime_type", "application/octet-stream"),
        created_mono=0.0,
    )


def seal(
    sender: str,
    payload: dict[str, Any],
    *,
    receiver_key: str | None = None,
    sender_device: DeviceKey | None = None,
) -> dict[str, Any]:
    """``payload`` with its ``e2e`` part: a new content key sealed to the receiver's
    device key (``receiver_key``, default: the receiver's own) by ``sender``'s device
    (``sender_device``, default: theirs). The transfer's cipher is remembered."""
    record = _record(sender, payload)
    e2e, key = seal_offer(
        record,
        sender_device or device(sender),
        receiver_key or public(payload["receiver_id"]),
    )
    _CIPHERS[record.transfer_id] = ChunkCipher(key, record.transfer_id)
    return {**payload, "e2e": e2e.model_dump(mode="json")}


def sealed_offer(sender: str, receiver: str, **fields: Any) -> dict[str, Any]:
    """A valid end-to-end ``file-share-offer`` payload from ``sender`` to ``receiver``
    (fields as :func:`offer_fields`)."""
    return seal(sender, offer_fields(receiver, **fields))


def rest_offer_body(sender: str, receiver: str, **fields: Any) -> dict[str, Any]:
    """The body of ``POST …/file-transfer/offer`` for a sealed offer: the binding
    covers ``transfer_id`` and ``chunk_size``, so both are given."""
    payload = sealed_offer(sender, receiver, **fields)
    del payload["total_chunks"]
    return payload


def cipher(transfer_id: str) -> ChunkCipher:
    """The content key of a transfer :func:`seal` made."""
    return _CIPHERS[str(uuid.UUID(transfer_id))]


def open_as_receiver(receiver: str, sender: str, offer: dict[str, Any]) -> ChunkCipher:
    """The receiver's side: the content key opened from an offer it got."""
    e2e = E2E.model_validate(offer["e2e"])
    key = open_offer(_record(sender, offer), e2e, device(receiver))
    return ChunkCipher(key, offer["transfer_id"])


def sealed_data(transfer_id: str, index: int, plaintext: bytes) -> bytes:
    return cipher(transfer_id).seal(index, plaintext)


def chunk_of(
    transfer_id: str, index: int, total: int, plaintext: bytes, chunk_size: int = CHUNK
) -> Chunk:
    """Chunk ``index`` of an end-to-end transfer, sealed, as a sender sends it."""
    data = sealed_data(transfer_id, index, plaintext)
    return Chunk(transfer_id, index, total, chunk_size, data, ZERO_CHECKSUM, sealed=True)


def clear_chunk_of(
    transfer_id: str, index: int, total: int, data: bytes, chunk_size: int = CHUNK
) -> Chunk:
    """Chunk ``index`` of a transfer in the clear (its checksum the sha256 of ``data``)."""
    return Chunk(transfer_id, index, total, chunk_size, data, hashlib.sha256(data).hexdigest())


def frame_of(chunk: Chunk) -> bytes:
    """The one whole frame that carries ``chunk`` over the relay."""
    (frame,) = encode_frames(chunk)
    return frame


def sealed_frame(
    transfer_id: str, index: int, total: int, plaintext: bytes, chunk_size: int = CHUNK
) -> bytes:
    return frame_of(chunk_of(transfer_id, index, total, plaintext, chunk_size))


def json_chunk_of(
    transfer_id: str, index: int, total: int, plaintext: bytes, chunk_size: int = CHUNK
) -> dict[str, Any]:
    """The seed's JSON form of a sealed chunk: ``data`` the base64 of the ciphertext,
    ``checksum`` the ciphertext's sha256."""
    data = sealed_data(transfer_id, index, plaintext)
    chunk = Chunk(transfer_id, index, total, chunk_size, data, hashlib.sha256(data).hexdigest())
    return encode_json_chunk(chunk)


def plaintext_of(frame: bytes | Frame, transfer_id: str | None = None) -> bytes:
    """What a relayed sealed frame decrypts to (E2EError if it does not)."""
    decoded = frame if isinstance(frame, Frame) else decode_frame(frame)
    assert decoded.sealed and decoded.is_whole, decoded
    assert decoded.checksum == ZERO_CHECKSUM
    return cipher(transfer_id or decoded.transfer_id).open(decoded.chunk_index, decoded.data)
