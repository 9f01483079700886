"""The store of files kept for later, on both adapters: one behaviour, two implementations.

Every behaviour test runs twice (``store_kind``): on :class:`FileStore` in the test's own
directory and on :class:`S3Store` against a real S3-compatible server (SeaweedFS's
``weed mini``, :mod:`seaweedtools`), each test in a bucket of its own. The failures of
each (credentials, a missing bucket, a closed port; a full disk, a read-only one) are
tested on the adapter that can have them. The full and read-only disks are small tmpfs
mounts of the test's own: the suite runs in a private mount namespace.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from roomdrop.exceptions import StoreFull, StoreRefused, StoreUnavailable
from roomdrop.server.settings import Settings
from roomdrop.server.store import MIN_PART, ObjectStore, open_store
from roomdrop.server.store.files import FileStore
from roomdrop.server.store.s3 import S3Store, translate
from seaweedtools import SeaweedServer, free_ports, new_bucket_name

MiB = 1024 * 1024
LAST = 1234
"""The last part's size: any size goes for the last one."""

OpenStore = Callable[[str], Awaitable[ObjectStore]]


@pytest.fixture(params=["files", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_prefix(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenStore]:
    """``await open_prefix("a")``: a started store under prefix ``a`` (on files: the
    directory ``a`` of the test's), all of one bucket; every one is closed at the end."""
    opened: list[ObjectStore] = []

    async def open_one(prefix: str) -> ObjectStore:
        store: ObjectStore
        if store_kind == "files":
            store = FileStore(tmp_path / "store" / prefix)
        else:
            server: SeaweedServer = request.getfixturevalue("s3_server")
            store = server.store(request.getfixturevalue("s3_bucket"), prefix)
        await store.start()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_prefix: OpenStore) -> ObjectStore:
    return await open_prefix("roomdrop")


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


async def upload(store: ObjectStore, key: str, *sizes: int) -> bytes:
    """An object of parts of these sizes, finished: its bytes."""
    upload_id = await store.begin(key)
    chunks = [random_bytes(size) for size in sizes]
    parts = [await store.put_part(key, upload_id, n, c) for n, c in enumerate(chunks, 1)]
    await store.finish(key, upload_id, parts)
    return b"".join(chunks)


# --- the behaviour, on both ----------------------------------------------------------


async def test_an_upload_of_three_parts_reads_back_byte_for_byte_by_ranges_across_parts(
    store: ObjectStore,
) -> None:
    data = await upload(store, "t1", MIN_PART, MIN_PART, LAST)
    size = 2 * MIN_PART + LAST

    assert await store.size("t1") == size
    for start, length in [
        (0, 100),
        (MIN_PART - 10, 20),  # the end of part 1 and the start of part 2
        (MIN_PART - 3, MIN_PART + 6),  # from part 1 over the whole of 2 into 3
        (2 * MIN_PART - 1, 2),  # part 2 into the last
        (size - 10, 10),
    ]:
        assert await store.read("t1", start, length) == data[start : start + length]
    pieces = [await store.read("t1", start, MiB) for start in range(0, size, MiB)]
    assert b"".join(pieces) == data
    assert await store.read("t1", size - 4, 100) == data[-4:]  # fewer at the end
    assert await store.read("t1", size, 100) == b""
    assert await store.read("t1", 0, 0) == b""
    assert await store.keys() == ["t1"]
    assert await store.uploads() == []


async def test_parts_lists_exactly_what_was_stored_so_an_upload_can_resume(
    store: ObjectStore,
) -> None:
    first, second, last = random_bytes(MIN_PART), random_bytes(MIN_PART + 7), random_bytes(9)
    upload_id = await store.begin("resumed")
    stored = [
        await store.put_part("resumed", upload_id, 1, first),
        await store.put_part("resumed", upload_id, 2, second),
    ]

    listed = await store.parts("resumed", upload_id)

    assert listed == stored
    assert [(p.number, p.size) for p in listed] == [(1, MIN_PART), (2, MIN_PART + 7)]
    [under_way] = await store.uploads()
    assert (under_way.key, under_way.upload_id) == ("resumed", upload_id)
    assert abs(under_way.initiated - time.time()) < 120
    assert await store.keys() == []
    assert await store.size("resumed") is None
    # the sender comes back: the rest goes on from the parts listed
    listed.append(await store.put_part("resumed", upload_id, 3, last))
    await store.finish("resumed", upload_id, listed)
    assert await store.read("resumed", 0, 3 * MIN_PART) == first + second + last


async def test_a_part_stored_again_replaces_the_first_copy(
    store: ObjectStore, open_prefix: OpenStore
) -> None:
    old, new, last = random_bytes(MIN_PART), random_bytes(MIN_PART), random_bytes(LAST)
    upload_id = await store.begin("again")
    first = await store.put_part("again", upload_id, 1, old)
    await asyncio.sleep(1.1)  # a later second: SeaweedFS dates the copies it lists to one
    again = await store.put_part("again", upload_id, 1, new)
    assert again.etag != first.etag

    assert await store.parts("again", upload_id) == [again]
    restarted = await open_prefix("roomdrop")  # knows only what the store lists
    assert await restarted.parts("again", upload_id) == [again]
    await restarted.finish(
        "again", upload_id, [again, await store.put_part("again", upload_id, 2, last)]
    )
    assert await restarted.read("again", 0, 2 * MIN_PART) == new + last


async def test_a_part_stored_again_at_once_replaces_the_first_copy_too(store: ObjectStore) -> None:
    upload_id = await store.begin("again")
    await store.put_part("again", upload_id, 1, random_bytes(MIN_PART))
    again = await store.put_part("again", upload_id, 1, random_bytes(MIN_PART))

    assert await store.parts("again", upload_id) == [again]


async def test_abort_leaves_no_upload_and_no_object_and_may_be_repeated(
    store: ObjectStore,
) -> None:
    upload_id = await store.begin("dropped")
    await store.put_part("dropped", upload_id, 1, random_bytes(MIN_PART))
    await store.put_part("dropped", upload_id, 2, random_bytes(LAST))

    await store.abort("dropped", upload_id)

    assert await store.uploads() == []
    assert await store.keys() == []
    assert await store.size("dropped") is None
    await store.abort("dropped", upload_id)  # already gone: no error
    with pytest.raises(StoreRefused):
        await store.put_part("dropped", upload_id, 3, b"late")


async def test_finishing_with_a_short_part_before_the_last_is_refused(
    store: ObjectStore,
) -> None:
    upload_id = await store.begin("short")
    parts = [
        await store.put_part("short", upload_id, 1, random_bytes(MIN_PART)),
        await store.put_part("short", upload_id, 2, random_bytes(MIN_PART - 1)),
        await store.put_part("short", upload_id, 3, random_bytes(LAST)),
    ]

    with pytest.raises(StoreRefused, match="EntityTooSmall"):
        await store.finish("short", upload_id, parts)

    assert await store.size("short") is None
    assert [u.upload_id for u in await store.uploads()] == [upload_id]  # still there
    with pytest.raises(StoreRefused):
        await store.finish("short", upload_id, [])
    with pytest.raises(StoreRefused, match="InvalidPartOrder"):
        await store.finish("short", upload_id, [parts[0], parts[0]])


async def test_delete_removes_the_object_and_size_then_says_none(store: ObjectStore) -> None:
    await upload(store, "kept", MIN_PART, LAST)
    await upload(store, "gone", LAST)
    assert await store.size("gone") == LAST

    await store.delete("gone")

    assert await store.size("gone") is None
    assert await store.keys() == ["kept"]
    assert await store.size("kept") == MIN_PART + LAST
    with pytest.raises(StoreRefused, match="gone"):
        await store.read("gone", 0, 10)
    await store.delete("gone")  # already gone: no error
    await store.delete("never-was")
    assert await store.size("never-was") is None


async def test_keys_lists_only_the_finished_objects_under_the_stores_own_prefix(
    open_prefix: OpenStore,
) -> None:
    a, b, nested = await open_prefix("a"), await open_prefix("b"), await open_prefix("a/sub")
    await upload(a, "a1", LAST)
    await upload(a, "a2", MIN_PART, LAST)
    unfinished = await a.begin("a3")
    await upload(b, "b1", LAST)
    await upload(nested, "n1", LAST)
    await nested.begin("n2")

    assert sorted(await a.keys()) == ["a1", "a2"]
    assert await b.keys() == ["b1"]
    assert await nested.keys() == ["n1"]
    assert [(u.key, u.upload_id) for u in await a.uploads()] == [("a3", unfinished)]
    assert await b.uploads() == []
    assert [u.key for u in await nested.uploads()] == ["n2"]
    assert await b.size("a1") is None


async def test_a_key_that_is_no_transfer_id_is_a_value_error_before_any_io(
    store: ObjectStore,
) -> None:
    for key in ["", "../escape", "a/b", ".hidden", "-x", "x" * 129, "sp ace", "é"]:
        with pytest.raises(ValueError, match="not a store key"):
            await store.begin(key)
        with pytest.raises(ValueError, match="not a store key"):
            await store.read(key, 0, 1)
        with pytest.raises(ValueError, match="not a store key"):
            await store.size(key)
        with pytest.raises(ValueError, match="not a store key"):
            await store.delete(key)
    upload_id = await store.begin("t")
    for number in (0, 10_001):
        with pytest.raises(ValueError, match="part number"):
            await store.put_part("t", upload_id, number, b"x")
    assert await store.keys() == []


async def test_reading_a_range_holds_that_range_in_memory_not_the_object(
    store: ObjectStore,
) -> None:
    await upload(store, "big", MIN_PART, MIN_PART, MIN_PART, LAST)  # ~15 MiB
    await store.read("big", 0, 1)  # warm up connections, caches

    tracemalloc.start()
    try:
        data = await store.read("big", MIN_PART - MiB // 2, MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(data) == MiB
    assert peak < 4 * MiB, f"reading 1 MiB of a 15 MiB object peaked at {peak / MiB:.1f} MiB"


# --- the directory store -----------------------------------------------------------


async def test_finishing_copies_in_pieces_not_the_whole_object_in_memory(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    await store.start()
    upload_id = await store.begin("big")
    chunks = [random_bytes(MIN_PART) for _ in range(3)] + [random_bytes(LAST)]
    parts = [await store.put_part("big", upload_id, n, c) for n, c in enumerate(chunks, 1)]
    del chunks[:-1]

    tracemalloc.start()
    try:
        await store.finish("big", upload_id, parts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 3 * MiB, f"finishing 15 MiB peaked at {peak / MiB:.1f} MiB"
    assert await store.size("big") == 3 * MIN_PART + LAST
    assert not list((tmp_path / "store" / "uploads").iterdir())
    assert [p.name for p in (tmp_path / "store" / "objects").iterdir()] == ["big"]


async def test_a_part_is_kept_whole_and_its_older_copy_goes(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    await store.start()
    upload_id = await store.begin("t")
    await store.put_part("t", upload_id, 1, b"first")
    await store.put_part("t", upload_id, 1, b"second")

    names = sorted(p.name for p in (tmp_path / "store" / "uploads" / "t" / upload_id).iterdir())

    assert names == [f"00001.{hashlib.md5(b'second').hexdigest()}", "initiated"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs of the test's own: two 5 MiB parts fit, their object does not."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


async def test_a_full_disk_is_store_full_and_leaves_the_upload_to_finish_later(
    small_disk: Path,
) -> None:
    store = FileStore(small_disk / "store")
    await store.start()
    upload_id = await store.begin("t")
    parts = [
        await store.put_part("t", upload_id, 1, random_bytes(MIN_PART)),
        await store.put_part("t", upload_id, 2, random_bytes(MIN_PART)),
    ]

    with pytest.raises(StoreFull, match="disk full"):
        await store.put_part("t", upload_id, 3, random_bytes(MIN_PART))
    with pytest.raises(StoreFull, match="disk full"):
        await store.finish("t", upload_id, parts)

    assert await store.parts("t", upload_id) == parts  # nothing half-written listed
    assert await store.keys() == []
    assert not [p for p in (small_disk / "store").rglob(".*") if p.is_file()]  # no temporaries
    await store.abort("t", upload_id)
    await upload(store, "small", MIN_PART, LAST)  # room again


async def test_a_read_only_directory_is_refused_at_start(small_disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    store = FileStore(small_disk / "store")

    with pytest.raises(StoreRefused, match="read-only file system"):
        await store.start()


async def test_a_directory_that_is_a_file_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a directory")
    store = FileStore(tmp_path / "store")

    with pytest.raises(StoreRefused, match=str(tmp_path / "store")):
        await store.start()


# --- the S3 store ------------------------------------------------------------------


async def test_s3_stores_its_objects_as_prefix_then_key(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    store = s3_server.store(s3_bucket, "/deploy/one")
    await store.start()
    try:
        assert store.name == f"s3://{s3_bucket}/deploy/one"
        await upload(store, "t1", LAST)
        await store.begin("t2")
    finally:
        await store.close()

    client = s3_server.client()
    try:
        listed = client.list_objects_v2(Bucket=s3_bucket)
        uploads = client.list_multipart_uploads(Bucket=s3_bucket)
    finally:
        client.close()
    assert [o["Key"] for o in listed["Contents"]] == ["deploy/one/t1"]
    assert [u["Key"] for u in uploads["Uploads"]] == ["deploy/one/t2"]


async def test_s3_with_a_wrong_secret_key_is_refused_at_start(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    store = s3_server.store(s3_bucket, "p", secret_key="not-the-secret")

    with pytest.raises(StoreRefused, match="403") as raised:
        await store.start()

    assert "not-the-secret" not in str(raised.value)
    assert s3_bucket in str(raised.value)


async def test_s3_with_a_missing_bucket_is_refused_at_start(s3_server: SeaweedServer) -> None:
    missing = new_bucket_name()
    store = s3_server.store(missing, "p")

    with pytest.raises(StoreRefused, match=f"bucket '{missing}' does not exist"):
        await store.start()


async def test_s3_on_a_closed_port_is_unavailable_at_once() -> None:
    [port] = free_ports(1)  # nothing listens there
    store = S3Store(
        "bucket",
        "p",
        f"http://127.0.0.1:{port}",
        access_key="k",
        secret_key="s",
        connect_timeout=1.0,
        read_timeout=1.0,
        max_attempts=1,
    )
    began = time.monotonic()

    with pytest.raises(StoreUnavailable, match=f"s3://bucket/p: .*127.0.0.1:{port}"):
        await store.start()

    assert time.monotonic() - began < 5


async def test_s3_calls_after_close_are_unavailable_not_attribute_errors(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    store = s3_server.store(s3_bucket)
    await store.start()
    await store.close()

    with pytest.raises(StoreUnavailable, match="not started"):
        await store.keys()


async def test_s3_that_accepts_but_never_answers_is_unavailable_after_the_read_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    store = S3Store(
        "bucket",
        "",
        f"http://127.0.0.1:{port}",
        access_key="k",
        secret_key="s",
        connect_timeout=1.0,
        read_timeout=0.5,
        max_attempts=1,
    )
    began = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match="s3://bucket: checking the bucket: "):
            await store.start()
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()

    assert time.monotonic() - began < 5


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("EntityTooLarge", 400, StoreFull),
        ("QuotaExceeded", 403, StoreFull),
        ("XMinioStorageFull", 507, StoreFull),
        ("InsufficientStorage", 507, StoreFull),
        ("", 507, StoreFull),
        ("NoSuchBucket", 404, StoreRefused),
        ("AccessDenied", 403, StoreRefused),
        ("InvalidAccessKeyId", 403, StoreRefused),
        ("SignatureDoesNotMatch", 403, StoreRefused),
        ("403", 403, StoreRefused),
        ("SlowDown", 503, StoreUnavailable),
        ("InternalError", 500, StoreUnavailable),
    ],
)
def test_s3_answers_map_to_the_three_store_errors(
    code: str, status: int, error: type[Exception]
) -> None:
    """The answers SeaweedFS cannot be made to give here (a full store, throttling), as
    botocore raises them: the mapping alone, with the store and operation named."""
    answer = {
        "Error": {"Code": code, "Message": "said the store"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    translated = translate(ClientError(answer, "UploadPart"), "s3://b/p: storing")

    assert type(translated) is error
    assert translated.message.startswith("s3://b/p: storing: ")
    assert "said the store" in translated.message


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
    ],
)
def test_s3_connection_failures_are_unavailable(exc: Exception) -> None:
    assert type(translate(exc, "s3://b: reading")) is StoreUnavailable


def test_s3_without_credentials_is_refused_saying_which_variables() -> None:
    translated = translate(NoCredentialsError(), "s3://b: checking the bucket")

    assert type(translated) is StoreRefused
    assert "AWS_ACCESS_KEY_ID" in translated.message


# --- choosing the adapter ------------------------------------------------------------


def test_the_settings_pick_the_directory_unless_a_store_url_is_set(tmp_path: Path) -> None:
    files = open_store(Settings(data_dir=tmp_path))
    s3 = open_store(
        Settings(
            data_dir=tmp_path,
            store_url="s3://my-bucket/roomdrop/stored",
            s3_endpoint_url="http://127.0.0.1:8333",
        )
    )

    assert isinstance(files, FileStore) and files.directory == tmp_path / "store"
    assert isinstance(s3, S3Store)
    assert (s3.name, s3.bucket, s3.prefix) == (
        "s3://my-bucket/roomdrop/stored",
        "my-bucket",
        "roomdrop/stored/",
    )
    assert s3.endpoint_url == "http://127.0.0.1:8333"


def test_aiobotocore_is_imported_only_when_the_store_is_on_s3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from roomdrop.server.settings import Settings\n"
        "from roomdrop.server.store import open_store\n"
        f"open_store(Settings(data_dir={str(tmp_path)!r}))\n"
        "assert 'aiobotocore' not in sys.modules and 'botocore' not in sys.modules\n"
        "open_store(Settings(store_url='s3://bucket/p'))\n"
        "assert 'aiobotocore' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ | {"PYTHONPATH": ""})
