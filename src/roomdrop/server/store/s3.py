"""The store on an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph...), through
aiobotocore: the only module that imports it or botocore.

Objects are ``<prefix><key>`` in one bucket, the prefix ending in ``/`` (``s3://bucket/
roomdrop`` stores ``roomdrop/<key>``); listings are of that prefix only and give keys back
without it, so several deployments (or tests) may share a bucket under prefixes of their
own. A listed name that is not a key (``roomdrop/sub/x``: someone else's, under a longer
prefix) is left out.

One client for the store's life: made in :meth:`S3Store.start`, which asks ``HeadBucket``
so that a missing bucket, bad credentials or an endpoint out of reach stop the server at
start with the reason, rather than the first sender; closed in :meth:`S3Store.close`.
Timeouts are short to connect (5 s: an endpoint that does not answer is unavailable, not
slow) and long to read (60 s: a 5 MiB part on a slow link), with botocore's ``standard``
retries (a few attempts, backing off, on throttling and 5xx answers).

Credentials and region: the standard chain of botocore (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, profiles, an instance's role) unless
given; the region is ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` or the profile's, else
``us-east-1``. With an ``endpoint_url`` (a store other than AWS) requests address the
bucket in the path (``http://host:8333/bucket/key``): such stores rarely have a DNS name
per bucket.

Checksums are sent and checked only where S3 requires them (``when_required``): some
S3-compatible stores refuse the CRC headers botocore adds by default, and the frames
are end-to-end authenticated anyway (a receiver detects a changed byte).

Errors, all of them :class:`~roomdrop.exceptions.StoreError` naming the store and the
operation (never a credential):

- no connection, a timeout, a connection dropped, a 5xx answer after the retries:
  :class:`~roomdrop.exceptions.StoreUnavailable`;
- ``EntityTooLarge``, ``QuotaExceeded``, ``XMinioStorageFull``, ``InsufficientStorage``,
  HTTP 507: :class:`~roomdrop.exceptions.StoreFull`;
- any other answer (``NoSuchBucket``, ``AccessDenied``, ``InvalidAccessKeyId``,
  ``SignatureDoesNotMatch``, a 403 or 404, no credentials found):
  :class:`~roomdrop.exceptions.StoreRefused`;

but for the answers the interface takes as no error: ``NoSuchUpload`` on
:meth:`~S3Store.abort`, a 404 on :meth:`~S3Store.size` (None), a range past the object's
end on :meth:`~S3Store.read` (``b""``). Deleting a missing key is no error on S3 itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, NoReturn

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from roomdrop.exceptions import StoreError, StoreFull, StoreRefused, StoreUnavailable
from roomdrop.server.store import MIN_PART, Part, Upload
from roomdrop.server.store.rules import KEY_PATTERN, check_finish, check_key, check_part_number

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["S3Store"]

DEFAULT_REGION: Final = "us-east-1"
FULL_CODES: Final = frozenset(
    {"EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "InsufficientStorage"}
)
NOT_FOUND: Final = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Store:
    """An :class:`~roomdrop.server.store.ObjectStore` on one bucket, under a prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        *,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.name = f"s3://{bucket}/{self.prefix.rstrip('/')}".rstrip("/")
        self._region = region
        self._credentials = (access_key, secret_key)
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack = contextlib.AsyncExitStack()
        self._s3: S3Client | None = None
        self._stored: dict[str, dict[int, str]] = {}
        """upload id -> part number -> the etag of the copy this process stored last."""

    # --- life ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._s3 is not None:
            return
        session = get_session()
        region = (
            self._region
            or os.environ.get("AWS_REGION")
            or session.get_config_variable("region")
            or DEFAULT_REGION
        )
        access_key, secret_key = self._credentials
        try:
            with self._errors("connecting"):
                client = await self._stack.enter_async_context(
                    session.create_client(
                        "s3",
                        region_name=region,
                        endpoint_url=self.endpoint_url,
                        aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key,
                        config=self._config,
                    )
                )
            try:
                await client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                status = _status(exc)
                if status == 404 or _code(exc) == "NoSuchBucket":
                    raise StoreRefused(
                        f"{self.name}: bucket {self.bucket!r} does not exist (NoSuchBucket): "
                        "create it first, the server does not"
                    ) from exc
                if status == 403:
                    raise StoreRefused(
                        f"{self.name}: access to bucket {self.bucket!r} denied (403): check "
                        "the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and "
                        "that they may list the bucket"
                    ) from exc
                self._raise(exc, "checking the bucket")
            except (BotoCoreError, OSError) as exc:
                self._raise(exc, "checking the bucket")
        except BaseException:
            await self._stack.aclose()
            raise
        self._s3 = client

    async def close(self) -> None:
        self._s3 = None
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    # --- uploads ------------------------------------------------------------------

    async def begin(self, key: str) -> str:
        object_key = self._object_key(key)
        with self._errors(f"beginning an upload of {key}"):
            answer = await self._client.create_multipart_upload(Bucket=self.bucket, Key=object_key)
        return answer["UploadId"]

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        object_key = self._object_key(key)
        check_part_number(number)
        with self._errors(f"storing part {number} of {key}"):
            answer = await self._client.upload_part(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ContentLength=len(data),
            )
        self._stored.setdefault(upload_id, {})[number] = answer["ETag"]
        return Part(number, len(data), answer["ETag"])

    async def parts(self, key: str, upload_id: str) -> list[Part]:
        object_key = self._object_key(key)
        listed: dict[int, list[tuple[float, Part]]] = {}
        with self._errors(f"listing the parts of {key}"):
            pages = self._client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id
            )
            async for page in pages:
                for item in page.get("Parts", []):
                    number = item["PartNumber"]
                    modified = item.get("LastModified")
                    when = modified.timestamp() if isinstance(modified, datetime) else 0.0
                    part = Part(number, item["Size"], item["ETag"])
                    listed.setdefault(number, []).append((when, part))
        mine = self._stored.get(upload_id, {})
        return [_newest(copies, mine.get(n)) for n, copies in sorted(listed.items())]

    async def finish(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        object_key = self._object_key(key)
        check_finish(self.name, key, parts, MIN_PART)
        with self._errors(f"finishing {key}"):
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]
                },
            )
        self._stored.pop(upload_id, None)

    async def abort(self, key: str, upload_id: str) -> None:
        object_key = self._object_key(key)
        self._stored.pop(upload_id, None)
        try:
            with self._errors(f"aborting the upload of {key}", gone={"NoSuchUpload", "404"}):
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id
                )
        except _Gone:
            return

    async def uploads(self) -> list[Upload]:
        found: list[Upload] = []
        with self._errors("listing the uploads under way"):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            async for page in pages:
                for item in page.get("Uploads", []):
                    key = self._key_of(item.get("Key", ""))
                    if key is not None and "UploadId" in item:
                        initiated = item.get("Initiated")
                        when = initiated.timestamp() if isinstance(initiated, datetime) else 0.0
                        found.append(Upload(key, item["UploadId"], when))
        return found

    # --- objects ------------------------------------------------------------------

    async def read(self, key: str, start: int, length: int) -> bytes:
        object_key = self._object_key(key)
        if start < 0 or length < 0:
            raise ValueError(f"no such range: {length} bytes from {start}")
        if length == 0:
            return b""
        try:
            with self._errors(f"reading {key}", gone={"InvalidRange", "416"}):
                answer = await self._client.get_object(
                    Bucket=self.bucket,
                    Key=object_key,
                    Range=f"bytes={start}-{start + length - 1}",
                )
                async with answer["Body"] as body:
                    return await body.read()
        except _Gone:  # start at or past the end
            return b""

    async def size(self, key: str) -> int | None:
        object_key = self._object_key(key)
        try:
            with self._errors(f"looking up {key}", gone=NOT_FOUND):
                answer = await self._client.head_object(Bucket=self.bucket, Key=object_key)
        except _Gone:
            return None
        return answer["ContentLength"]

    async def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        try:
            with self._errors(f"deleting {key}", gone=NOT_FOUND):
                await self._client.delete_object(Bucket=self.bucket, Key=object_key)
        except _Gone:
            return

    async def keys(self) -> list[str]:
        found: list[str] = []
        with self._errors("listing the objects"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            async for page in pages:
                for item in page.get("Contents", []):
                    key = self._key_of(item.get("Key", ""))
                    if key is not None:
                        found.append(key)
        return found

    # --- inside -------------------------------------------------------------------

    @property
    def _client(self) -> S3Client:
        if self._s3 is None:
            raise StoreUnavailable(f"{self.name}: the store is not started (or is closed)")
        return self._s3

    def _object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _key_of(self, object_key: str) -> str | None:
        key = object_key.removeprefix(self.prefix)
        if not object_key.startswith(self.prefix) or not KEY_PATTERN.fullmatch(key):
            return None
        return key

    @contextlib.contextmanager
    def _errors(
        self, operation: str, gone: frozenset[str] | set[str] = frozenset()
    ) -> Iterator[None]:
        """Turn whatever botocore raises into a StoreError; an answer whose code or
        HTTP status is in ``gone`` into :class:`_Gone`, for the caller to take as none."""
        try:
            yield
        except StoreError:
            raise
        except ClientError as exc:
            if _code(exc) in gone or str(_status(exc)) in gone:
                raise _Gone from exc
            self._raise(exc, operation)
        except (BotoCoreError, OSError) as exc:
            self._raise(exc, operation)

    def _raise(self, exc: Exception, operation: str) -> NoReturn:
        raise translate(exc, f"{self.name}: {operation}") from exc


def _newest(copies: list[tuple[float, Part]], mine: str | None) -> Part:
    """The copy of a part that counts, when a store lists more than one.

    S3 keeps one copy of a part number, the last stored. SeaweedFS keeps every copy until
    the upload is finished (which takes the one of the etag asked for) and lists them all,
    in no order, with a modification time to the second: the latest counts, and of copies
    stored within the same second, the one this process stored last if it is among them.
    """
    latest = max(when for when, _ in copies)
    candidates = [part for when, part in copies if when == latest]
    return next((part for part in candidates if part.etag == mine), candidates[0])


class _Gone(Exception):
    """An answer that means "no such thing", where that is no error."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def translate(exc: Exception, where: str) -> StoreError:
    """The StoreError that ``exc``, raised by botocore at ``where``, means."""
    if isinstance(exc, ClientError):
        code, status = _code(exc), _status(exc)
        said = exc.response.get("Error", {}).get("Message") or ""
        answer = f"{code or 'error'} (HTTP {status})" + (f": {said}" if said else "")
        if code in FULL_CODES or status == 507:
            return StoreFull(f"{where}: the store is full: {answer}")
        if status >= 500:
            return StoreUnavailable(f"{where}: the store failed: {answer}")
        return StoreRefused(f"{where}: refused: {answer}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StoreRefused(
            f"{where}: no usable credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, ConnectionError | OSError):
        return StoreUnavailable(f"{where}: cannot reach the store: {exc}")
    if isinstance(exc, HTTPClientError):  # a read timed out, a connection dropped
        return StoreUnavailable(f"{where}: no answer from the store: {exc}")
    return StoreRefused(f"{where}: {type(exc).__name__}: {exc}")
