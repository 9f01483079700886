"""Control messages: one parser, one error type, a precise reason for every refusal."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomdrop.exceptions import ProtocolError
from roomdrop.protocol.messages import (
    PAYLOADS,
    ChunkRequest,
    Message,
    MessageType,
    Offer,
    parse_message,
)

TID = str(uuid.uuid4())
SHA = "ab" * 32


def offer_payload(**change: Any) -> dict[str, Any]:
    payload = {
        "transfer_id": TID,
        "receiver_id": "bob",
        "filename": "report.pdf",
        "file_size": 10_485_760,
        "mime_type": "application/pdf",
        "chunk_size": 65_536,
        "total_chunks": 160,
        "sha256": SHA,
    }
    return {**payload, **change}


def envelope(type_: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": type_, "payload": payload, "sender_id": "alice", "room_id": "r1"})


def test_every_message_type_has_a_payload_model() -> None:
    assert set(PAYLOADS) == set(MessageType)


def test_the_seeds_five_file_share_types_keep_their_hyphenated_names() -> None:
    names = {t.value for t in MessageType}
    for seed in ("offer", "accept", "reject", "progress", "complete"):
        assert f"file-share-{seed}" in names
    for extra in ("pause", "resume", "cancel", "chunk-request", "error"):
        assert f"file-share-{extra}" in names


def test_an_offer_parses_into_its_model_and_serialises_back() -> None:
    message = parse_message(envelope("file-share-offer", offer_payload()))
    assert message.type is MessageType.FILE_SHARE_OFFER
    assert isinstance(message.payload, Offer)
    assert message.payload.total_chunks == 160
    again = parse_message(message.to_json())
    assert again == message


def test_build_stamps_a_timestamp_and_the_server_can_restamp_sender_and_room() -> None:
    message = Message.build(MessageType.FILE_SHARE_PAUSE, {"transfer_id": TID})
    assert message.timestamp and message.timestamp.endswith("Z")
    stamped = message.stamped(sender_id="alice", room_id="r1")
    assert (stamped.sender_id, stamped.room_id) == ("alice", "r1")
    assert json.loads(stamped.to_json())["payload"] == {"transfer_id": TID}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object, not list"),
        ('{"payload": {}}', "envelope: type: Field required"),
        ('{"type": "file-share-teleport"}', "unknown message type 'file-share-teleport'"),
        (envelope("file-share-offer", offer_payload(file_size=-1)), "payload.file_size"),
        (envelope("file-share-offer", offer_payload(total_chunks=3)), "total_chunks 3 does not"),
        (envelope("file-share-offer", offer_payload(sha256="XYZ")), "payload.sha256"),
        (envelope("file-share-offer", offer_payload(transfer_id="42")), "payload.transfer_id"),
        (envelope("file-share-offer", {"filename": "x"}), "payload.transfer_id: Field required"),
        (envelope("file-share-accept", {"transfer_id": TID, "missing": [[5, 3]]}), "empty"),
        (
            envelope("file-share-chunk-request", {"transfer_id": TID, "ranges": [[0, 4], [2, 6]]}),
            "sorted",
        ),
        (envelope("file-share-chunk-request", {"transfer_id": TID, "ranges": []}), "ranges"),
        (envelope("file-share-pause", {"transfer_id": TID, "extra": 1}), "payload.extra"),
        ('{"type": "error", "payload": {}, "bogus": 1}', "envelope: bogus"),
        ("x" * 2_000_000, "message of 2000000 bytes exceeds the 1402200-byte limit"),
        (
            envelope(
                "file-share-chunk",
                {
                    "transfer_id": TID,
                    "chunk_index": 3,
                    "total_chunks": 3,
                    "chunk_size": 4,
                    "data": "AAAA",
                    "checksum": SHA,
                },
            ),
            "payload: chunk_index 3 is not below total_chunks 3",
        ),
        (b"\xff\xfe\x00", "invalid JSON"),
    ],
)
def test_malformed_messages_raise_one_error_type_with_a_precise_reason(
    raw: str | bytes, reason: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(raw)
    assert reason in str(info.value)


def test_a_chunk_request_names_ranges_and_a_reason() -> None:
    message = parse_message(
        envelope(
            "file-share-chunk-request",
            {"transfer_id": TID, "ranges": [[0, 2], [5, 6]], "reason": "bad-checksum"},
        )
    )
    assert isinstance(message.payload, ChunkRequest)
    assert message.payload.ranges == [(0, 2), (5, 6)]


def test_signalling_passes_its_sdp_through_but_must_name_a_target() -> None:
    message = parse_message(envelope("offer", {"target_id": "bob", "sdp": "v=0", "type": "offer"}))
    assert message.payload.model_dump()["sdp"] == "v=0"
    with pytest.raises(ProtocolError, match="target_id"):
        parse_message(envelope("answer", {"sdp": "v=0"}))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_arbitrary_json_never_escapes_as_anything_but_protocol_error(value: object) -> None:
    with contextlib.suppress(ProtocolError):
        parse_message(json.dumps(value))


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    raw = '{"type": "error", "payload": {"code": "x", "message": "' + "é" * 140_000 + '"}}'
    assert len(raw) < 262_144 < len(raw.encode())
    for form in (raw, raw.encode()):
        with pytest.raises(ProtocolError, match="message of 280058 bytes exceeds the 262144"):
            parse_message(form)
