"""The resume record's text format (roomdrop.record): per-chunk digests, the previous
version's format, and what a damaged record means."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from roomdrop.protocol.chunks import ChunkSet
from roomdrop.record import (
    ContentKey,
    Digests,
    parse_record,
    record_line,
    render_record,
)

KEY = ContentKey("ab" * 32, file_size=1000, chunk_size=100)


def digest_of(index: int) -> bytes:
    return hashlib.sha256(b"chunk %d" % index).digest()


def record_of(held: dict[int, bytes | None]) -> tuple[ChunkSet, Digests]:
    chunks, digests = ChunkSet(KEY.total_chunks), Digests(KEY.total_chunks)
    for i, d in held.items():
        chunks.add(i)
        if d is not None:
            digests.set(i, d)
    return chunks, digests


def as_dict(parsed: tuple[ChunkSet, Digests] | None) -> dict[int, bytes | None]:
    assert parsed is not None
    held, digests = parsed
    return {i: digests.get(i) for i in held}


def test_a_chunk_line_is_its_index_and_its_sha256_in_43_base64url_characters() -> None:
    d = digest_of(7)
    line = record_line(7, d)
    index, token = line.decode().rstrip("\n").split(" ")
    assert index == "7" and len(token) == 43 and line.endswith(b"\n")
    assert base64.urlsafe_b64decode(token + "=") == d
    assert record_line(7, None) == b"7\n"


def test_a_record_reads_back_as_the_chunks_and_digests_it_was_written_with() -> None:
    held = {0: digest_of(0), 2: digest_of(2), 9: digest_of(9), 4: None}
    text = render_record(KEY, "x.bin", *record_of(held)).decode()
    header = json.loads(text.partition("\n")[0])
    assert header == {
        "roomdrop_part": 2,
        "sha256": KEY.sha256,
        "file_size": 1000,
        "chunk_size": 100,
        "total_chunks": 10,
        "filename": "x.bin",
    }
    assert as_dict(parse_record(text, KEY)) == held


def test_a_record_of_the_previous_format_holds_its_chunks_without_digests() -> None:
    header = json.dumps({"roomdrop_part": 1, "sha256": KEY.sha256, "file_size": 1000,
                         "chunk_size": 100, "total_chunks": 10, "filename": "x.bin"})  # fmt: skip
    assert as_dict(parse_record(f"{header}\n0\n3\n5\n", KEY)) == {0: None, 3: None, 5: None}


def test_appended_lines_torn_lines_bad_digests_and_repeats() -> None:
    text = render_record(KEY, "x.bin", *record_of({1: digest_of(1)})).decode()
    good = record_line(2, digest_of(2)).decode()
    again = record_line(1, digest_of(11)).decode()  # chunk 1 written anew after a drop
    bad_digest = "3 " + "!" * 43 + "\n"
    short_digest = "4 " + good.split()[1][:-1] + "\n"
    past_the_end = record_line(10, digest_of(10)).decode()
    torn = record_line(5, digest_of(5)).decode()[:-1]
    text += good + again + bad_digest + short_digest + past_the_end + torn
    assert as_dict(parse_record(text, KEY)) == {1: digest_of(11), 2: digest_of(2)}


@pytest.mark.parametrize(
    "header",
    [
        {"roomdrop_part": 3},
        {"roomdrop_part": 2, "sha256": "cd" * 32},
        {"roomdrop_part": 2, "file_size": 1001},
        {"roomdrop_part": 2, "chunk_size": 50},
    ],
)
def test_a_record_of_other_content_or_an_unknown_format_is_not_read(
    header: dict[str, object],
) -> None:
    fields = {"roomdrop_part": 2, "sha256": KEY.sha256, "file_size": 1000, "chunk_size": 100}
    fields.update(header)
    assert parse_record(json.dumps(fields) + "\n0\n", KEY) is None
    assert parse_record("not json\n0\n", KEY) is None


def test_the_record_of_a_500_mb_file_is_under_400_kb() -> None:
    """500 MiB (the default size limit) is 8,000 chunks of 64 KiB: one line of at most 49
    bytes each (4-digit index, space, 43 characters, newline)."""
    key = ContentKey("ab" * 32, file_size=500 * 1024 * 1024, chunk_size=65536)
    assert key.total_chunks == 8000
    held, digests = ChunkSet(key.total_chunks), Digests(key.total_chunks)
    for i in range(key.total_chunks):
        held.add(i)
        digests.set(i, digest_of(i))
    text = render_record(key, "movie.mkv", held, digests)
    assert max(len(record_line(i, digest_of(i))) for i in range(key.total_chunks)) == 49
    assert len(text) < 400_000
    assert as_dict(parse_record(text.decode(), key)) == {
        i: digest_of(i) for i in range(key.total_chunks)
    }


def test_a_digest_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Digests(4).set(0, b"short")
