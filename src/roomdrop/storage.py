"""Files on disk: the sender's source file and the receiver's part file and record.

This is the file-system adapter of the engine. Its functions are blocking; the
manager calls them in worker threads. Nothing here ever holds a whole file in memory.

Receiver layout, in the download directory::

    report.pdf                        a completed file
    .roomdrop-parts/
        movie.mkv.part                a file being received; chunk i at i*chunk_size
        movie.mkv.part.jsonl          its record (:mod:`roomdrop.record`): a JSON
                                      header naming the content, then one line per
                                      chunk held, its index and its data's sha256

Part files live in their own hidden directory, which no received file can ever be
placed in (sanitised names never start with a dot), so a received file named like a
part file or a record can never be mistaken for one and resumed into.

A chunk's line is appended to the record only after its data was written, so the
record never claims a chunk that is not in the part file (a torn last line is dropped
when the record is next opened). Resume is content-addressed: :meth:`PartFile.open`
looks for a record with the same sha256, size and chunk size, whatever its name, and
re-reads the chunks it holds once, dropping those whose data no longer match their
recorded sha256. When every chunk is in, the whole file's sha256 is checked; if it is
wrong, :meth:`PartFile.damaged` finds the chunks to fetch again. The data are written
back to disk as they land (``fdatasync`` in a thread of its own every
:data:`_WRITE_BACK_EVERY` bytes), so that the whole file's fsync, once its sha256 is
right, has little left to write; then the part file is linked into place under a name
that is not taken (``report (1).pdf``), then the part file and its record are removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

from roomdrop.protocol.chunks import ChunkSet, ranges_of
from roomdrop.protocol.names import numbered_names, sanitize_filename
from roomdrop.record import ContentKey, Digests, parse_record, record_line, render_record
from roomdrop.source import SourceInfo, scan_source, sniff_mime_type

__all__ = [
    "PARTS_DIR",
    "PART_SUFFIX",
    "QUARANTINE_SUFFIX",
    "RECORD_SUFFIX",
    "ContentKey",
    "PartFile",
    "SourceFile",
    "SourceInfo",
    "describe_os_error",
    "find_part",
    "remove_part",
    "remove_stale_parts",
    "scan_source",
    "set_aside",
    "sniff_mime_type",
]

PARTS_DIR: Final = ".roomdrop-parts"
PART_SUFFIX: Final = ".part"
RECORD_SUFFIX: Final = ".part.jsonl"
QUARANTINE_SUFFIX: Final = ".infected"
"""Added to the name of a file kept in quarantine (:func:`set_aside`)."""
_CHECK_BLOCK: Final = 1024 * 1024
_HASH_BATCH: Final = 16  # 1 MiB of 64 KiB chunks
_HASHER: Final = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roomdrop-hash")
"""One thread that keeps every receiving file's whole-file sha256 up to date."""
_WRITE_BACK_EVERY = 16 * 1024 * 1024
"""A part file's data are written back (fdatasync) each time this many bytes landed."""
_WRITER: Final = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roomdrop-write-back")
"""One thread that writes every receiving file's data back to disk as they land."""
_datasync = getattr(os, "fdatasync", os.fsync)


def describe_os_error(exc: OSError, action: str) -> str:
    """One clear line for a failed file operation, e.g. ``disk full writing x.part``."""
    reasons = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOENT: "no such file or directory",
        errno.ENOTDIR: "not a directory",
        errno.EFBIG: "file too large for this file system",
    }
    code = exc.errno or 0
    reason = reasons.get(code, exc.strerror or str(exc))
    if code in reasons and exc.strerror and exc.strerror != os.strerror(code):
        reason = f"{reason}: {exc.strerror}"  # a detail of ours, e.g. bytes needed
    return f"{reason} ({action})"


# --- sender side -------------------------------------------------------------------


class SourceFile:
    """The sender's file, open for reading chunks at their offsets."""

    def __init__(self, info: SourceInfo) -> None:
        self.info = info
        self._fd = os.open(info.path, os.O_RDONLY)

    def read(self, offset: int, length: int) -> bytes:
        st = os.fstat(self._fd)
        if st.st_size != self.info.file_size or st.st_mtime_ns != self.info.mtime_ns:
            raise OSError(
                errno.ESTALE, "the file changed since it was offered", str(self.info.path)
            )
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise OSError(errno.EIO, "short read", str(self.info.path))
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


# --- receiver side -----------------------------------------------------------------


class PartFile:
    """A file being received, with the record of the chunks it holds and their sha256."""

    def __init__(
        self, path: Path, key: ContentKey, filename: str, held: ChunkSet, digests: Digests
    ) -> None:
        self.path = path
        self.record_path = _record_of(path)
        self.key = key
        self.filename = filename
        self.held = held
        self.digests = digests
        self.resumed_chunks = len(held)
        self.dropped_on_resume: list[int] = []
        """Chunks the record held whose data failed their sha256 when it was resumed."""
        self._fd = os.open(path, os.O_RDWR)
        self._record_fd = -1
        self._hasher = hashlib.sha256()
        self._hashed = 0  # chunks 0.._hashed-1 are in self._hasher (hashing thread only)
        self._contiguous = 0  # chunks 0.._contiguous-1 are all held
        self._hash_target = 0  # what the last hashing job was asked to reach
        self._hash_job: Future[None] | None = None
        self._unsynced = 0  # bytes written since the last write-back began
        self._sync_job: Future[None] | None = None
        self.final_sync_s: float | None = None
        """How long the fsync before placing took (:meth:`place`), for benchmarks."""

    # opening

    @classmethod
    def open(
        cls, directory: Path, filename: str, key: ContentKey, in_use: Iterable[Path] = ()
    ) -> PartFile:
        """Resume the part file of the same content for download ``directory``, or
        start one.

        A resumed part file's chunks are read once and checked against the sha256 the
        record has for each: those that fail are dropped (missing again, listed in
        :attr:`dropped_on_resume`). Chunks a format-1 record holds have no digest and
        are taken on trust; if the whole file is then wrong, :meth:`damaged` names them.
        """
        parts = directory / PARTS_DIR
        parts.mkdir(parents=True, exist_ok=True)
        found = find_part(directory, key, in_use)
        if found is not None:
            path, held, digests = found
            part = cls(path, key, filename, held, digests)
            try:
                part.dropped_on_resume = part.damaged(undigested=False)
                part._forget(part.dropped_on_resume)
                part.resumed_chunks = len(part.held)
                part._rewrite_record()  # compact, drop torn line, new filename
            except BaseException:
                part.close()
                raise
            return part
        _check_free_space(parts, key.file_size)
        return cls._create(parts, sanitize_filename(filename), key)

    @classmethod
    def _create(cls, directory: Path, filename: str, key: ContentKey) -> PartFile:
        for name in numbered_names(filename):
            part = directory / (name + PART_SUFFIX)
            record = directory / (name + RECORD_SUFFIX)
            if record.exists():
                continue
            try:
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:
                os.ftruncate(fd, key.file_size)
            finally:
                os.close(fd)
            held, digests = ChunkSet(key.total_chunks), Digests(key.total_chunks)
            _write_record(record, render_record(key, filename, held, digests))
            new = cls(part, key, filename, held, digests)
            new._record_fd = os.open(record, os.O_WRONLY | os.O_APPEND)
            return new
        raise AssertionError("unreachable")  # pragma: no cover

    # writing

    def write_chunk(
        self, index: int, data: bytes | bytearray | memoryview, digest: bytes | None = None
    ) -> bool:
        """Write a verified chunk at its offset and record it with its sha256
        (``digest``, computed here if not given); False if already held."""
        if index in self.held:
            return False
        if digest is None:
            digest = hashlib.sha256(data).digest()
        offset = index * self.key.chunk_size
        view = memoryview(data)
        self._unsynced += view.nbytes
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        os.write(self._record_fd, record_line(index, digest))
        self.held.add(index)
        self.digests.set(index, digest)
        while self._contiguous < self.key.total_chunks and self._contiguous in self.held:
            self._contiguous += 1
        job = self._hash_job
        if self._contiguous - self._hash_target >= _HASH_BATCH and (job is None or job.done()):
            self._hash_target = self._contiguous
            self._hash_job = _HASHER.submit(self._hash_up_to, self._contiguous)
        if self._unsynced >= _WRITE_BACK_EVERY:
            self._write_back()
        return True

    def _write_back(self) -> None:
        """Begin writing what landed so far back to disk (one job at a time per file).
        A job that failed is kept, not replaced: :meth:`place` raises its error (after a
        failed fdatasync the kernel may report the next one clean though data were lost)."""
        job = self._sync_job
        if job is not None and (not job.done() or job.exception() is not None):
            return
        self._unsynced = 0
        self._sync_job = _WRITER.submit(_datasync, self._fd)

    def _wait_for_write_back(self) -> None:
        job, self._sync_job = self._sync_job, None
        if job is not None:
            job.result()

    def bytes_held(self) -> int:
        return self.held.bytes_held(self.key.file_size, self.key.chunk_size)

    def _hash_up_to(self, end: int) -> None:
        """Extend the whole-file hash over chunks ``_hashed..end-1``, all on disk.

        The writer hands this, in batches of ``_HASH_BATCH`` chunks still in the page
        cache, to a hashing thread, so the whole-file check runs on another core while
        chunks keep arriving and is nearly done when the last one lands. One job at a
        time per file; :meth:`verify` waits for it and hashes what is left.
        """
        size = self.key.chunk_size
        while self._hashed < end:
            count = min(end - self._hashed, _HASH_BATCH)
            offset = self._hashed * size
            length = min(count * size, self.key.file_size - offset)
            self._hasher.update(os.pread(self._fd, length, offset))
            self._hashed += count

    def _wait_for_hashing(self) -> None:
        job, self._hash_job = self._hash_job, None
        if job is not None:
            job.result()

    # checking

    def damaged(self, *, undigested: bool) -> list[int]:
        """The held chunks whose data no longer match the sha256 the record has for
        them, in one read pass over those chunks (1 MiB at a time); with
        ``undigested``, also every held chunk the record has no sha256 for."""
        size, file_size = self.key.chunk_size, self.key.file_size
        per_read = max(1, _CHECK_BLOCK // size)
        bad = [i for i in self.held if i not in self.digests] if undigested else []
        for start, end in ranges_of(i for i in self.held if i in self.digests):
            for first in range(start, end, per_read):
                count = min(end - first, per_read)
                offset = first * size
                block = memoryview(
                    os.pread(self._fd, min(count * size, file_size - offset), offset)
                )
                for n in range(count):
                    data = block[n * size : (n + 1) * size]
                    if hashlib.sha256(data).digest() != self.digests.get(first + n):
                        bad.append(first + n)
        return sorted(bad)

    def drop(self, indexes: Iterable[int]) -> None:
        """Forget held chunks whose data are bad: they are missing again, here and in
        the record (rewritten at once), and the whole-file hash starts over."""
        self._forget(indexes)
        self._rewrite_record()

    def _forget(self, indexes: Iterable[int]) -> None:
        gone = set(indexes)
        if not gone:
            return
        self._wait_for_hashing()
        self.held = ChunkSet(self.key.total_chunks, (i for i in self.held if i not in gone))
        self.digests.forget(gone)
        self._hasher = hashlib.sha256()
        self._hashed = self._hash_target = 0
        self._contiguous = min(self._contiguous, min(gone))

    def _rewrite_record(self) -> None:
        """Write the record anew, compactly, and append to the new one from now on."""
        _write_record(
            self.record_path, render_record(self.key, self.filename, self.held, self.digests)
        )
        fd = os.open(self.record_path, os.O_WRONLY | os.O_APPEND)
        old, self._record_fd = self._record_fd, fd
        if old >= 0:
            os.close(old)

    # finishing

    def verify(self) -> str:
        """sha256 of the assembled file (every chunk must be held)."""
        if not self.held.complete:
            raise ValueError("not every chunk is held")
        self._wait_for_hashing()
        self._hash_up_to(self.key.total_chunks)
        return self._hasher.hexdigest()

    def place(self, filename: str) -> Path:
        """fsync and move the part file into place under a free name; drop the record.
        Raises OSError, that of a write-back that failed (:meth:`_write_back`) too."""
        started = time.perf_counter()
        self._wait_for_write_back()
        os.fsync(self._fd)
        self.final_sync_s = time.perf_counter() - started
        self.close()
        directory = self.path.parent.parent
        for name in numbered_names(sanitize_filename(filename)):
            dest = directory / name
            if _claim(self.path, dest):
                break
        self.record_path.unlink(missing_ok=True)
        _fsync_directory(directory)
        _fsync_directory(self.path.parent)
        return dest

    def remove(self) -> None:
        self.close()
        remove_part(self.path)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wait_for_hashing()  # it reads self._fd: let it finish first
        with contextlib.suppress(OSError):
            self._wait_for_write_back()  # it syncs self._fd: likewise
        for fd in (self._fd, self._record_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fd = self._record_fd = -1


def _record_of(part: Path) -> Path:
    return part.with_name(part.name[: -len(PART_SUFFIX)] + RECORD_SUFFIX)


def find_part(
    directory: Path, key: ContentKey, in_use: Iterable[Path] = ()
) -> tuple[Path, ChunkSet, Digests] | None:
    """The part file of ``key``'s content for download ``directory`` (not one of
    ``in_use``), the chunks its record holds and their digests, or None."""
    busy = set(in_use)
    for record in sorted((directory / PARTS_DIR).glob("*" + RECORD_SUFFIX)):
        part = record.with_name(record.name[: -len(RECORD_SUFFIX)] + PART_SUFFIX)
        if part in busy or not part.is_file():
            continue
        try:
            found = parse_record(record.read_text(encoding="utf-8"), key)
        except (OSError, UnicodeDecodeError):
            continue
        if found is not None:
            return part, *found
    return None


def remove_part(part: Path) -> None:
    """Delete a part file and its record."""
    part.unlink(missing_ok=True)
    _record_of(part).unlink(missing_ok=True)


def _claim(part: Path, dest: Path) -> bool:
    """Atomically give ``part`` the name ``dest`` unless ``dest`` exists."""
    try:
        os.link(part, dest)
    except FileExistsError:
        return False
    except OSError as exc:  # no hard links here: claim the name, then replace it
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        os.replace(part, dest)
        return True
    part.unlink()
    return True


def set_aside(part: Path, directory: Path, filename: str) -> Path:
    """Keep the (infected) part file ``part`` in ``directory`` as the first free name of
    ``<filename>.infected``, ``<filename> (1).infected``, ...: a hard link, or a copy
    where there can be none (another file system); its path. The part file itself is
    the caller's to remove. Raises OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in numbered_names(sanitize_filename(filename) + QUARANTINE_SUFFIX):
        dest = directory / name
        try:
            os.link(part, dest)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
            try:
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as out, part.open("rb") as source:
                shutil.copyfileobj(source, out, _CHECK_BLOCK)
                out.flush()
                os.fsync(out.fileno())
        _fsync_directory(directory)
        return dest
    raise AssertionError("unreachable")  # pragma: no cover


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_free_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"{needed} bytes needed, {free} free", str(directory))


def _write_record(path: Path, content: bytes) -> None:
    """Replace a record atomically (tmp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def remove_stale_parts(directory: Path, older_than: float, in_use: Iterable[Path] = ()) -> int:
    """Delete the part files (and records) of download ``directory`` untouched since
    ``older_than`` (epoch seconds)."""
    busy = set(in_use)
    removed = 0
    for record in (directory / PARTS_DIR).glob("*" + RECORD_SUFFIX):
        part = record.with_name(record.name[: -len(RECORD_SUFFIX)] + PART_SUFFIX)
        if part in busy:
            continue
        with contextlib.suppress(FileNotFoundError):
            if record.stat().st_mtime < older_than:
                remove_part(part)
                removed += 1
    return removed
