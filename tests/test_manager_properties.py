"""Property-based tests of the transfer engine (FileTransferManager over real files).

Every property runs whole transfers between a sending manager and a receiving manager
(or one manager doing both, the seed's server-side use) in a fresh temporary directory,
under chunk orders, losses, duplicates, corruption, pauses and restarts that hypothesis
chooses. What must always hold:

* the saved file is byte-identical to the source;
* ``missing_chunks`` is exactly the set of chunks not yet stored, and nothing is
  missing once the transfer has completed;
* a refused chunk (corrupt, paused, malformed) counts for nothing;
* nothing is written outside the download directory, into a subdirectory of it (but
  the engine's own hidden part-file directory, empty again once a transfer is done), or
  over another file; a file is saved under the name its transfer reports.

Each example is a sync test running ``asyncio.run(scenario(...))`` in its own
``tempfile.TemporaryDirectory`` (pytest's ``tmp_path`` is shared by all examples).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomdrop.exceptions import (
    BadChecksum,
    ChunkRejected,
    ChunkSizeMismatch,
    IntegrityError,
    InvalidTransition,
    ProtocolError,
    TransferNotActive,
)
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.chunks import chunk_length, count_chunks
from roomdrop.protocol.frames import HEADER_SIZE
from roomdrop.protocol.messages import Offer
from roomdrop.protocol.names import numbered_names, sanitize_filename
from roomdrop.storage import PART_SUFFIX, PARTS_DIR, RECORD_SUFFIX

SENDER, RECEIVER, ROOM = "alice", "bob", "room1"
REJECTED = (ChunkRejected, ProtocolError)
"""What a frame that must not be stored may raise."""

# --- strategies ------------------------------------------------------------------------

MAX_FILE_SIZE = 4096


@dataclass(frozen=True)
class Payload:
    """A file's content and the chunk size it travels in. Shown by size, chunk size and
    how the bytes were made, so a failing example stays readable."""

    size: int
    chunk_size: int
    fill: str
    seed: int

    @property
    def content(self) -> bytes:
        if self.fill == "zeros":  # every full chunk identical
            return bytes(self.size)
        if self.fill == "ramp":  # a byte pattern easy to read in a diff
            return bytes(i % 251 for i in range(self.size))
        return random.Random(self.seed).randbytes(self.size)


@st.composite
def payloads(draw: st.DrawFn, min_chunks: int = 0, max_chunks: int = 64) -> Payload:
    """A file of ``min_chunks``..``max_chunks`` chunks (at most MAX_FILE_SIZE bytes), the
    last one full or short, in chunks of 16..512 bytes (small ones more often)."""
    chunk_size = draw(st.one_of(st.sampled_from([16, 17, 32, 100]), st.integers(16, 512)))
    most = max(min_chunks, min(max_chunks, MAX_FILE_SIZE // chunk_size))
    chunks = draw(st.integers(min_chunks, most))
    size = (
        0 if chunks == 0 else draw(st.integers((chunks - 1) * chunk_size + 1, chunks * chunk_size))
    )
    fill = draw(st.sampled_from(["random", "ramp", "zeros"]))
    seed = draw(st.integers(0, 2**32 - 1)) if fill == "random" else 0
    return Payload(size, chunk_size, fill, seed)


# A way to damage one frame: (kind, where, how).
corruptions = st.one_of(
    st.tuples(st.just("data"), st.integers(0, 2**16), st.integers(1, 255)),
    st.tuples(st.just("checksum"), st.integers(0, 31), st.integers(1, 255)),
    st.tuples(st.just("header"), st.integers(0, 39), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(1, 2**16), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 8), st.integers(0, 255)),
)

_hostile_pieces = st.sampled_from(
    [
        "/",
        "\\",
        "..",
        ".",
        "../",
        "..\\",
        "/etc/passwd",
        "C:\\Windows\\",
        "~",
        "\x00",
        "\n",
        "\r",
        "\t",
        "\x1b[31m",
        "\x7f",
        "\u202e",
        "\u200b",
        "\u2066",
        "\ufeff",
        " ",
        '<>:"|?*',
        "CON",
        "NUL.txt",
        "report",
        "e",
        "A",
        ".pdf",
        ".txt",
        ".part",
        RECORD_SUFFIX,
        "é",
        "\u0301",
        "日本",
        "\U0001f600",
    ]
)
hostile_names = st.one_of(
    st.lists(_hostile_pieces, min_size=1, max_size=12).map("".join),
    st.lists(st.one_of(_hostile_pieces, st.text(max_size=8)), min_size=1, max_size=20).map("".join),
    st.text(min_size=1, max_size=64),
    # very long: hundreds of (multi-byte) characters, with or without an extension
    st.tuples(
        st.sampled_from(["a", "é", "\U0001f600", "../", "\u202e"]),
        st.integers(100, 300),
        st.sampled_from(["", ".txt", ".tar.gz", "." + "x" * 40]),
    ).map(lambda t: t[0] * t[1] + t[2]),
).filter(lambda name: 1 <= len(name) <= 1024)


# --- harness ---------------------------------------------------------------------------


@dataclass
class Run:
    """One transfer under test: its managers, frames and the model of what is stored."""

    root: Path
    content: bytes
    chunk_size: int
    source: Path
    download_dir: Path
    sender: FileTransferManager
    receiver: FileTransferManager
    tid: str
    frames: list[bytes]
    delivered: set[int] = field(default_factory=set)
    retired: list[FileTransferManager] = field(default_factory=list)

    @property
    def total(self) -> int:
        return count_chunks(len(self.content), self.chunk_size)

    @property
    def complete(self) -> bool:
        return len(self.delivered) == self.total

    def undelivered(self) -> list[int]:
        return sorted(set(range(self.total)) - self.delivered)

    def bytes_of(self, indexes: Iterable[int]) -> int:
        return sum(chunk_length(i, len(self.content), self.chunk_size) for i in indexes)

    async def receive(self, index: int, frame: bytes | None = None) -> bool:
        data = self.frames[index] if frame is None else frame
        return await self.receiver.receive_chunk(self.tid, index, data)

    async def check_counts(self, status: str = "active") -> None:
        """missing_chunks and progress say exactly what the model holds."""
        assert await self.receiver.missing_chunks(self.tid) == self.undelivered()
        progress = await self.receiver.get_progress(self.tid)
        assert progress["status"] == status
        assert progress["chunks_sent"] == len(self.delivered)
        assert progress["bytes_transferred"] == self.bytes_of(self.delivered)

    async def close(self) -> None:
        for manager in {id(m): m for m in [*self.retired, self.sender, self.receiver]}.values():
            await manager.close()


def write_source(root: Path, content: bytes, name: str = "payload.bin") -> Path:
    src = root / "outbox"
    src.mkdir(exist_ok=True)
    path = src / name
    path.write_bytes(content)
    return path


async def new_sender(source: Path, chunk_size: int) -> tuple[FileTransferManager, str, list[bytes]]:
    """A sending-only manager with an accepted offer of ``source``, and all its frames."""
    sender = FileTransferManager(chunk_size, download_dir=None)
    offer = await sender.create_offer(source, SENDER, RECEIVER, ROOM)
    tid = offer["transfer_id"]
    await sender.accept_transfer(tid)
    frames = [await sender.send_chunk(tid, i) for i in range(offer["total_chunks"])]
    return sender, tid, frames


async def new_receiver(
    download_dir: Path, offer: Offer, *, filename: str | None = None
) -> FileTransferManager:
    """A receiving-only manager that registered and accepted ``offer`` (under another
    ``filename`` if given, as a peer may claim any name)."""
    receiver = FileTransferManager(64, download_dir=download_dir, max_transfers_per_user=50)
    body = offer.model_dump(mode="json")
    if filename is not None:
        body["filename"] = filename
    await receiver.register_offer(body, SENDER, ROOM)
    await receiver.accept_transfer(body["transfer_id"])
    return receiver


async def start(
    root: Path,
    payload: Payload | tuple[bytes, int],
    *,
    one_manager: bool = False,
    filename: str | None = None,
) -> Run:
    if isinstance(payload, Payload):
        content, chunk_size = payload.content, payload.chunk_size
    else:
        content, chunk_size = payload
    source = write_source(root, content)
    download_dir = root / "inbox" / "downloads"
    if one_manager:
        manager = FileTransferManager(chunk_size, download_dir=download_dir)
        offer = await manager.create_offer(source, SENDER, RECEIVER, ROOM)
        tid = offer["transfer_id"]
        await manager.accept_transfer(tid)
        frames = [await manager.send_chunk(tid, i) for i in range(offer["total_chunks"])]
        sender = receiver = manager
    else:
        sender, tid, frames = await new_sender(source, chunk_size)
        receiver = await new_receiver(download_dir, sender.offer(tid), filename=filename)
    return Run(root, content, chunk_size, source, download_dir, sender, receiver, tid, frames)


async def restart_receiver(run: Run, *, same_offer: bool) -> None:
    """Close the receiving manager mid-transfer and resume in a new one on the same
    download dir: with the same offer again, or with a new sender's fresh offer of the
    same file (new transfer_id, same content)."""
    await run.receiver.close()
    run.retired.append(run.receiver)
    if not same_offer:
        run.retired.append(run.sender)
        run.sender, run.tid, run.frames = await new_sender(run.source, run.chunk_size)
    run.receiver = await new_receiver(run.download_dir, run.sender.offer(run.tid))


async def assert_saved_identically(run: Run, *, only_file: bool = True) -> Path:
    progress = await run.receiver.get_progress(run.tid)
    assert progress["status"] == "completed"
    assert progress["chunks_sent"] == progress["total_chunks"] == run.total
    assert progress["bytes_transferred"] == len(run.content)
    saved = Path(progress["saved_path"])
    assert saved.parent == run.download_dir
    assert saved.read_bytes() == run.content
    if only_file:  # and no part file or record left behind
        assert saved_files(run.download_dir) == [saved.name]
        assert part_files(run.download_dir) == []
    return saved


def corrupt(frame: bytes, how: tuple[str, int, int]) -> tuple[bytes, tuple[type[Exception], ...]]:
    """A damaged copy of ``frame`` and the exceptions receiving it may raise."""
    kind, where, value = how
    damaged = bytearray(frame)
    if kind == "data":
        damaged[HEADER_SIZE + where % (len(frame) - HEADER_SIZE)] ^= value
        return bytes(damaged), (BadChecksum,)
    if kind == "checksum":
        damaged[40 + where] ^= value
        return bytes(damaged), (BadChecksum,)
    if kind == "header":
        damaged[where] ^= value
        return bytes(damaged), REJECTED
    if kind == "truncate":
        return bytes(damaged[: -(1 + (where - 1) % len(frame))]), REJECTED
    assert kind == "extend"
    return bytes(damaged) + bytes([value]) * where, REJECTED


def saved_files(download_dir: Path) -> list[str]:
    """Names in the download dir, apart from the engine's own hidden part-file directory."""
    return sorted(name for name in os.listdir(download_dir) if name != PARTS_DIR)


def part_files(download_dir: Path) -> list[str]:
    parts = download_dir / PARTS_DIR
    return sorted(os.listdir(parts)) if parts.is_dir() else []


def files_under(root: Path) -> set[Path]:
    return {Path(d) / name for d, dirs, files in os.walk(root) for name in [*dirs, *files]}


def permuted_with_duplicates(data: st.DataObject, total: int) -> list[int]:
    order = list(data.draw(st.permutations(range(total)), label="order"))
    if total:
        extra = st.tuples(st.integers(0, total), st.integers(0, total - 1))
        for position, index in data.draw(st.lists(extra, max_size=2 * total), label="dups"):
            order.insert(position, index)
    return order


# --- 1. order and duplicates -----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(payload=payloads(), one_manager=st.booleans(), data=st.data())
def test_any_chunk_order_with_duplicates_produces_identical_file(
    payload: Payload, one_manager: bool, data: st.DataObject
) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, payload, one_manager=one_manager)
        try:
            for index in permuted_with_duplicates(data, run.total):
                if run.complete:
                    # the transfer is over: a late duplicate is refused, changes nothing
                    with pytest.raises(TransferNotActive):
                        await run.receive(index)
                elif index in run.delivered:
                    assert await run.receive(index) is False
                    await run.check_counts()
                else:
                    assert await run.receive(index) is True
                    run.delivered.add(index)
                    if not run.complete:
                        await run.check_counts()
            await assert_saved_identically(run)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- 2. loss and re-requests -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(payload=payloads(), data=st.data())
def test_lost_chunks_are_exactly_the_missing_ones_until_re_requests_complete_the_file(
    payload: Payload, data: st.DataObject
) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, payload)
        try:
            first = data.draw(st.permutations(range(run.total)), label="first pass")
            arrives = data.draw(st.lists(st.booleans(), min_size=run.total, max_size=run.total))
            for index, arrived in zip(first, arrives, strict=True):
                if arrived:
                    assert await run.receive(index) is True
                    run.delivered.add(index)
                if not run.complete:
                    await run.check_counts()
            for _ in range(run.total + 1):  # every round stores at least one chunk
                missing = await run.receiver.missing_chunks(run.tid)
                assert missing == run.undelivered()
                if not missing:
                    break
                round_order = data.draw(st.permutations(missing), label="re-request")
                lost = data.draw(st.lists(st.booleans(), min_size=len(missing) - 1))
                for index, is_lost in zip(round_order, [False, *lost], strict=False):
                    if is_lost:
                        continue
                    assert await run.receive(index) is True
                    run.delivered.add(index)
                    if not run.complete:
                        await run.check_counts()
            else:
                pytest.fail("missing_chunks never became empty")
            await assert_saved_identically(run)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- 3. corruption ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(payload=payloads(min_chunks=1, max_chunks=24), data=st.data())
def test_corrupted_frames_are_refused_uncounted_and_the_good_frame_completes_the_file(
    payload: Payload, data: st.DataObject
) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, payload)
        try:
            for index in data.draw(st.permutations(range(run.total)), label="order"):
                for how in data.draw(st.lists(corruptions, max_size=3), label=f"damage {index}"):
                    damaged, expected = corrupt(run.frames[index], how)
                    with pytest.raises(expected):
                        await run.receive(index, damaged)
                    await run.check_counts()
                    assert index in await run.receiver.missing_chunks(run.tid)
                assert await run.receive(index) is True
                run.delivered.add(index)
                if not run.complete:
                    await run.check_counts()
            await assert_saved_identically(run)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- 4. pause and resume ---------------------------------------------------------------

pause_actions = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 2**16)),
        st.tuples(st.just("pause"), st.just(0)),
        st.tuples(st.just("resume"), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(payload=payloads(min_chunks=1), actions=pause_actions)
def test_chunks_are_refused_and_uncounted_while_paused_and_accepted_after_resume(
    payload: Payload, actions: list[tuple[str, int]]
) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, payload)
        paused = False
        try:
            for action, value in actions:
                if run.complete:
                    break
                if action == "pause" and paused:
                    with pytest.raises(InvalidTransition):
                        await run.receiver.pause_transfer(run.tid)
                elif action == "pause":
                    assert await run.receiver.pause_transfer(run.tid) is True
                    paused = True
                elif action == "resume" and not paused:
                    with pytest.raises(InvalidTransition):
                        await run.receiver.resume_transfer(run.tid)
                elif action == "resume":
                    assert await run.receiver.resume_transfer(run.tid) is True
                    paused = False
                elif paused:
                    with pytest.raises(TransferNotActive):
                        await run.receive(value % run.total)
                else:
                    index = value % run.total
                    assert await run.receive(index) is (index not in run.delivered)
                    run.delivered.add(index)
                if not run.complete:
                    await run.check_counts("paused" if paused else "active")
            if paused:
                await run.receiver.resume_transfer(run.tid)
            for index in run.undelivered():
                assert await run.receive(index) is True
                run.delivered.add(index)
            await assert_saved_identically(run)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- 5. restarts -----------------------------------------------------------------------

restart_actions = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 2**16)),
        st.tuples(st.just("restart"), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(payload=payloads(min_chunks=1), actions=restart_actions)
def test_restarted_receiver_resumes_with_exactly_the_undelivered_chunks_missing(
    payload: Payload, actions: list[tuple[str, int | bool]]
) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, payload)
        try:
            for action, value in actions:
                if run.complete:
                    break
                if action == "restart":
                    await restart_receiver(run, same_offer=bool(value))
                else:
                    index = int(value) % run.total
                    assert await run.receive(index) is (index not in run.delivered)
                    run.delivered.add(index)
                if not run.complete:
                    await run.check_counts()
            for index in run.undelivered():
                assert await run.receive(index) is True
                run.delivered.add(index)
            await assert_saved_identically(run)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def recorded_after_tear(record: bytes, cut: int) -> tuple[set[int], set[int]] | None:
    """(chunks the record claims, chunks its complete lines still claim after the last
    ``cut`` bytes are torn off), or None if the tear reaches into the header line."""
    header, _, body = record.partition(b"\n")
    claimed = {int(line.split()[0]) for line in body.splitlines()}
    kept = record[: len(record) - cut]
    if len(kept) < len(header):
        return None
    kept_body = kept[len(header) + 1 :]
    complete = kept_body[: kept_body.rfind(b"\n") + 1]
    return claimed, {int(line.split()[0]) for line in complete.splitlines()}


@settings(max_examples=200, deadline=None)
@given(
    payload=payloads(min_chunks=1),
    cut=st.integers(1, 40),
    same_offer=st.booleans(),
    data=st.data(),
)
def test_torn_record_resumes_without_ever_producing_a_wrong_file(
    payload: Payload, cut: int, same_offer: bool, data: st.DataObject
) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, payload)
        try:
            order = data.draw(st.permutations(range(run.total)), label="order")
            stop = data.draw(st.integers(0, run.total - 1), label="delivered before the crash")
            for index in order[:stop]:
                assert await run.receive(index) is True
                run.delivered.add(index)
            await run.receiver.close()
            (record,) = (run.download_dir / PARTS_DIR).glob("*" + RECORD_SUFFIX)
            text = record.read_bytes()
            tear = min(cut, len(text))
            os.truncate(record, len(text) - tear)

            await restart_receiver(run, same_offer=same_offer)
            missing = set(await run.receiver.missing_chunks(run.tid))
            survived = recorded_after_tear(text, tear)
            assert set(run.undelivered()) <= missing  # never claims a chunk it lacks
            if survived is None:  # the header is gone: a fresh start
                assert missing == set(range(run.total))
            else:
                claimed, kept = survived
                assert claimed == run.delivered
                assert missing == set(range(run.total)) - kept
            run.delivered -= missing
            await run.check_counts()
            for index in sorted(missing):
                assert await run.receive(index) is True
                run.delivered.add(index)
            await assert_saved_identically(run, only_file=survived is not None)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- everything at once ----------------------------------------------------------------

chaos_actions = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 2**16), st.none()),
        st.tuples(st.just("corrupt"), st.integers(0, 2**16), corruptions),
        st.tuples(st.just("pause"), st.just(0), st.none()),
        st.tuples(st.just("resume"), st.just(0), st.none()),
        st.tuples(st.just("restart"), st.integers(0, 1), st.none()),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(payload=payloads(min_chunks=1), actions=chaos_actions)
def test_any_mix_of_loss_duplicates_corruption_pauses_and_restarts_yields_identical_file(
    payload: Payload, actions: list[tuple[str, int, tuple[str, int, int] | None]]
) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, payload)
        paused = False
        try:
            for action, value, how in actions:
                if run.complete:
                    break
                index = value % run.total
                if action == "pause":
                    if paused:
                        with pytest.raises(InvalidTransition):
                            await run.receiver.pause_transfer(run.tid)
                    else:
                        await run.receiver.pause_transfer(run.tid)
                    paused = True
                elif action == "resume":
                    if not paused:
                        with pytest.raises(InvalidTransition):
                            await run.receiver.resume_transfer(run.tid)
                    else:
                        await run.receiver.resume_transfer(run.tid)
                    paused = False
                elif action == "restart":
                    await restart_receiver(run, same_offer=bool(value))
                    paused = False  # a resumed transfer is accepted afresh
                elif action == "deliver" and paused:
                    with pytest.raises(TransferNotActive):
                        await run.receive(index)
                elif action == "deliver":
                    assert await run.receive(index) is (index not in run.delivered)
                    run.delivered.add(index)
                else:
                    assert how is not None
                    damaged, expected = corrupt(run.frames[index], how)
                    if paused or index in run.delivered:
                        # refused, or at most recognised as a duplicate: never stored
                        try:
                            stored = await run.receive(index, damaged)
                        except REJECTED:
                            pass
                        else:
                            assert stored is False
                            assert index in run.delivered
                    else:
                        with pytest.raises(expected):
                            await run.receive(index, damaged)
                if not run.complete:
                    await run.check_counts("paused" if paused else "active")
            if paused and not run.complete:
                await run.receiver.resume_transfer(run.tid)
            for index in run.undelivered():
                assert await run.receive(index) is True
                run.delivered.add(index)
            await assert_saved_identically(run)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- 6. hostile file names -------------------------------------------------------------


def assert_safe_name(name: str) -> None:
    assert name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in name), repr(name)
    assert len(name.encode()) <= 255


@settings(max_examples=300, deadline=None)
@given(
    name=hostile_names,
    payload=payloads(max_chunks=8),
    data=st.data(),
)
def test_hostile_file_names_are_saved_as_one_safe_name_directly_in_the_download_dir(
    name: str, payload: Payload, data: st.DataObject
) -> None:
    content, chunk_size = payload.content, payload.chunk_size

    async def scenario(root: Path) -> None:
        source = write_source(root, content)
        (root / "inbox").mkdir()
        (root / "inbox" / "neighbour.txt").write_bytes(b"keep me")
        before = files_under(root)
        sender, tid, frames = await new_sender(source, chunk_size)
        download_dir = root / "inbox" / "downloads"
        receiver = await new_receiver(download_dir, sender.offer(tid), filename=name)
        try:
            reported = (await receiver.get_progress(tid))["filename"]
            assert_safe_name(reported)
            for index in data.draw(st.permutations(range(len(frames))), label="order"):
                assert await receiver.receive_chunk(tid, index, frames[index]) is True
            progress = await receiver.get_progress(tid)
            assert progress["status"] == "completed"
            saved = Path(progress["saved_path"])
            assert saved.parent == download_dir
            assert_safe_name(saved.name)
            assert saved.read_bytes() == content
            assert saved.name == reported  # the transfer object names the file it made
            # new: the download dir, the saved file, and the engine's own (now empty)
            # hidden part-file directory; nothing else, anywhere
            parts = download_dir / PARTS_DIR
            assert files_under(root) - before - {parts} == {download_dir, saved}
            assert part_files(download_dir) == []
            assert before <= files_under(root)
            assert (root / "inbox" / "neighbour.txt").read_bytes() == b"keep me"
            assert source.read_bytes() == content
        finally:
            await sender.close()
            await receiver.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- 7. same name, different files -----------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(
    name=st.one_of(st.sampled_from(["report.txt", "archive.tar.gz", "README"]), hostile_names),
    files=st.lists(
        st.integers(0, 400).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        min_size=2,
        max_size=4,
    ),
    squatter=st.none() | st.binary(max_size=50),
    chunk_size=st.integers(16, 64),
    data=st.data(),
)
def test_files_with_the_same_name_never_overwrite_each_other_or_an_existing_file(
    name: str,
    files: list[bytes],
    squatter: bytes | None,
    chunk_size: int,
    data: st.DataObject,
) -> None:
    async def scenario(root: Path) -> None:
        download_dir = root / "downloads"
        download_dir.mkdir()
        base = sanitize_filename(name)
        if squatter is not None:  # the user already has a file of that name
            (download_dir / base).write_bytes(squatter)
        receiver_frames: list[tuple[str, list[bytes]]] = []
        senders = []
        receiver = FileTransferManager(64, download_dir=download_dir, max_transfers_per_user=50)
        try:
            for n, content in enumerate(files):
                source_dir = root / f"sender{n}"
                source_dir.mkdir()
                source = source_dir / "payload.bin"
                source.write_bytes(content)
                sender, tid, frames = await new_sender(source, chunk_size)
                senders.append(sender)
                body = sender.offer(tid).model_dump(mode="json")
                body["filename"] = name
                await receiver.register_offer(body, SENDER, ROOM)
                await receiver.accept_transfer(tid)
                receiver_frames.append((tid, frames))
            # every transfer's chunks, interleaved in one arbitrary order
            pending = [
                (t, i) for t, (_, frames) in enumerate(receiver_frames) for i in range(len(frames))
            ]
            for t, i in data.draw(st.permutations(pending), label="interleaving"):
                tid, frames = receiver_frames[t]
                assert await receiver.receive_chunk(tid, i, frames[i]) is True
            saved: list[Path] = []
            for (tid, _), content in zip(receiver_frames, files, strict=True):
                progress = await receiver.get_progress(tid)
                assert progress["status"] == "completed"
                assert progress["filename"] == base
                path = Path(progress["saved_path"])
                assert path.parent == download_dir
                assert path.read_bytes() == content
                saved.append(path)
            assert len(set(saved)) == len(files)
            if squatter is not None:
                assert (download_dir / base).read_bytes() == squatter
                assert download_dir / base not in saved
            # the names: the one the transfers report, then its numbered copies
            names = numbered_names(base)
            taken = len(files) + (squatter is not None)
            expected = {next(names) for _ in range(taken)}
            assert set(saved_files(download_dir)) == expected
            assert part_files(download_dir) == []
        finally:
            for sender in senders:
                await sender.close()
            await receiver.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


# --- examples --------------------------------------------------------------------------


async def _transfer(run: Run) -> Path:
    for index in run.undelivered():
        assert await run.receive(index) is True
        run.delivered.add(index)
    return await assert_saved_identically(run, only_file=False)


def test_second_file_with_the_same_name_is_saved_as_a_numbered_copy() -> None:
    async def scenario(root: Path) -> None:
        first = await start(root / "a", (b"first version\n", 4), filename="report.txt")
        second_root = root / "b"
        second_root.mkdir()
        source = write_source(second_root, b"second, different version\n")
        sender, tid, frames = await new_sender(source, 4)
        first.retired.append(sender)
        receiver = await new_receiver(first.download_dir, sender.offer(tid), filename="report.txt")
        first.retired.append(receiver)
        try:
            assert (await _transfer(first)).name == "report.txt"
            for index, frame in enumerate(frames):
                assert await receiver.receive_chunk(tid, index, frame) is True
            progress = await receiver.get_progress(tid)
            assert Path(progress["saved_path"]).name == "report (1).txt"
            downloads = first.download_dir
            assert saved_files(downloads) == ["report (1).txt", "report.txt"]
            assert (downloads / "report.txt").read_bytes() == b"first version\n"
            assert (downloads / "report (1).txt").read_bytes() == b"second, different version\n"
        finally:
            await first.close()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        asyncio.run(scenario(Path(tmp)))


@pytest.mark.parametrize("offered", ["report.txt", "caf\u0065\u0301.txt", 'A"\u0300.txt'])
def test_saved_file_has_exactly_the_name_the_transfer_reports(offered: str) -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, (b"some bytes", 4), filename=offered)
        try:
            reported = (await run.receiver.get_progress(run.tid))["filename"]
            saved = await _transfer(run)
            assert saved.name == reported
            assert reported == unicodedata.normalize("NFC", reported)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def test_completed_transfer_reports_no_missing_chunks() -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, (b"x" * 40, 16))
        try:
            assert await run.receiver.missing_chunks(run.tid) == [0, 1, 2]
            await _transfer(run)
            assert await run.receiver.missing_chunks(run.tid) == []
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def test_empty_file_completes_on_accept_with_nothing_missing() -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, (b"", 16))
        try:
            saved = await assert_saved_identically(run)
            assert saved.name == "payload.bin"
            assert await run.receiver.missing_chunks(run.tid) == []
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def test_chunk_before_accept_is_refused_as_not_active() -> None:
    async def scenario(root: Path) -> None:
        sender, tid, frames = await new_sender(write_source(root, b"hello world"), 4)
        receiver = FileTransferManager(4, download_dir=root / "downloads")
        try:
            await receiver.register_offer(sender.offer(tid), SENDER, ROOM)
            with pytest.raises(TransferNotActive):
                await receiver.receive_chunk(tid, 0, frames[0])
            assert not (root / "downloads").exists()
        finally:
            await sender.close()
            await receiver.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def test_chunk_of_the_wrong_size_is_refused_and_not_counted() -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, (b"0123456789abcdef", 8))
        try:
            # raw bytes with their checksum: 4 bytes where chunk 0 has 8
            with pytest.raises(ChunkSizeMismatch):
                await run.receiver.receive_chunk(
                    run.tid, 0, b"0123", hashlib.sha256(b"0123").hexdigest()
                )
            # a frame that carries only the first half of chunk 1
            with pytest.raises(ChunkSizeMismatch):
                await run.receive(1, run.frames[1][:-4])
            await run.check_counts()
            await _transfer(run)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def test_offer_with_a_wrong_file_sha256_fails_integrity_and_saves_nothing() -> None:
    async def scenario(root: Path) -> None:
        sender, tid, frames = await new_sender(write_source(root, b"genuine content"), 4)
        download_dir = root / "downloads"
        body = sender.offer(tid).model_dump(mode="json")
        body["sha256"] = "0" * 64
        receiver = FileTransferManager(4, download_dir=download_dir)
        try:
            await receiver.register_offer(body, SENDER, ROOM)
            await receiver.accept_transfer(tid)
            for index in range(len(frames) - 1):
                assert await receiver.receive_chunk(tid, index, frames[index]) is True
            with pytest.raises(IntegrityError):
                await receiver.receive_chunk(tid, len(frames) - 1, frames[-1])
            progress = await receiver.get_progress(tid)
            assert progress["status"] == "failed"
            assert progress["saved_path"] is None
            assert saved_files(download_dir) == []
            assert part_files(download_dir) == []
        finally:
            await sender.close()
            await receiver.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def test_cancel_removes_the_part_file_and_its_record() -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, (b"z" * 100, 16))
        try:
            await run.receive(3)
            assert saved_files(run.download_dir) == []
            assert part_files(run.download_dir) == [
                "payload.bin" + PART_SUFFIX,
                "payload.bin" + RECORD_SUFFIX,
            ]
            await run.receiver.cancel_transfer(run.tid)
            assert (await run.receiver.get_progress(run.tid))["status"] == "cancelled"
            assert saved_files(run.download_dir) == []
            assert part_files(run.download_dir) == []
            with pytest.raises(TransferNotActive):
                await run.receive(4)
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


def test_resume_finds_the_part_of_the_same_content_among_parts_with_the_same_name() -> None:
    async def scenario(root: Path) -> None:
        a = await start(root / "a", (b"A" * 64 + b"a" * 36, 16), filename="same.bin")
        b_root = root / "b"
        b_root.mkdir()
        b_sender, b_tid, b_frames = await new_sender(write_source(b_root, b"B" * 100), 16)
        b_receiver = await new_receiver(a.download_dir, b_sender.offer(b_tid), filename="same.bin")
        a.retired += [b_sender, b_receiver]
        try:
            await a.receive(0)
            a.delivered.add(0)
            for index in (1, 5):
                assert await b_receiver.receive_chunk(b_tid, index, b_frames[index]) is True
            await b_receiver.close()
            await a.receiver.close()
            # resume b first (new manager, same offer), then a (a new sender's offer)
            b_again = await new_receiver(a.download_dir, b_sender.offer(b_tid), filename="x")
            a.retired.append(b_again)
            assert await b_again.missing_chunks(b_tid) == [0, 2, 3, 4, 6]
            await restart_receiver(a, same_offer=False)
            await a.check_counts()
            for index in (0, 2, 3, 4, 6):
                assert await b_again.receive_chunk(b_tid, index, b_frames[index]) is True
            saved_a = await _transfer(a)
            saved_b = Path((await b_again.get_progress(b_tid))["saved_path"])
            assert saved_b.read_bytes() == b"B" * 100
            assert saved_a.read_bytes() == b"A" * 64 + b"a" * 36
            assert saved_files(a.download_dir) == sorted([saved_a.name, saved_b.name])
            assert part_files(a.download_dir) == []
        finally:
            await a.close()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        asyncio.run(scenario(Path(tmp)))


def test_resume_ignores_a_part_of_the_same_file_in_another_chunk_size() -> None:
    async def scenario(root: Path) -> None:
        run = await start(root, (bytes(range(200)), 16))
        try:
            for index in (0, 1, 2):
                await run.receive(index)
            await run.receiver.close()
            sender, tid, frames = await new_sender(run.source, 32)
            run.retired.append(sender)
            other = await new_receiver(run.download_dir, sender.offer(tid))
            run.retired.append(other)
            assert await other.missing_chunks(tid) == list(range(len(frames)))
            for index, frame in enumerate(frames):
                assert await other.receive_chunk(tid, index, frame) is True
            saved = Path((await other.get_progress(tid))["saved_path"])
            assert saved.read_bytes() == bytes(range(200))
        finally:
            await run.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


@pytest.mark.parametrize("record_claims_every_chunk", [False, True])
def test_received_files_named_like_a_part_and_its_record_never_become_a_resume_target(
    record_claims_every_chunk: bool,
) -> None:
    """A peer sends ``victim.part`` and ``victim.part.jsonl`` (or the user already has a
    ``victim.part``), the second holding a forged record header naming other content.
    A later offer of that content must start a fresh part file: the completed file
    ``victim.part`` must not be written into, moved, or deleted."""

    async def scenario(root: Path) -> None:
        download_dir = root / "downloads"
        target = b"T" * 48  # the content the later offer carries
        victim = b"user's own file, keep it intact"
        outbox = root / "outbox"
        outbox.mkdir()
        managers: list[FileTransferManager] = []
        try:
            victim_src = outbox / "v"
            victim_src.write_bytes(victim)
            later_src = outbox / "later.bin"
            later_src.write_bytes(target)
            later_sender, later_tid, later_frames = await new_sender(later_src, 16)
            managers.append(later_sender)
            later_offer = later_sender.offer(later_tid)
            header = {
                "roomdrop_part": 1,
                "sha256": later_offer.sha256,
                "file_size": len(target),
                "chunk_size": 16,
                "total_chunks": 3,
                "filename": "victim",
            }
            forged_src = outbox / "f"
            claimed = "0\n1\n2\n" if record_claims_every_chunk else ""
            forged_src.write_text(json.dumps(header) + "\n" + claimed, encoding="utf-8")
            receiver = FileTransferManager(16, download_dir=download_dir)
            managers.append(receiver)
            for source, name in ((victim_src, "victim.part"), (forged_src, "victim.part.jsonl")):
                sender, tid, frames = await new_sender(source, 16)
                managers.append(sender)
                body = sender.offer(tid).model_dump(mode="json")
                body["filename"] = name
                await receiver.register_offer(body, SENDER, ROOM)
                await receiver.accept_transfer(tid)
                for index, frame in enumerate(frames):
                    assert await receiver.receive_chunk(tid, index, frame) is True
                assert Path((await receiver.get_progress(tid))["saved_path"]).name == name
            await receiver.register_offer(later_offer, SENDER, ROOM)
            await receiver.accept_transfer(later_tid)
            assert await receiver.missing_chunks(later_tid) == [0, 1, 2]
            for index, frame in enumerate(later_frames):
                assert await receiver.receive_chunk(later_tid, index, frame) is True
            assert (download_dir / "victim.part").read_bytes() == victim
            saved = Path((await receiver.get_progress(later_tid))["saved_path"])
            assert saved.read_bytes() == target
        finally:
            for manager in managers:
                await manager.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))
