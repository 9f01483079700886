"""The client's pure parts: settings, the server list, the URL of a room's socket, the
JSON lines, and cutting a frame for the data channel."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import jwt
import pytest

from roomdrop.cli import build_parser
from roomdrop.client.display import human_size
from roomdrop.client.http import api_base
from roomdrop.client.jsonlines import JsonReporter
from roomdrop.client.settings import ClientSettings, split_servers, user_of
from roomdrop.client.signalling import websocket_url
from roomdrop.client.transfers import Result
from roomdrop.protocol.frames import (
    DATA_CHANNEL_MAX_MESSAGE,
    Chunk,
    ChunkAssembler,
    decode_frame,
    encode_frames,
    split_frame,
)

TID = "3f2a9c1e-5b7d-4e8a-9c0f-1a2b3c4d5e6f"


def test_ice_hosts_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMDROP_ICE_HOSTS", "127.0.0.1, ::1,")
    monkeypatch.setenv("ROOMDROP_SERVER", "http://127.0.0.1:9")
    settings = ClientSettings()
    assert settings.ice_hosts == ["127.0.0.1", "::1"]
    assert settings.server == "http://127.0.0.1:9"
    monkeypatch.delenv("ROOMDROP_ICE_HOSTS")
    assert ClientSettings().ice_hosts == []


def test_every_client_setting_is_documented_in_the_readme() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in ClientSettings.model_fields:
        assert f"`ROOMDROP_{name.upper()}`" in text, name


@pytest.mark.parametrize(
    ("values", "servers"),
    [
        (["http://a:8000"], ["http://a:8000"]),
        (["http://a:8000,http://b:8000"], ["http://a:8000", "http://b:8000"]),
        ([" http://a:8000 , ,http://b:8000,"], ["http://a:8000", "http://b:8000"]),
        (
            ["http://a:8000", "http://b:8000,http://c"],
            ["http://a:8000", "http://b:8000", "http://c"],
        ),
        (["http://b,http://a", "http://b"], ["http://b", "http://a"]),  # first place kept
        ([None], []),
        ([" , "], []),
        ([], []),
    ],
)
def test_server_lists_are_comma_separated_and_may_be_repeated(
    values: list[str | None], servers: list[str]
) -> None:
    assert split_servers(values) == servers


def test_the_server_option_may_be_repeated_and_the_variable_may_list_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["send", "f", "--to", "b", "--room", "r", "--server", "http://a,http://b"]
    parsed = build_parser().parse_args([*args, "--server", "http://c"])
    assert parsed.server == ["http://a,http://b", "http://c"]
    assert split_servers(parsed.server) == ["http://a", "http://b", "http://c"]
    parsed = build_parser().parse_args(["receive", "--room", "r"])
    assert parsed.server is None
    monkeypatch.setenv("ROOMDROP_SERVER", "http://a:1, http://b:2")
    assert split_servers([ClientSettings().server]) == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(
    ("server", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/webrtc"),
        ("https://example.org/base/", "https://example.org/base/webrtc"),
        ("wss://example.org", "https://example.org/webrtc"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000/webrtc"),
    ],
)
def test_the_rest_base_url_follows_the_server_url(server: str, base: str) -> None:
    assert api_base(server) == base


def test_the_user_is_the_tokens_subject() -> None:
    assert user_of(jwt.encode({"sub": "alice"}, "k" * 32)) == "alice"
    with pytest.raises(ValueError, match="not a JWT"):
        user_of("a.b.c")
    with pytest.raises(ValueError, match="no 'sub'"):
        user_of(jwt.encode({"x": 1}, "k" * 32))


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/webrtc/ws/r%201?token=t"),
        ("https://example.org/base/", "wss://example.org/base/webrtc/ws/r%201?token=t"),
        ("127.0.0.1:8000", "ws://127.0.0.1:8000/webrtc/ws/r%201?token=t"),
    ],
)
def test_the_rooms_socket_url_follows_the_server_url(server: str, url: str) -> None:
    assert websocket_url(server, "r 1", "t") == url


def test_a_server_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="not a server URL"):
        websocket_url("ftp://x", "r", "t")


def test_a_whole_frame_is_cut_exactly_as_encode_frames_cuts_the_chunk() -> None:
    for size in (5, 65_464, 65_465, 65_536, 1_048_576):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        chunk = Chunk(TID, 3, 10, max(size, 65_536), data, hashlib.sha256(data).hexdigest())
        (whole,) = encode_frames(chunk)
        parts = split_frame(whole, DATA_CHANNEL_MAX_MESSAGE)
        assert parts == list(encode_frames(chunk, DATA_CHANNEL_MAX_MESSAGE))
        assert all(len(p) <= DATA_CHANNEL_MAX_MESSAGE for p in parts)
        assembler = ChunkAssembler(max_chunk_size=1_048_576)
        results = [assembler.feed(decode_frame(p)) for p in parts]
        assert results[-1] is not None and bytes(results[-1].data) == data


def test_json_lines_carry_the_transfer_object_and_a_final_result() -> None:
    out = io.StringIO()
    reporter = JsonReporter(out, every=0.0)
    reporter.note("hello")
    reporter.progress({"transfer_id": TID, "progress_percent": 50.0}, "p2p")
    reporter.finished(
        Result(TID, "a.bin", "completed", "relay", "0" * 64, 10, 10, 4, 1.23456, "bob", 6)
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"event": "note", "message": "hello"}
    assert lines[1] == {
        "event": "progress",
        "transport": "p2p",
        "transfer_id": TID,
        "progress_percent": 50.0,
        "e2e": False,
    }
    assert lines[2]["event"] == "result"
    assert (lines[2]["e2e"], lines[2]["safety_number"]) == (False, None)
    assert {k: lines[2][k] for k in ("status", "transport", "resumed_bytes", "elapsed_s")} == {
        "status": "completed",
        "transport": "relay",
        "resumed_bytes": 4,
        "elapsed_s": 1.235,
    }


def test_progress_lines_are_rate_limited_per_transfer() -> None:
    out = io.StringIO()
    reporter = JsonReporter(out, every=60.0)
    for _ in range(5):
        reporter.progress({"transfer_id": TID}, "relay")
        reporter.progress({"transfer_id": "other"}, "relay")
    assert len(out.getvalue().splitlines()) == 2


def test_sizes_read_like_people_write_them() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 123_456_789, 5 * 10**12)] == [
        "0 bytes",
        "999 bytes",
        "1.0 kB",
        "123.5 MB",
        "5000.0 GB",
    ]


def test_json_progress_says_end_to_end_without_the_sealed_keys() -> None:
    out = io.StringIO()
    sealed = {"v": 1, "sender_key": "k" * 43, "receiver_key": "r" * 43}
    JsonReporter(out, every=0.0).progress({"transfer_id": TID, "e2e": sealed}, "relay")
    assert json.loads(out.getvalue())["e2e"] is True
