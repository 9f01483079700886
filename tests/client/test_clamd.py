"""The clamd adapter (roomdrop.client.clamd): its URLs and INSTREAM replies as pure
functions, then a real clamd (:mod:`clamdtools`) over its unix socket and its TCP port:
what it finds, what it passes, its StreamMaxLength, and a daemon that is not there."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest
import uvloop

from clamdtools import EICAR, EICAR_SIGNATURE, PATTERN, PATTERN_SIGNATURE, Clamd, start_clamd
from roomdrop.client.clamd import PIECE, ClamdError, parse_reply, parse_url, scan_file, version

pytestmark = pytest.mark.timeout(120)


# --- pure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "signature"),
    [
        (b"stream: OK\0", None),
        (b"stream: OK", None),
        (b"stream: Eicar-Test-Signature FOUND\0", "Eicar-Test-Signature"),
        (b"stream: Roomdrop-Test.EICAR.UNOFFICIAL FOUND\0", "Roomdrop-Test.EICAR.UNOFFICIAL"),
        (b"stream: Win.Test.EICAR_HDB-1 FOUND\n\0", "Win.Test.EICAR_HDB-1"),
        (
            b"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\0",
            "Heuristics.Limits.Exceeded.MaxFileSize",
        ),
        (b"stream: Some.ERROR.Name FOUND\0", "Some.ERROR.Name"),  # FOUND wins
    ],
)
def test_an_instream_reply_says_ok_or_names_what_it_found(
    reply: bytes, signature: str | None
) -> None:
    verdict = parse_reply(reply)
    assert verdict.signature == signature
    assert verdict.clean is (signature is None)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (b"INSTREAM size limit exceeded. ERROR\0", "clamd answered INSTREAM size limit exceeded."),
        (b"stream: Can't allocate memory ERROR\0", "clamd answered Can't allocate memory"),
        (b"ERROR\0", "clamd answered ERROR"),
        (b"stream: FOUND\0", "neither OK nor FOUND"),
        (b"PONG\0", "'PONG', which is neither OK nor FOUND"),
        (b"\0", "neither OK nor FOUND"),
    ],
)
def test_an_error_reply_or_one_not_understood_is_a_clamd_error(reply: bytes, said: str) -> None:
    with pytest.raises(ClamdError) as caught:
        parse_reply(reply)
    assert said in str(caught.value)


def test_clamd_urls_are_a_unix_socket_or_a_tcp_port() -> None:
    unix = parse_url("unix:///run/clamav/clamd.ctl")
    assert (unix.path, unix.host, unix.port) == ("/run/clamav/clamd.ctl", None, None)
    tcp = parse_url("tcp://127.0.0.1:3310")
    assert (tcp.path, tcp.host, tcp.port) == (None, "127.0.0.1", 3310)
    assert parse_url("tcp://[::1]:3310").host == "::1"
    for bad in (
        "unix://clamd.sock",  # relative: the host part
        "unix:",
        "tcp://127.0.0.1",  # no port
        "tcp://127.0.0.1:99999",
        "tcp://127.0.0.1:3310/x",
        "http://127.0.0.1:3310",
        "/run/clamav/clamd.ctl",
    ):
        with pytest.raises(
            ValueError, match=re.escape("unix:///PATH/TO/clamd.sock or tcp://HOST:PORT")
        ):
            parse_url(bad)


# --- a real clamd ----------------------------------------------------------------------


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("scheme", ["unix", "tcp"])
async def test_clamd_finds_both_test_signatures_and_passes_a_clean_file(
    clamd: Clamd, tmp_path: Path, scheme: str
) -> None:
    address = parse_url(clamd.unix_url if scheme == "unix" else clamd.tcp_url)
    eicar = await scan_file(address, write(tmp_path / "e.com", EICAR), timeout=30)
    assert eicar.signature == EICAR_SIGNATURE
    # the pattern straddles the first two INSTREAM chunks of a 3 MiB file
    body = bytearray(os.urandom(3 * PIECE))
    at = PIECE - len(PATTERN) // 2
    body[at : at + len(PATTERN)] = PATTERN
    found = await scan_file(address, write(tmp_path / "p.bin", bytes(body)), timeout=30)
    assert found.signature == PATTERN_SIGNATURE
    clean = await scan_file(address, write(tmp_path / "c.bin", os.urandom(PIECE + 1)), timeout=30)
    assert clean.clean
    assert (await scan_file(address, write(tmp_path / "empty", b""), timeout=30)).clean
    assert (await version(address)).startswith("ClamAV ")


def test_past_stream_max_length_the_daemon_s_own_error_is_the_message(tmp_path: Path) -> None:
    small = start_clamd(tmp_path / "clamd", stream_max="1M")
    try:
        path = write(tmp_path / "big.bin", os.urandom(3 * PIECE))
        for url in (small.unix_url, small.tcp_url):
            # on uvloop, as the command runs: clamd closes mid-stream, its reply is read
            with pytest.raises(ClamdError, match="INSTREAM size limit exceeded"):
                uvloop.run(scan_file(parse_url(url), path, timeout=30))
        assert uvloop.run(
            scan_file(parse_url(small.unix_url), write(tmp_path / "s", b"x"), timeout=30)
        ).clean
    finally:
        small.stop()


async def test_a_daemon_that_is_not_there_is_a_clear_clamd_error(tmp_path: Path) -> None:
    down = start_clamd(tmp_path / "clamd", start=False)
    path = write(tmp_path / "f.bin", b"hello")
    with pytest.raises(ClamdError) as caught:
        await scan_file(parse_url(down.unix_url), path, timeout=30)
    assert str(caught.value) == (
        f"cannot reach clamd at {down.unix_url}: No such file or directory"
    )
    with pytest.raises(ClamdError, match=f"cannot reach clamd at {down.tcp_url}: "):
        await scan_file(parse_url(down.tcp_url), path, timeout=30)
    with pytest.raises(ClamdError, match="cannot reach clamd"):
        await version(parse_url(down.unix_url))


async def test_a_daemon_that_does_not_answer_in_time_is_a_clamd_error(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # takes everything, answers nothing
        await reader.read()

    sock = tmp_path / "silent.sock"
    listener = await asyncio.start_unix_server(silent, path=str(sock))
    try:
        with pytest.raises(ClamdError, match=r"gave no answer within 0\.5 s"):
            await scan_file(parse_url(f"unix://{sock}"), write(tmp_path / "f", b"x"), timeout=0.5)
    finally:
        listener.close()
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        await listener.wait_closed()
