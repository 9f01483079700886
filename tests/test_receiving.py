"""The receiving end's file work (roomdrop.receiving), through FileTransferManager over
real part files: chunks damaged on disk cost only themselves, whether the damage is
found when a part file is resumed or by the whole-file check at the end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomdrop import FileTransferManager, IntegrityError
from roomdrop.exceptions import BadChecksum, DamagedChunks, Infected, ScanUnavailable
from roomdrop.protocol.transfer import Transfer
from roomdrop.receiving import MAX_REPAIR_ROUNDS
from roomdrop.storage import PART_SUFFIX, PARTS_DIR, RECORD_SUFFIX, ContentKey, PartFile

CHUNK = 4096
TOTAL = 64
SIZE = TOTAL * CHUNK - 1000  # the last chunk is short


def write_file(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Ends:
    """A sending manager and a receiving one (restartable) on a download directory."""

    def __init__(self, root: Path, size: int = SIZE, chunk: int = CHUNK) -> None:
        self.src = write_file(root / "movie.bin", size)
        self.inbox = root / "inbox"
        self.chunk = chunk
        self.sender = FileTransferManager(chunk, download_dir=None)
        self.receiver = FileTransferManager(chunk, download_dir=self.inbox)
        self.tid = ""

    async def offer(self) -> None:
        self.tid = (await self.sender.create_offer(self.src, "alice", "bob", "r"))["transfer_id"]
        await self.sender.accept_transfer(self.tid)
        await self.receiver.register_offer(self.sender.offer(self.tid), "alice", "r")
        await self.receiver.accept_transfer(self.tid)

    async def restart(self) -> None:
        """The receiving process ends and a new one takes the same offer up again."""
        await self.receiver.close()
        self.receiver = FileTransferManager(self.chunk, download_dir=self.inbox)
        await self.receiver.register_offer(self.sender.offer(self.tid), "alice", "r")
        await self.receiver.accept_transfer(self.tid)

    async def deliver(self, indexes: list[int]) -> None:
        for i in indexes:
            frame = await self.sender.send_chunk(self.tid, i)
            assert await self.receiver.receive_chunk(self.tid, i, frame) is True

    async def missing(self) -> list[int]:
        return await self.receiver.missing_chunks(self.tid)

    async def progress(self) -> dict[str, object]:
        return await self.receiver.get_progress(self.tid)

    @property
    def part(self) -> Path:
        (part,) = (self.inbox / PARTS_DIR).glob("*" + PART_SUFFIX)
        return part

    def damage(self, indexes: list[int], at: int = 100, length: int = 4096) -> None:
        """Flip ``length`` bytes inside each chunk (within its end), in the part file."""
        with self.part.open("r+b") as f:
            for i in indexes:
                start = i * self.chunk + min(at, self.chunk - 1)
                f.seek(start)
                block = f.read(min(length, self.chunk - at))
                f.seek(start)
                f.write(bytes(b ^ 0xFF for b in block))

    def as_previous_version(self) -> None:
        """Rewrite the record as the version before per-chunk digests did (format 1)."""
        (record,) = (self.inbox / PARTS_DIR).glob("*" + RECORD_SUFFIX)
        header, _, body = record.read_text().partition("\n")
        fields = json.loads(header)
        fields["roomdrop_part"] = 1
        indexes = [line.split()[0] for line in body.splitlines()]
        record.write_text("\n".join([json.dumps(fields), *indexes]) + "\n")

    def bytes_of(self, count: int, *, with_last: bool = False) -> int:
        return count * self.chunk - (self.chunk * TOTAL - SIZE if with_last else 0)

    async def saved(self) -> Path:
        progress = await self.progress()
        assert progress["status"] == "completed"
        saved = Path(str(progress["saved_path"]))
        assert sha(saved) == sha(self.src)
        assert list((self.inbox / PARTS_DIR).iterdir()) == []
        return saved

    async def close(self) -> None:
        await self.sender.close()
        await self.receiver.close()


@pytest.fixture
async def ends(tmp_path: Path) -> Ends:
    e = Ends(tmp_path)
    await e.offer()
    return e


# --- found at the resume -------------------------------------------------------------


async def test_chunks_damaged_between_two_runs_are_dropped_at_the_resume(ends: Ends) -> None:
    await ends.deliver(list(range(40)))
    await ends.receiver.close()
    ends.damage([5, 17, 30])

    await ends.restart()
    assert await ends.missing() == [5, 17, 30, *range(40, TOTAL)]
    assert (await ends.progress())["bytes_transferred"] == ends.bytes_of(37)
    # the record no longer claims them: a third run asks for them too, without damage
    await ends.restart()
    assert await ends.missing() == [5, 17, 30, *range(40, TOTAL)]
    await ends.deliver(await ends.missing())
    await ends.saved()


# --- found by the whole-file check -----------------------------------------------------


async def test_a_whole_file_mismatch_asks_for_only_the_chunks_that_fail_their_sha256(
    ends: Ends,
) -> None:
    """Damage in this run, after the chunks were written: in reverse order, nothing is
    hashed for the whole file until chunk 0 lands, so the check sees the damage."""
    await ends.deliver(list(range(TOTAL - 1, 0, -1)))
    ends.damage([9, 44])
    frame = await ends.sender.send_chunk(ends.tid, 0)
    with pytest.raises(DamagedChunks) as raised:
        await ends.receiver.receive_chunk(ends.tid, 0, frame)
    assert raised.value.chunk_indexes == [9, 44]
    assert isinstance(raised.value, BadChecksum)  # a client asks for them as for one
    assert "does not match the offer's" in str(raised.value)
    progress = await ends.progress()
    assert progress["status"] == "active"
    assert progress["bytes_transferred"] == ends.bytes_of(TOTAL - 2, with_last=True)
    assert await ends.missing() == [9, 44]

    await ends.deliver([9, 44])
    await ends.saved()


async def test_chunks_of_a_previous_version_record_are_taken_on_trust_then_repaired(
    ends: Ends,
) -> None:
    """Without digests nothing says which held chunk is bad: the resume costs nothing,
    and only if the whole file is wrong are they all asked for again."""
    await ends.deliver(list(range(40)))
    await ends.receiver.close()
    ends.as_previous_version()
    ends.damage([7])

    await ends.restart()
    assert await ends.missing() == list(range(40, TOTAL))
    with pytest.raises(DamagedChunks) as raised:
        await ends.deliver(list(range(40, TOTAL)))
    assert raised.value.chunk_indexes == list(range(40))
    assert await ends.missing() == list(range(40))
    await ends.deliver(list(range(40)))
    await ends.saved()


async def test_an_undamaged_record_of_the_previous_version_resumes_at_no_cost(
    ends: Ends,
) -> None:
    await ends.deliver(list(range(40)))
    await ends.receiver.close()
    ends.as_previous_version()
    await ends.restart()
    await ends.deliver(await ends.missing())  # no DamagedChunks: nothing asked for again
    await ends.saved()


@pytest.mark.parametrize(("previous_version", "asked"), [(False, [12]), (True, list(range(TOTAL)))])
async def test_a_complete_part_file_left_damaged_is_repaired_from_the_accept(
    tmp_path: Path, previous_version: bool, asked: list[int]
) -> None:
    """Every chunk written, the process gone before the file was placed, one chunk then
    damaged: with digests the resume drops it; without, the check that the accept runs
    drops them all, and the accept itself succeeds, its missing list asking for them."""
    e = Ends(tmp_path)
    content = e.src.read_bytes()
    key = ContentKey(sha(e.src), SIZE, CHUNK)
    part = PartFile.open(e.inbox, "movie.bin", key)
    for i in range(TOTAL):
        assert part.write_chunk(i, content[i * CHUNK : (i + 1) * CHUNK])
    part.close()
    e.damage([12])
    if previous_version:
        e.as_previous_version()

    await e.offer()
    assert (await e.progress())["status"] == "active"
    assert await e.missing() == asked
    await e.deliver(asked)
    await e.saved()
    await e.close()


async def test_repairs_are_bounded_then_the_transfer_fails_with_integrity_error(
    ends: Ends,
) -> None:
    await ends.deliver(list(range(TOTAL - 1, 0, -1)))
    ends.damage([3])
    with pytest.raises(DamagedChunks):
        await ends.deliver([0])
    # damage that keeps coming back: another chunk each round
    for round_, (again, then) in enumerate([(3, 20), (20, 33), (33, 50)], start=2):
        ends.damage([then])
        if round_ <= MAX_REPAIR_ROUNDS:
            with pytest.raises(DamagedChunks) as raised:
                await ends.deliver([again])
            assert raised.value.chunk_indexes == [then]
        else:
            frame = await ends.sender.send_chunk(ends.tid, again)
            with pytest.raises(IntegrityError, match=r"\(still, after 3 repairs\)"):
                await ends.receiver.receive_chunk(ends.tid, again, frame)
    progress = await ends.progress()
    assert progress["status"] == "failed" and progress["error_code"] == "integrity-error"
    assert list((ends.inbox / PARTS_DIR).iterdir()) == []


async def test_a_whole_file_mismatch_fails_the_transfer_and_places_nothing(
    tmp_path: Path,
) -> None:
    """Every chunk is what the sender sent, yet the whole is not what it offered: no
    chunk to ask for again, so the transfer fails at once (moved from test_manager)."""
    src = write_file(tmp_path / "report.pdf", 1_000_000)
    sender = FileTransferManager(download_dir=None)
    receiver = FileTransferManager(download_dir=tmp_path / "inbox")
    tid = (await sender.create_offer(src, "alice", "bob", "r"))["transfer_id"]
    lying = sender.offer(tid).model_copy(update={"sha256": "0" * 64})
    await receiver.register_offer(lying, "alice", "r")
    await receiver.accept_transfer(tid)
    await sender.accept_transfer(tid)
    for i in range(15):
        await receiver.receive_chunk(tid, i, await sender.send_chunk(tid, i))
    with pytest.raises(IntegrityError, match="does not match the offer's 0000"):
        await receiver.receive_chunk(tid, 15, await sender.send_chunk(tid, 15))
    progress = await receiver.get_progress(tid)
    assert progress["status"] == "failed" and "does not match" in progress["error"]
    assert progress["saved_path"] is None
    assert list((tmp_path / "inbox").rglob("*")) == [tmp_path / "inbox" / ".roomdrop-parts"]


# --- the scan hook (the receiver's malware scan) ---------------------------------------


class Scan:
    """A ``scan`` hook that remembers what it saw and answers with ``verdict``: None
    (clean), or the error to raise."""

    def __init__(self, verdict: Exception | None = None) -> None:
        self.verdict = verdict
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, record: Transfer, path: Path) -> None:
        self.seen.append((record.transfer_id, path.read_bytes()))
        if self.verdict is not None:
            raise self.verdict


def scanning(ends: Ends, scan: Scan) -> None:
    ends.receiver.scan = scan  # read when the part file is opened (the accept)


async def test_a_clean_verified_file_is_scanned_once_then_placed(tmp_path: Path) -> None:
    ends, scan = Ends(tmp_path), Scan()
    scanning(ends, scan)
    await ends.offer()
    await ends.deliver(list(range(TOTAL)))
    await ends.saved()
    assert scan.seen == [(ends.tid, ends.src.read_bytes())]  # the whole file, verified


async def test_an_infected_file_is_deleted_never_placed_and_the_transfer_fails(
    tmp_path: Path,
) -> None:
    ends = Ends(tmp_path)
    scanning(ends, Scan(Infected("x", "Test.Sig", "movie.bin is infected: Test.Sig")))
    await ends.offer()
    await ends.deliver(list(range(TOTAL - 1)))
    frame = await ends.sender.send_chunk(ends.tid, TOTAL - 1)
    with pytest.raises(Infected, match=r"Test\.Sig"):
        await ends.receiver.receive_chunk(ends.tid, TOTAL - 1, frame)
    progress = await ends.progress()
    assert (progress["status"], progress["error_code"]) == ("failed", "infected")
    assert progress["error"] == "movie.bin is infected: Test.Sig"
    assert progress["saved_path"] is None
    assert list(ends.inbox.rglob("*")) == [ends.inbox / PARTS_DIR]


async def test_a_file_that_cannot_be_scanned_stays_unplaced_for_a_later_scan(
    tmp_path: Path,
) -> None:
    ends = Ends(tmp_path)
    scanning(ends, Scan(ScanUnavailable("clamd is down")))
    await ends.offer()
    await ends.deliver(list(range(TOTAL - 1)))
    frame = await ends.sender.send_chunk(ends.tid, TOTAL - 1)
    with pytest.raises(ScanUnavailable):
        await ends.receiver.receive_chunk(ends.tid, TOTAL - 1, frame)
    progress = await ends.progress()
    assert (progress["status"], progress["error_code"]) == ("failed", "scan-unavailable")
    assert progress["saved_path"] is None
    kept = sorted(p.name for p in (ends.inbox / PARTS_DIR).iterdir())
    assert kept == ["movie.bin" + PART_SUFFIX, "movie.bin" + RECORD_SUFFIX]
    assert sha(ends.part) == sha(ends.src)
    # still down at the next run: the accept scans again, and keeps the part file again
    await ends.receiver.close()
    ends.receiver = FileTransferManager(ends.chunk, download_dir=ends.inbox)
    scanning(ends, Scan(ScanUnavailable("clamd is down")))
    await ends.receiver.register_offer(ends.sender.offer(ends.tid), "alice", "r")
    with pytest.raises(ScanUnavailable):
        await ends.receiver.accept_transfer(ends.tid)
    assert sorted(p.name for p in (ends.inbox / PARTS_DIR).iterdir()) == kept
    # back: the accept of the same content (every chunk held) scans it and places it
    await ends.receiver.close()
    ends.receiver = FileTransferManager(ends.chunk, download_dir=ends.inbox)
    back = Scan()
    scanning(ends, back)
    await ends.receiver.register_offer(ends.sender.offer(ends.tid), "alice", "r")
    await ends.receiver.accept_transfer(ends.tid)
    assert await ends.missing() == []
    await ends.saved()
    assert back.seen == [(ends.tid, ends.src.read_bytes())]


# --- any damage, any run ---------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(data=st.data(), chunk=st.sampled_from([1, 7, 64]), total=st.integers(1, 24))
def test_any_chunks_damaged_between_runs_are_exactly_what_is_missing_again(
    data: st.DataObject, chunk: int, total: int
) -> None:
    size = data.draw(st.integers((total - 1) * chunk + 1, total * chunk), label="size")

    async def scenario(root: Path) -> None:
        e = Ends(root, size, chunk)
        await e.offer()
        try:
            delivered = data.draw(st.sets(st.sampled_from(range(total))), label="delivered")
            if len(delivered) == total:
                delivered.discard(total - 1)
            await e.deliver(sorted(delivered))
            await e.receiver.close()
            hit: set[int] = set()
            if delivered:
                hit = data.draw(st.sets(st.sampled_from(sorted(delivered))), label="damaged")
                with e.part.open("r+b") as f:
                    for i in hit:
                        length = min(chunk, size - i * chunk)
                        at = i * chunk + data.draw(st.integers(0, length - 1), label="at")
                        f.seek(at)
                        byte = f.read(1)
                        f.seek(at)
                        f.write(bytes([byte[0] ^ data.draw(st.integers(1, 255), label="x")]))
            await e.restart()
            missing = await e.missing()
            assert missing == sorted(set(range(total)) - delivered | hit)
            await e.deliver(missing)
            await e.saved()
        finally:
            await e.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))
