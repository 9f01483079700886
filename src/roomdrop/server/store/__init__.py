"""The store of files kept for a later delivery: one object per stored transfer.

A stored transfer's object is the sender's frames back to back, exactly as they came
(end-to-end encrypted: the server holds no key that opens them), written as a multipart
upload whose parts are built from consecutive frames (each part but the last at least
:data:`MIN_PART` bytes, as S3 requires) and read back by byte range when the receiver
takes it. Two adapters implement :class:`ObjectStore`:

- ``store/s3.py``: an S3-compatible object store (aiobotocore), ``ROOMDROP_STORE_URL=
  s3://bucket/prefix``, ``ROOMDROP_S3_ENDPOINT_URL`` for stores other than AWS, the
  standard ``AWS_*`` variables for the credentials and region;
- ``store/files.py``: a directory under ``ROOMDROP_DATA_DIR`` (the default, no setting).

Every failure of the store is one of :class:`~roomdrop.exceptions.StoreUnavailable`
(cannot be reached), :class:`~roomdrop.exceptions.StoreRefused` (it said no: credentials,
bucket, access) or :class:`~roomdrop.exceptions.StoreFull`; nothing else escapes an
adapter.

Both adapters enforce the same rules (``store/rules.py``): keys are transfer ids
(``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$``, anything else is a :class:`ValueError`), part
numbers 1 to 10 000, and every part of a finished object but the last at least
:data:`MIN_PART` (``EntityTooSmall``, :class:`~roomdrop.exceptions.StoreRefused`), so a
flow tested on the directory behaves the same on S3. :func:`open_store` picks the adapter
from the settings; it imports the S3 one (and so aiobotocore) only when it is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from roomdrop.server.settings import Settings

__all__ = ["MIN_PART", "ObjectStore", "Part", "Upload", "open_store"]

MIN_PART: Final = 5 * 1024 * 1024
"""The smallest part S3 takes, but for an upload's last."""


@dataclass(frozen=True, slots=True)
class Part:
    """One stored part of a multipart upload."""

    number: int
    """1, 2, …: the order of the parts in the object."""
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart upload under way (not yet finished or aborted)."""

    key: str
    upload_id: str
    initiated: float
    """When it began, in epoch seconds."""


class ObjectStore(Protocol):
    """Objects named by a key (a transfer id), under this store's prefix."""

    name: str
    """What the logs and the operator call it: ``s3://bucket/prefix`` or the directory."""

    async def start(self) -> None:
        """Check that the store answers and may be written (the bucket exists, the
        credentials are good)."""

    async def close(self) -> None: ...

    async def begin(self, key: str) -> str:
        """Begin a multipart upload of ``key``: its upload id."""

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        """Store part ``number`` (1-based) of the upload; a part stored again replaces it."""

    async def parts(self, key: str, upload_id: str) -> list[Part]:
        """The parts of the upload stored so far, by number (resuming an upload)."""

    async def finish(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        """Make the object ``key`` of these parts, in this order; the upload is over."""

    async def abort(self, key: str, upload_id: str) -> None:
        """Drop the upload and every part of it (an upload already gone: no error)."""

    async def uploads(self) -> list[Upload]:
        """Every multipart upload under way under this store's prefix."""

    async def read(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes of the object ``key`` from ``start`` (fewer at its end)."""

    async def size(self, key: str) -> int | None:
        """The object's size, or None if there is no such object."""

    async def delete(self, key: str) -> None:
        """Delete the object (one already gone: no error)."""

    async def keys(self) -> list[str]:
        """The keys of every finished object under this store's prefix."""


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings name (not started): ``ROOMDROP_STORE_URL=s3://bucket/prefix``
    with ``ROOMDROP_S3_ENDPOINT_URL``, else the directory ``DATA_DIR/store``."""
    if settings.store_url:
        from roomdrop.server.store.s3 import S3Store

        bucket, _, prefix = settings.store_url.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix, settings.s3_endpoint_url)
    from roomdrop.server.store.files import FileStore

    return FileStore(settings.data_dir / "store")
