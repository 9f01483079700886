"""Binary frames and JSON chunks: encode, decode, fragment, reassemble, refuse garbage."""

from __future__ import annotations

import contextlib
import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomdrop.exceptions import ProtocolError
from roomdrop.protocol.frames import (
    DATA_CHANNEL_MAX_MESSAGE,
    HEADER,
    HEADER_SIZE,
    Chunk,
    ChunkAssembler,
    decode_frame,
    decode_json_chunk,
    encode_frames,
    encode_json_chunk,
    fragment_bounds,
)

TID = "12345678-1234-5678-1234-567812345678"


def make_chunk(data: bytes, index: int = 0, total: int = 1, size: int | None = None) -> Chunk:
    return Chunk(
        TID, index, total, size or max(len(data), 1), data, hashlib.sha256(data).hexdigest()
    )


def test_the_header_is_72_bytes() -> None:
    assert HEADER_SIZE == 72


def test_a_whole_chunk_round_trips_through_one_frame() -> None:
    chunk = make_chunk(b"hello world", index=3, total=5, size=16)
    [frame] = encode_frames(chunk)
    assert len(frame) == HEADER_SIZE + 11
    decoded = decode_frame(frame)
    assert decoded.is_whole
    back = decoded.to_chunk()
    assert (back.transfer_id, back.chunk_index, back.total_chunks, back.chunk_size) == (
        TID,
        3,
        5,
        16,
    )
    assert bytes(back.data) == b"hello world"
    assert back.checksum == chunk.checksum


def test_a_default_64_kib_chunk_fits_an_aiortc_data_channel_as_two_frames() -> None:
    data = bytes(range(256)) * 256
    frames = list(encode_frames(make_chunk(data), DATA_CHANNEL_MAX_MESSAGE))
    assert [len(f) for f in frames] == [HEADER_SIZE + 32_768] * 2
    assert all(len(f) <= DATA_CHANNEL_MAX_MESSAGE for f in frames)


@given(st.integers(1, 300_000), st.integers(HEADER_SIZE + 1, 70_000))
def test_fragments_are_few_near_equal_and_cover_the_chunk(length: int, budget: int) -> None:
    bounds = fragment_bounds(length, budget)
    assert bounds[0][0] == 0
    assert sum(n for _o, n in bounds) == length
    assert all(HEADER_SIZE + n <= budget for _o, n in bounds)
    assert max(n for _o, n in bounds) - min(n for _o, n in bounds) <= 1
    assert len(bounds) == -(-length // (budget - HEADER_SIZE))


@given(st.binary(min_size=1, max_size=5000), st.integers(HEADER_SIZE + 1, 2000), st.randoms())
def test_fragments_reassemble_in_any_order_with_duplicates(
    data: bytes, budget: int, rnd: object
) -> None:
    frames = list(encode_frames(make_chunk(data), budget))
    order = frames + frames[: len(frames) // 2]
    rnd.shuffle(order)  # type: ignore[attr-defined]
    assembler = ChunkAssembler()
    done = [c for c in (assembler.feed(decode_frame(f)) for f in order) if c is not None]
    assert len(done) >= 1
    assert bytes(done[0].data) == data
    assert done[0].checksum == hashlib.sha256(data).hexdigest()


def test_the_assembler_holds_a_bounded_number_of_half_built_chunks() -> None:
    assembler = ChunkAssembler(max_partial=2)
    for index in range(5):
        data = bytes([index]) * 1000
        first = next(encode_frames(make_chunk(data, index=index, total=5), 600))
        assert assembler.feed(decode_frame(first)) is None
        assert len(assembler) <= 2
    assembler.discard(TID)
    assert len(assembler) == 0


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f[:10], "shorter than the 72-byte header"),
        (lambda f: b"XX" + f[2:], "magic"),
        (lambda f: f[:2] + b"\x09" + f[3:], "version 9"),
        (lambda f: f[:3] + b"\x02" + f[4:], "flags"),
        (lambda f: f[:HEADER_SIZE], "does not fit"),
        (lambda f: f + b"extra", "does not fit"),
    ],
)
def test_malformed_frames_are_refused_with_a_precise_reason(mutate: object, reason: str) -> None:
    [frame] = encode_frames(make_chunk(b"0123456789"))
    with pytest.raises(ProtocolError, match=reason):
        decode_frame(mutate(frame))  # type: ignore[operator]


def test_a_frame_whose_index_is_not_below_total_is_refused() -> None:
    header = HEADER.pack(b"RD", 1, 0, uuid.UUID(TID).bytes, 7, 7, 10, 10, 0, b"\0" * 32)
    with pytest.raises(ProtocolError, match="chunk_index 7 is not below total_chunks 7"):
        decode_frame(header + b"x" * 10)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(junk: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(junk)


def test_the_seeds_json_chunk_round_trips_with_the_same_fields() -> None:
    chunk = make_chunk(b"\x00\xffdata", index=1, total=2, size=8)
    obj = encode_json_chunk(chunk)
    assert set(obj) == {
        "transfer_id",
        "chunk_index",
        "total_chunks",
        "chunk_size",
        "data",
        "checksum",
    }
    back = decode_json_chunk(obj)
    assert bytes(back.data) == b"\x00\xffdata"
    assert back.checksum == chunk.checksum and back.chunk_index == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"data": "not base64!"}, "base64"),
        ({"checksum": "abc"}, "checksum"),
        ({"chunk_index": 2}, "not below total_chunks"),
        ({"chunk_index": -1}, "chunk_index"),
        ({"transfer_id": "nope"}, "transfer_id"),
        # up to 16 bytes over chunk_size are allowed: a sealed chunk's GCM tag
        ({"chunk_size": 2, "data": "eHh4eHh4eHh4eHh4eHh4eHh4eA=="}, "19 bytes of data for"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_malformed_json_chunks_are_refused(change: dict[str, object], reason: str) -> None:
    obj = {**encode_json_chunk(make_chunk(b"abcd", index=1, total=2, size=8)), **change}
    with pytest.raises(ProtocolError, match=reason):
        decode_json_chunk(obj)
