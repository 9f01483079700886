"""Files kept for later in a real S3-compatible store (SeaweedFS): shared by instances,
its refusals precise, nothing left behind, an upload resumed across a server restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from clitools import MB, Room, sha256_of, write_random
from test_cli_store import restarted, seen_then_gone

from redistools import RedisServer
from seaweedtools import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer
from server.conftest import free_port

pytestmark = pytest.mark.timeout(240)

PREFIX = "kept"


def s3_env(s3: SeaweedServer, bucket: str, **overrides: str) -> dict[str, str]:
    return {
        "ROOMDROP_STORE_URL": f"s3://{bucket}/{PREFIX}",
        "ROOMDROP_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        **overrides,
    }


def in_bucket(s3: SeaweedServer, bucket: str) -> tuple[list[str], list[str]]:
    """The objects, and the multipart uploads under way, in ``bucket`` (as the
    administrator sees them, behind the server's back)."""
    client = s3.client()
    try:
        objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    finally:
        client.close()
    return [o["Key"] for o in objects], [u["Key"] for u in uploads]


async def test_a_file_kept_through_one_instance_is_delivered_by_another(
    start: Any,
    room_on: Any,
    redis_server: RedisServer,
    s3_server: SeaweedServer,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    shared = {
        "ROOMDROP_REDIS_URL": redis_server.url,
        "ROOMDROP_REDIS_PREFIX": redis_server.prefix(),
        **s3_env(s3_server, s3_bucket),
    }
    one = await start(name="i0", **shared)
    two = await start(name="i1", secret=one.secret, **shared)
    room: Room = room_on(one)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    digest = write_random(source, 23 * MB)  # five parts, the last one short

    sender = room.send(source, extra=["--store"])
    assert await sender.wait(120) == 0, sender.report()
    assert sender.result()["status"] == "stored"
    objects, uploads = in_bucket(s3_server, s3_bucket)
    tid = sender.result()["transfer_id"]
    assert objects == [f"{PREFIX}/{tid}", f"{PREFIX}/{tid}.offer"] and uploads == []

    receiver = room.receive(tmp_path / "inbox", server_args=["--server", two.url])
    assert await receiver.wait(120) == 0, receiver.report()
    assert receiver.result()["status"] == "completed"
    assert sha256_of(tmp_path / "inbox" / "kept.bin") == digest
    assert in_bucket(s3_server, s3_bucket) == ([], [])  # delivered: deleted


@pytest.mark.parametrize(
    ("trouble", "code", "says"),
    [
        ("wrong-secret", "store-refused", "check the credentials"),
        ("no-bucket", "store-refused", "NoSuchBucket"),
        ("unreachable", "store-unavailable", "127.0.0.1"),
    ],
)
async def test_a_store_that_refuses_or_is_out_of_reach_fails_the_offer_precisely(
    start: Any,
    room_on: Any,
    s3_server: SeaweedServer,
    s3_bucket: str,
    tmp_path: Path,
    trouble: str,
    code: str,
    says: str,
) -> None:
    env = s3_env(s3_server, s3_bucket)
    if trouble == "wrong-secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    elif trouble == "no-bucket":
        env["ROOMDROP_STORE_URL"] = f"s3://{s3_bucket}-missing/{PREFIX}"
    else:
        env["ROOMDROP_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    server = await start(**env)
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    write_random(source, 1 * MB)

    sender = room.send(source, extra=["--store"])
    assert await sender.wait(90) == 1, sender.report()
    result = sender.result()
    assert result["status"] == "refused"
    assert result["error_code"] == code, result
    assert says in result["error"], result["error"]
    assert in_bucket(s3_server, s3_bucket) == ([], [])


async def test_an_abandoned_upload_is_aborted_and_leaves_no_multipart_upload(
    start: Any, room_on: Any, s3_server: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    slow = {"ROOMDROP_RECONNECT_GRACE": "1", "ROOMDROP_ROOM_BANDWIDTH": "10000000"}
    server = await start(**s3_env(s3_server, s3_bucket, **slow))
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    write_random(source, 60 * MB)
    sender = room.send(source, extra=["--store"])
    await sender.progress_at_least(20)
    assert in_bucket(s3_server, s3_bucket)[1], "no multipart upload under way"
    sender.kill()
    await sender.wait(10)
    for _ in range(100):  # the grace window (1 s) ends, the sweeper cancels, the upload goes
        if in_bucket(s3_server, s3_bucket) == ([], []):
            break
        await asyncio.sleep(0.1)
    assert in_bucket(s3_server, s3_bucket) == ([], [])


async def test_an_upload_resumes_after_a_server_restart_from_the_parts_stored(
    start: Any,
    room_on: Any,
    redis_server: RedisServer,
    s3_server: SeaweedServer,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    shared = {
        "ROOMDROP_REDIS_URL": redis_server.url,
        "ROOMDROP_REDIS_PREFIX": redis_server.prefix(),
        "ROOMDROP_ROOM_BANDWIDTH": "20000000",  # 4 s for the file: time to stop halfway
        **s3_env(s3_server, s3_bucket),
    }
    server = await start(**shared)
    room: Room = room_on(server)
    await seen_then_gone(room, tmp_path)
    source = tmp_path / "kept.bin"
    size = 80 * MB
    digest = write_random(source, size)
    sender = room.send(source, extra=["--store"])
    await sender.progress_at_least(40)
    await restarted(start, server, **shared)

    assert await sender.wait(180) == 0, sender.report()
    result = sender.result()
    assert result["status"] == "stored"
    sent = result["moved_bytes"]
    assert sent < size * 1.7, f"sent {sent:,} bytes for {size:,}: the upload started over"
    receiver = room.receive(tmp_path / "inbox")
    assert await receiver.wait(120) == 0, receiver.report()
    assert sha256_of(tmp_path / "inbox" / "kept.bin") == digest
    assert in_bucket(s3_server, s3_bucket) == ([], [])
