"""The store in a directory of the server's disk: the default, when no ``ROOMDROP_STORE_URL``
is set (``DATA_DIR/store``). It keeps S3's model and S3's rules, so the code above it
cannot tell the two apart::

    <directory>/
        objects/<key>                          finished objects
        uploads/<key>/<upload_id>/             one upload under way
            initiated                          when it began (epoch seconds, text)
            <number:05d>.<etag>                one file per part, its etag in its name

Whole or absent: a part, an object and the ``initiated`` file are written under a
temporary name (starting with ``.``, never listed) and renamed into place once written
and fsynced, so a crash leaves the previous state or the new one, never half a file. The
part's etag (the md5 of its bytes, like S3's) is in its name, so :meth:`FileStore.parts`
lists an upload without reading it, and :meth:`FileStore.finish` takes the part it was
told, as S3 does (``InvalidPart`` when it is not there). A part stored again is renamed
over, then its older copy (another etag) removed; a crash in between leaves two, of which
the newest counts.

Finishing copies the parts into the object 1 MiB at a time (memory stays bounded
whatever the file's size), then removes the upload; reading is a seek and one read of
the range asked for. Every blocking call runs in a worker thread (``asyncio.to_thread``):
parts are MiBs, more than the event loop should wait for.

Errors: a full disk or quota (``ENOSPC``, ``EDQUOT``) is
:class:`~roomdrop.exceptions.StoreFull`; any other refusal of the file system is
:class:`~roomdrop.exceptions.StoreRefused`, saying which operation on which path.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, NoReturn, TypeVar

from roomdrop.exceptions import StoreError, StoreFull, StoreRefused
from roomdrop.server.store import MIN_PART, Part, Upload
from roomdrop.server.store.rules import KEY_PATTERN, check_finish, check_key, check_part_number
from roomdrop.storage import describe_os_error

__all__ = ["FileStore"]

COPY_PIECE: Final = 1024 * 1024
"""What :meth:`FileStore.finish` holds in memory at once while copying parts."""
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
UPLOAD_ID: Final = re.compile(r"[0-9a-f]{32}")
PART_NAME: Final = re.compile(r"(\d{5})\.([0-9a-f]{32})")
FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

T = TypeVar("T")


class FileStore:
    """An :class:`~roomdrop.server.store.ObjectStore` in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.name = str(self.directory)
        self._objects = self.directory / "objects"
        self._uploads = self.directory / "uploads"

    # --- life ---------------------------------------------------------------------

    async def start(self) -> None:
        await self._run(self._start)

    async def close(self) -> None:
        return None

    # --- uploads ------------------------------------------------------------------

    async def begin(self, key: str) -> str:
        check_key(key)
        return await self._run(self._begin, key)

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        upload = self._upload_dir(key, upload_id)
        check_part_number(number)
        return await self._run(self._put_part, key, upload, number, data)

    async def parts(self, key: str, upload_id: str) -> list[Part]:
        upload = self._upload_dir(key, upload_id)
        return await self._run(self._parts, key, upload)

    async def finish(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        upload = self._upload_dir(key, upload_id)
        check_finish(self.name, key, parts, MIN_PART)
        await self._run(self._finish, key, upload, list(parts))

    async def abort(self, key: str, upload_id: str) -> None:
        upload = self._upload_dir(key, upload_id)
        await self._run(self._remove_upload, key, upload)

    async def uploads(self) -> list[Upload]:
        return await self._run(self._list_uploads)

    # --- objects ------------------------------------------------------------------

    async def read(self, key: str, start: int, length: int) -> bytes:
        path = self._objects / check_key(key)
        if start < 0 or length < 0:
            raise ValueError(f"no such range: {length} bytes from {start}")
        return await self._run(self._read, key, path, start, length)

    async def size(self, key: str) -> int | None:
        path = self._objects / check_key(key)
        return await self._run(self._size, path)

    async def delete(self, key: str) -> None:
        path = self._objects / check_key(key)
        await self._run(self._delete, path)

    async def keys(self) -> list[str]:
        return await self._run(self._list_keys)

    # --- in the worker thread -----------------------------------------------------

    def _start(self) -> None:
        for directory in (self._objects, self._uploads):
            with self._os_errors(f"creating {directory}"):
                directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        probe = self.directory / f".probe.{secrets.token_hex(8)}"
        with self._os_errors(f"writing {probe} (checking the store may be written)"):
            probe.write_bytes(b"")
            probe.unlink()

    def _begin(self, key: str) -> str:
        upload_id = secrets.token_hex(16)
        upload = self._uploads / key / upload_id
        with self._os_errors(f"creating {upload}"):
            upload.mkdir(mode=DIR_MODE, parents=True)
        self._write_whole(upload / "initiated", repr(time.time()).encode(), f"beginning {key}")
        return upload_id

    def _put_part(self, key: str, upload: Path, number: int, data: bytes) -> Part:
        self._require(upload, key)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        name = f"{number:05d}.{etag}"
        self._write_whole(upload / name, data, f"storing part {number} of {key}")
        for older in self._part_files(upload).get(number, []):
            if older.name != name:
                with self._os_errors(f"removing {older} (replaced)"), _missing_ok():
                    older.unlink()
        return Part(number, len(data), etag)

    def _parts(self, key: str, upload: Path) -> list[Part]:
        self._require(upload, key)
        found = []
        for number, files in sorted(self._part_files(upload).items()):
            newest = files[-1]
            with self._os_errors(f"reading {newest}"):
                size = newest.stat().st_size
            found.append(Part(number, size, newest.name.partition(".")[2]))
        return found

    def _finish(self, key: str, upload: Path, parts: list[Part]) -> None:
        self._require(upload, key)
        files = []
        for part in parts:
            path = upload / f"{part.number:05d}.{part.etag}"
            with self._os_errors(f"reading {path}"):
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    raise StoreRefused(
                        f"{self.name}: finishing {key}: no part {part.number} with etag "
                        f"{part.etag} in upload {upload.name} (InvalidPart)"
                    ) from None
            files.append((part, path, size))
        for part, _, size in files[:-1]:
            if size < MIN_PART:
                raise StoreRefused(
                    f"{self.name}: finishing {key}: part {part.number} is {size} bytes, every "
                    f"part but the last must be at least {MIN_PART} (EntityTooSmall)"
                )
        target = self._objects / key
        temporary = self._objects / f".{key}.{secrets.token_hex(8)}"
        buffer = bytearray(COPY_PIECE)
        view = memoryview(buffer)
        try:
            with self._os_errors(f"writing {temporary} (finishing {key})"):
                with temporary.open("wb", buffering=0) as out:
                    os.fchmod(out.fileno(), FILE_MODE)
                    for _, path, _ in files:
                        with path.open("rb", buffering=0) as source:
                            while count := source.readinto(buffer):
                                out.write(view[:count])
                    os.fsync(out.fileno())
                os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        self._remove_upload(key, upload)

    def _remove_upload(self, key: str, upload: Path) -> None:
        with self._os_errors(f"removing {upload} (aborting {key})"):
            with _missing_ok():
                for path in upload.iterdir():
                    with _missing_ok():
                        path.unlink()
                upload.rmdir()
            with contextlib.suppress(OSError):  # another upload of the key: not empty
                upload.parent.rmdir()

    def _list_uploads(self) -> list[Upload]:
        found = []
        with self._os_errors(f"listing {self._uploads}"), _missing_ok():
            for key_dir in sorted(self._uploads.iterdir()):
                if not KEY_PATTERN.fullmatch(key_dir.name):
                    continue
                with _missing_ok():
                    for upload in sorted(key_dir.iterdir()):
                        if UPLOAD_ID.fullmatch(upload.name):
                            found.append(Upload(key_dir.name, upload.name, _initiated(upload)))
        return found

    def _read(self, key: str, path: Path, start: int, length: int) -> bytes:
        with self._os_errors(f"reading {path}"):
            try:
                with path.open("rb", buffering=0) as f:
                    f.seek(start)
                    return f.read(length)
            except FileNotFoundError:
                raise StoreRefused(f"{self.name}: reading {key}: no such object") from None

    def _size(self, path: Path) -> int | None:
        with self._os_errors(f"looking up {path}"):
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return None

    def _delete(self, path: Path) -> None:
        with self._os_errors(f"deleting {path}"), _missing_ok():
            path.unlink()

    def _list_keys(self) -> list[str]:
        with self._os_errors(f"listing {self._objects}"), _missing_ok():
            return sorted(p.name for p in self._objects.iterdir() if KEY_PATTERN.fullmatch(p.name))
        return []

    # --- helpers ------------------------------------------------------------------

    def _upload_dir(self, key: str, upload_id: str) -> Path:
        check_key(key)
        if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
            raise ValueError(f"not an upload id of this store: {upload_id!r}")
        return self._uploads / key / upload_id

    def _require(self, upload: Path, key: str) -> None:
        if not upload.is_dir():
            raise StoreRefused(
                f"{self.name}: no upload {upload.name} of {key} (NoSuchUpload: finished or aborted)"
            )

    def _part_files(self, upload: Path) -> dict[int, list[Path]]:
        """Part number -> its files, oldest first (more than one only after a crash in
        the middle of replacing a part)."""
        found: dict[int, list[tuple[int, Path]]] = {}
        with self._os_errors(f"listing {upload}"):
            for path in upload.iterdir():
                match = PART_NAME.fullmatch(path.name)
                if match:
                    with _missing_ok():
                        found.setdefault(int(match[1]), []).append((path.stat().st_mtime_ns, path))
        return {n: [p for _, p in sorted(files)] for n, files in found.items()}

    def _write_whole(self, path: Path, data: bytes, operation: str) -> None:
        """``data`` in ``path``, whole or not at all."""
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        try:
            with self._os_errors(f"writing {temporary} ({operation})"):
                with temporary.open("wb", buffering=0) as f:
                    os.fchmod(f.fileno(), FILE_MODE)
                    view = memoryview(data)
                    while view:
                        view = view[f.write(view) or 0 :]
                    os.fsync(f.fileno())
                os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    @contextlib.contextmanager
    def _os_errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except OSError as exc:
            self._raise(exc, operation)

    def _raise(self, exc: OSError, operation: str) -> NoReturn:
        message = f"{self.name}: {describe_os_error(exc, operation)}"
        if exc.errno in FULL:
            raise StoreFull(message) from exc
        raise StoreRefused(message) from exc

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(function, *args)


@contextlib.contextmanager
def _missing_ok() -> Iterator[None]:
    """A file or directory already gone is the state wanted."""
    with contextlib.suppress(FileNotFoundError):
        yield


def _initiated(upload: Path) -> float:
    try:
        return float((upload / "initiated").read_text())
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            return upload.stat().st_mtime
        return 0.0
