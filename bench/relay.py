"""Benchmark: roomdrop's WebSocket relay against a bare FastAPI/uvicorn relay.

    .venv/bin/python bench/relay.py [--size-mb 100] [--repeat 3] [--profile-server DIR]

Creates a random file of ``--size-mb`` MiB and one of a quarter of that in a temp dir,
then measures, in the same run, the median of ``--repeat`` runs of each path:

* bare relay: ``bench/bare_relay.py``, a FastAPI app under uvicorn with the options
  ``roomdrop serve`` uses (websockets-sansio, permessage-deflate off, uvloop, the same
  ``ws_max_size``). The sender reads the file in 64 KiB blocks and sends each as one
  binary message with a 72-byte header in front (the size of roomdrop's frame header);
  the server forwards each message to the receiver, which writes the data to a file.
  No hashing anywhere.
* bare + e2e work: the same bare relay (forwarding only), its clients doing the work
  roomdrop's end-to-end encrypted clients do per chunk and nothing else: the sender seals
  each block with AES-256-GCM (``ChunkCipher``, a content key the parent hands both), the
  receiver opens it, computes its sha256 (the resume record's per-chunk digest) and feeds
  the whole-file sha256 as the blocks come, inside the clock. The floor of any relay whose
  clients encrypt end to end and verify as roomdrop's do.
* roomdrop relay: a real ``roomdrop serve`` (``python -m roomdrop.cli serve``,
  ``ROOMDROP_SECRET`` set). Both clients join one room with tokens from
  ``TokenAuthority`` and a fresh device key each (``&key=``); the sender seals a content
  key to the receiver's key (``seal_offer``) and sends ``file-share-offer`` (the file's
  real sha256, chunk_size 65536, ``e2e``), the receiver opens it and sends
  ``file-share-accept``, then the sender streams one sealed binary frame per chunk, built
  as the engine's ``send_chunk`` builds it (the chunk read and sealed, the header encoded
  with ``encode_frame_into``, header + ciphertext). The server checks each frame's header
  and length and forwards it; it does not hash it. The receiver parses each frame
  (``decode_frame``), decrypts it, hashes it, writes it at its offset, checks the whole
  file's sha256 from the offer at the end and sends ``file-share-complete``, and waits for
  the server to confirm it.
* roomdrop relay at a quarter of the size, to show the server's memory does not grow
  with the file.

Every run is three fresh processes: the server, a receiver and a sender (this script
with a hidden ``--child`` flag; websockets asyncio client, ``compression=None``, uvloop).
Time runs from the sender's first frame to the receiver's verified end (the whole file
written and its sha256 checked; for the bare relay: the last byte written), on the
system-wide monotonic clock. Peak memory: each process's own ``VmHWM`` (``bench/peak.py``:
the server's read from /proc at the end of the run, each client's as it exits), the
highest over the repeats; a line under the table gives each roomdrop process's peak as a
ratio to the same process of the bare relay in the same run.
CPU seconds (median): the sender's over its sending loop, the receiver's from joining to
its verified end, the server's (/proc utime + stime) from the receiver's joining to the
end of the run; CPU close to the wall time marks the process that holds the relay back.
Nothing is fsynced. Only 127.0.0.1 is used. Every process is stopped and the temp dir
deleted at the end, on error too.

``--profile-server DIR`` runs each roomdrop server under a CPU-time sampling profiler
(SIGPROF; cProfile mostly measures the event loop's waiting) and leaves
``server-<size>MiB-<run>.stacks`` in DIR, in flamegraph.pl's collapsed form, and prints
where the full-size servers' CPU went. Its throughput figures are then a little lower.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import resource
import secrets
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect

import peak  # bench/peak.py: each process's own peak memory
from roomdrop.e2e import ChunkCipher, DeviceKey, open_offer, seal_offer
from roomdrop.protocol.chunks import ChunkSet, count_chunks
from roomdrop.protocol.frames import (
    HEADER_SIZE,
    ZERO_CHECKSUM,
    Chunk,
    decode_frame,
    encode_frame_into,
)
from roomdrop.protocol.messages import E2E
from roomdrop.protocol.transfer import Transfer

# roomdrop's server modules are imported inside the parent's functions that need them,
# so that the clients' memory and start-up are the protocol's and websockets' only.

MIB = 1024 * 1024
MB = 1_000_000
CHUNK = 64 * 1024
HOST = "127.0.0.1"
ROOM = "bench"
SENDER, RECEIVER = "alice", "bob"
GOAL = 0.6
FLAT = 1.10  # server peak at the full size may be at most 10 % above the quarter-size peak
BARE_KINDS = ("bare", "sealed")
"""bench/bare_relay.py, forwarding only; its clients moving plain blocks, or doing the
end-to-end work roomdrop's clients do (AES-GCM, the receiver's hashing)."""
BENCH_TID = "00000000-0000-4000-8000-000000000001"
BARE_SERVER = Path(__file__).resolve().with_name("bare_relay.py")
WS_OPTIONS: dict[str, Any] = {"compression": None, "max_size": 16 * MIB, "open_timeout": 30}
SAMPLED = "--sampled-server"  # hidden: run `roomdrop serve` under the sampling profiler
FAILURE_TYPES = {
    "error",
    "file-share-error",
    "file-share-cancel",
    "file-share-reject",
    "file-share-chunk-request",  # these clients never send a chunk twice
}


def now() -> float:
    """System-wide monotonic clock, comparable between processes on one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# --- children: one client each -------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ready() -> None:
    """Tell the parent this client is connected (and, for roomdrop, in the room)."""
    print("ready", flush=True)


def file_sha256(path: Path) -> str:
    whole = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            whole.update(block)
    return whole.hexdigest()


async def bare_send(url: str, source: Path, key: bytes | None) -> dict[str, Any]:
    """The bare relay's sender; with a content ``key``, each block is sealed as
    roomdrop's end-to-end encryption seals a chunk (AES-256-GCM, ``ChunkCipher``)."""
    header = bytes(HEADER_SIZE)  # stands in for roomdrop's frame header, for equal bytes
    cipher = ChunkCipher(key, BENCH_TID) if key is not None else None
    async with connect(url, **WS_OPTIONS) as ws:
        with source.open("rb") as f:
            start, cpu = now(), cpu_seconds()
            index = 0
            while data := f.read(CHUNK):
                if cipher is not None:
                    await ws.send(header + cipher.seal(index, data))
                else:
                    await ws.send(header + data)
                index += 1
            cpu = cpu_seconds() - cpu
    return {"start": start, "cpu": cpu}


async def bare_receive(url: str, dest: Path, size: int, key: bytes | None) -> dict[str, Any]:
    """The bare relay's receiver; with a content ``key`` it does what roomdrop's receiver
    does with each chunk, inside the clock: decrypts it (the GCM tag is its check),
    hashes it (the resume record's per-chunk digest) and feeds the whole-file sha256."""
    cipher = ChunkCipher(key, BENCH_TID) if key is not None else None
    async with connect(url, **WS_OPTIONS) as ws:
        ready()
        cpu = cpu_seconds()
        got = index = 0
        whole = hashlib.sha256()
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while got < size:
                message = await ws.recv()
                data: bytes | memoryview = memoryview(message)[HEADER_SIZE:]
                if cipher is not None:
                    data = cipher.open(index, data)
                    hashlib.sha256(data).digest()
                    whole.update(data)
                got += os.write(fd, data)
                index += 1
        finally:
            os.close(fd)
        digest = whole.hexdigest() if cipher is not None else ""
        end, cpu = now(), cpu_seconds() - cpu
    if cipher is None:
        digest = file_sha256(dest)  # after the clock: only to check the relay
    return {"end": end, "cpu": cpu, "bytes": got, "sha256": digest}


def message(kind: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "payload": payload})


async def next_control(ws: ClientConnection, *wanted: str) -> dict[str, Any]:
    """The next control message of a ``wanted`` type; others are skipped, failures raise."""
    while True:
        raw = await ws.recv()
        if isinstance(raw, bytes):
            raise RuntimeError(f"unexpected binary message of {len(raw)} bytes")
        msg: dict[str, Any] = json.loads(raw)
        if msg["type"] in wanted:
            return msg
        if msg["type"] in FAILURE_TYPES:
            raise RuntimeError(f"server sent {msg['type']}: {msg['payload']}")


def record_of(offer: dict[str, Any]) -> Transfer:
    """The fields of an offer the end-to-end binding covers, as a record."""
    return Transfer(
        transfer_id=offer["transfer_id"],
        room_id=ROOM,
        sender_id=SENDER,
        receiver_id=RECEIVER,
        filename=offer["filename"],
        file_size=offer["file_size"],
        chunk_size=offer["chunk_size"],
        total_chunks=offer["total_chunks"],
        sha256=offer["sha256"],
        mime_type=offer["mime_type"],
        created_mono=0.0,
    )


async def roomdrop_send(url: str, source: Path) -> dict[str, Any]:
    size = source.stat().st_size
    total = count_chunks(size, CHUNK)
    tid = str(uuid.uuid4())
    offer: dict[str, Any] = {
        "transfer_id": tid,
        "receiver_id": RECEIVER,
        "filename": source.name,
        "file_size": size,
        "mime_type": "application/octet-stream",
        "chunk_size": CHUNK,
        "total_chunks": total,
        "sha256": file_sha256(source),  # the sender's scan, before the clock starts
    }
    device = DeviceKey.generate()
    async with connect(f"{url}&key={device.public_text}", **WS_OPTIONS) as ws:
        state = await next_control(ws, "room-state")
        receiver_key = state["payload"].get("keys", {}).get(RECEIVER)
        if receiver_key is None:
            receiver_key = (await next_control(ws, "user-joined"))["payload"]["key"]
        e2e, key = seal_offer(record_of(offer), device, receiver_key)
        offer["e2e"] = e2e.model_dump(mode="json")
        cipher = ChunkCipher(key, tid)
        await ws.send(message("file-share-offer", offer))
        await next_control(ws, "file-share-accept")
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def watch() -> None:  # drains progress messages; notices a refusal at once
            try:
                done.set_result(await next_control(ws, "file-share-complete"))
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)

        watcher = asyncio.create_task(watch())
        header = bytearray(HEADER_SIZE)
        try:
            with source.open("rb") as f:
                start, cpu = now(), cpu_seconds()
                for index in range(total):
                    # as the engine's send_chunk builds a frame: read, seal, header + data
                    data = cipher.seal(index, f.read(CHUNK))
                    chunk = Chunk(tid, index, total, CHUNK, data, ZERO_CHECKSUM, True)
                    encode_frame_into(header, chunk)
                    await ws.send(bytes(header) + data)
                    if done.done():  # refused or closed early
                        done.result()
                        raise RuntimeError(f"transfer completed after {index + 1} chunks")
            sent, cpu = now(), cpu_seconds() - cpu
            complete = await asyncio.wait_for(done, timeout=120)
        finally:
            watcher.cancel()
    if complete["payload"]["sha256"] != offer["sha256"]:
        raise RuntimeError(f"complete names sha256 {complete['payload']['sha256']}")
    return {"start": start, "sent": sent, "cpu": cpu}


async def roomdrop_receive(url: str, dest: Path) -> dict[str, Any]:
    device = DeviceKey.generate()
    async with connect(f"{url}&key={device.public_text}", **WS_OPTIONS) as ws:
        await next_control(ws, "room-state")
        ready()
        cpu = cpu_seconds()
        offer = (await next_control(ws, "file-share-offer"))["payload"]
        tid, total, size = offer["transfer_id"], offer["total_chunks"], offer["file_size"]
        chunk_size = offer["chunk_size"]
        e2e = E2E.model_validate(offer["e2e"])
        cipher = ChunkCipher(open_offer(record_of(offer), e2e, device), tid)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        held = ChunkSet(total)
        whole = hashlib.sha256()  # in order, the whole-file hash costs no second read
        hashed = 0
        try:
            await ws.send(message("file-share-accept", {"transfer_id": tid}))
            while not held.complete:
                raw = await ws.recv()
                if isinstance(raw, str):
                    kind = json.loads(raw)["type"]
                    if kind in FAILURE_TYPES:
                        raise RuntimeError(f"server sent {raw}")
                    continue
                frame = decode_frame(raw)
                if not frame.is_whole or frame.transfer_id != tid or not frame.sealed:
                    raise RuntimeError(f"unexpected frame for chunk {frame.chunk_index}")
                index = frame.chunk_index
                data = cipher.open(index, frame.data)  # as the engine's ReceivingEnd:
                hashlib.sha256(data).digest()  # decrypt, the record's per-chunk digest
                os.pwrite(fd, data, index * chunk_size)
                if held.add(index) and index == hashed:
                    whole.update(data)
                    hashed += 1
        finally:
            os.close(fd)
        digest = whole.hexdigest() if hashed == total else file_sha256(dest)
        if digest != offer["sha256"] or dest.stat().st_size != size:
            raise RuntimeError(f"received file has sha256 {digest}, offer {offer['sha256']}")
        end, cpu = now(), cpu_seconds() - cpu
        await ws.send(message("file-share-complete", {"transfer_id": tid, "sha256": digest}))
        await asyncio.wait_for(next_control(ws, "file-share-complete"), timeout=30)
    return {"end": end, "cpu": cpu, "in_order": hashed == total}


def child_main(spec: dict[str, Any]) -> None:
    role, url, path = spec["role"], spec["url"], Path(spec["path"])
    key = bytes.fromhex(spec["key"]) if role.startswith("sealed-") else None
    if role in ("bare-send", "sealed-send"):
        work = bare_send(url, path, key)
    elif role in ("bare-receive", "sealed-receive"):
        work = bare_receive(url, path, spec["size"], key)
    elif role == "roomdrop-send":
        work = roomdrop_send(url, path)
    else:
        work = roomdrop_receive(url, path)
    print(json.dumps(uvloop.run(work)), flush=True)  # its peak: bench/peak.py's report


# --- parent: servers, clients, the table ---------------------------------------------


@dataclass
class Run:
    seconds: float
    server_kib: int
    sender_kib: int
    receiver_kib: int
    server_cpu: float
    sender_cpu: float
    receiver_cpu: float
    staged: int | None = None
    """roomdrop: chunks that went through the encrypted staging (the receiver was behind)."""
    in_order: bool | None = None
    """roomdrop: every chunk came in order (else the receiver re-read the file to hash it)."""


@dataclass
class Series:
    name: str
    label: str
    size: int
    runs: list[Run] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.size / MB / statistics.median(r.seconds for r in self.runs)

    def peak(self, attr: str) -> int:
        return max(getattr(r, attr) for r in self.runs)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


def sha256_pass_cpu(path: Path) -> float:
    """CPU seconds of hashing ``path`` chunk by chunk (the file is in the page cache)."""
    cpu = 0.0
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            start = time.process_time()
            hashlib.sha256(block).digest()
            cpu += time.process_time() - start
    return cpu


def staging_round_trip_us(root: Path, chunks: int = 400) -> float:
    """Microseconds of CPU a whole frame costs to stage and take back out
    (:class:`~roomdrop.server.staging.RelayStaging`, as the server does while the receiver
    is behind)."""
    from roomdrop.server.staging import RelayStaging

    async def run() -> float:
        staging = RelayStaging(root, "reference", chunk_size=HEADER_SIZE + CHUNK, trim_after=1.0)
        frame = os.urandom(HEADER_SIZE + CHUNK)
        try:
            start = time.process_time()
            for index in range(chunks):
                await staging.put(index, frame)
                await staging.take()
            return (time.process_time() - start) / chunks * 1e6
        finally:
            await staging.close()

    return asyncio.run(run())


def total_cpu(p: Series) -> float:
    """The median over the runs of the three processes' CPU seconds together."""
    return statistics.median(r.server_cpu + r.sender_cpu + r.receiver_cpu for r in p.runs)


class Failed(Exception):
    pass


def make_random_file(path: Path, size_mb: int) -> None:
    from roomdrop.storage import sniff_mime_type

    while True:
        with path.open("wb") as f:
            for _ in range(size_mb):
                f.write(os.urandom(MIB))
        with path.open("rb") as f:  # the server refuses content that looks like a typed file
            if sniff_mime_type(f.read(CHUNK)) is None:
                return


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def vm_hwm_kib(pid: int) -> int:
    """A running process's own peak (a server's, at the end of a run), in KiB."""
    try:
        return peak.vm_hwm_kib(pid)
    except peak.NoPeak as exc:
        raise Failed(str(exc)) from None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Processes:
    """Every process a run starts; ``stop_all`` ends whichever are still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pending: dict[int, bytes] = {}  # stdout read past a child's ready line
        self.reports: dict[int, Path] = {}  # where a measured child writes its own peak

    def start(
        self, cmd: list[str], log: Path, env: dict[str, str] | None = None, *, pipe: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` with stderr (and, unless ``pipe``, stdout) going to ``log``. A
        piped one is a client: it runs under bench/peak.py, and :meth:`result` carries its
        own peak as ``peak_kib``."""
        with log.open("wb") as err:
            out = subprocess.PIPE if pipe else err
            kwargs: dict[str, Any] = {"stdout": out, "stderr": err, "env": env, "bufsize": 0}
            if pipe:
                report = log.with_suffix(".peak")
                proc = peak.start(cmd, report, cwd=log.parent, **kwargs)
                self.reports[proc.pid] = report
            else:
                proc = subprocess.Popen(cmd, cwd=log.parent, **kwargs)
        self.procs.append(proc)
        return proc

    def wait_line(self, proc: subprocess.Popen[bytes], what: str, timeout: float) -> str:
        """The next line ``proc`` prints (unbuffered reads, so nothing is lost)."""
        assert proc.stdout is not None
        buf = self.pending.pop(proc.pid, b"")
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"{what}: no output in {timeout:.0f} s")
                if sel.select(left):
                    data = os.read(proc.stdout.fileno(), 65536)
                    if not data:
                        raise Failed(f"{what} exited with {proc.wait()} before printing a line")
                    buf += data
        line, rest = buf.split(b"\n", 1)
        self.pending[proc.pid] = rest
        return line.decode()

    def result(self, proc: subprocess.Popen[bytes], what: str, timeout: float) -> dict[str, Any]:
        line = self.wait_line(proc, what, timeout)
        if proc.wait(timeout=30) != 0:
            raise Failed(f"{what} exited with {proc.returncode}")
        result: dict[str, Any] = json.loads(line)
        try:
            result["peak_kib"] = peak.reported_kib(self.reports[proc.pid])
        except peak.NoPeak as exc:
            raise Failed(f"{what}: {exc}") from None
        return result

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()  # uvicorn shuts down gracefully on SIGTERM; clients just end
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()
        self.pending.clear()
        self.reports.clear()


def staged_chunks(port: int) -> int | None:
    """The server's ``roomdrop_relay_staged_chunks_total`` from /metrics (None if absent)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return None
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith("roomdrop_relay_staged_chunks_total "):
            return int(float(line.split()[1]))
    return None


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"server exited with {proc.returncode}:\n{tail(log)}")
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise Failed(f"server on port {port} did not answer /healthz in 30 s:\n{tail(log)}")


@dataclass
class Bench:
    tmp: Path
    secret: str
    timeout: float
    profile_dir: Path | None
    count: int = 0
    key: str = field(default_factory=lambda: secrets.token_bytes(32).hex())
    """The sealed bare path's content key (both its clients get it from the parent)."""

    def server_cmd(self, kind: str, port: int, data_dir: Path, size: int) -> list[str]:
        if kind in BARE_KINDS:
            from roomdrop.server.run import MAX_WS_MESSAGE

            cmd = [sys.executable, str(BARE_SERVER), "--host", HOST, "--port", str(port)]
            cmd += ["--ws-max-size", str(MAX_WS_MESSAGE)]
            return cmd
        serve = ["serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)]
        if self.profile_dir is not None:
            out = self.profile_dir / f"server-{size // MIB}MiB-{self.count}.stacks"
            return [sys.executable, os.path.abspath(__file__), SAMPLED, str(out), *serve]
        return [sys.executable, "-m", "roomdrop.cli", *serve]

    def child_cmd(self, role: str, url: str, path: Path, size: int) -> list[str]:
        spec = {"role": role, "url": url, "path": str(path), "size": size, "key": self.key}
        return [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]

    def run(self, kind: str, source: Path) -> Run:
        """One transfer of ``source`` through a fresh server of ``kind``."""
        self.count += 1
        size = source.stat().st_size
        workdir = self.tmp / f"run-{self.count}-{kind}"
        workdir.mkdir()
        data_dir, dest = workdir / "data", workdir / "received.bin"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
        env["ROOMDROP_SECRET"] = self.secret  # every other setting at its default, but:
        env["ROOMDROP_MAX_FILE_SIZE"] = str(max(size, 500 * MIB))
        procs = Processes()
        log = workdir / "server.log"
        try:
            server_cmd = self.server_cmd(kind, port, data_dir, size)
            server = procs.start(server_cmd, log, env, pipe=False)
            wait_healthy(port, server, log)
            if kind in BARE_KINDS:
                send_url = f"ws://{HOST}:{port}/ws/sender"
                receive_url = f"ws://{HOST}:{port}/ws/receiver"
            else:
                from roomdrop.server.auth import TokenAuthority

                authority = TokenAuthority(self.secret)
                base = f"ws://{HOST}:{port}/webrtc/ws/{ROOM}?token="
                send_url = base + authority.issue(SENDER, 3600)
                receive_url = base + authority.issue(RECEIVER, 3600)
            receiver_log, sender_log = workdir / "receiver.log", workdir / "sender.log"
            receiver = procs.start(
                self.child_cmd(f"{kind}-receive", receive_url, dest, size), receiver_log
            )
            if (line := procs.wait_line(receiver, "receiver", 30)) != "ready":
                raise Failed(f"receiver printed {line!r}")
            server_cpu = process_cpu(server.pid)
            sender = procs.start(self.child_cmd(f"{kind}-send", send_url, source, size), sender_log)
            try:
                sent = procs.result(sender, "sender", self.timeout)
                received = procs.result(receiver, "receiver", self.timeout)
            except Failed as exc:
                logs = "\n".join(
                    f"--- {p.name}:\n{tail(p)}" for p in (sender_log, receiver_log, log)
                )
                raise Failed(f"{kind} relay run {self.count}: {exc}\n{logs}") from None
            server_kib, server_cpu = vm_hwm_kib(server.pid), process_cpu(server.pid) - server_cpu
            staged = staged_chunks(port) if kind == "roomdrop" else None
            if kind in BARE_KINDS and received["sha256"] != file_sha256(source):
                raise Failed(f"{kind} relay: the received file differs from the source")
            leftovers = list((data_dir / "relay").glob("*")) if kind == "roomdrop" else []
            if leftovers:
                print(f"warning: relay staging left behind: {leftovers}", file=sys.stderr)
            server_log = log.read_text(errors="replace")
            if '"level": "error"' in server_log or "Traceback" in server_log:
                print(f"warning: the {kind} server logged errors:\n{server_log}", file=sys.stderr)
        finally:
            procs.stop_all()
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
        return Run(
            received["end"] - sent["start"],
            server_kib,
            sent["peak_kib"],
            received["peak_kib"],
            server_cpu,
            sent["cpu"],
            received["cpu"],
            staged,
            received.get("in_order"),
        )


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so children are stopped and temp files deleted."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- --profile-server: a CPU-time sampling profiler around `roomdrop serve` ------------


def sampled_serve(out: Path, argv: list[str]) -> None:
    """``roomdrop <argv>`` with a SIGPROF sampler: every ~1 ms of the process's CPU time the
    main thread's Python stack is counted; the counts go to ``out`` at exit, one
    ``frame;frame;... count`` line per stack (flamegraph.pl's collapsed form). A C call
    (hashing, encryption, a syscall) counts against the Python function that made it.
    Unlike cProfile, time the event loop spends waiting is not counted."""
    from collections import Counter

    from roomdrop.cli import main as roomdrop_main

    stacks: Counter[str] = Counter()

    def sample(signum: int, frame: Any) -> None:
        names = []
        while frame is not None:
            code = frame.f_code
            where = Path(code.co_filename)
            names.append(f"{where.parent.name}/{where.name}:{code.co_name}")
            frame = frame.f_back
        stacks[";".join(reversed(names))] += 1

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    # uvicorn re-raises the SIGTERM it caught once it has shut down: as SystemExit here,
    # so that the samples are written.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
    try:
        roomdrop_main(argv)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        out.write_text("".join(f"{stack} {n}\n" for stack, n in stacks.most_common()))


def profile_summary(files: list[Path], top: int = 14) -> None:
    """Where the profiled servers' CPU went while relaying (start-up imports left out):
    roomdrop's own functions inclusive of what they call, then the functions that made
    the C calls (or ran Python) the samples landed in."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = startup = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, count = line.rsplit(" ", 1)
            n = int(count)
            total += n
            if "_find_and_load" in stack:
                startup += n
                continue
            names = stack.split(";")
            leaf[names[-1]] = leaf.get(names[-1], 0) + n
            for name in set(names):
                if name.split("/")[0] in ("server", "protocol", "roomdrop"):
                    inclusive[name] = inclusive.get(name, 0) + n
    running = total - startup
    if not running:
        return
    print()
    print(
        f"roomdrop server CPU profile: {len(files)} full-size run(s), {running} samples of "
        f"~1 ms CPU after start-up ({startup} in start-up imports left out)"
    )
    for title, counts in (("inclusive, roomdrop", inclusive), ("self (C calls count", leaf)):
        print(f"  {title + (' against their caller)' if 'self' in title else ''):}")
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        for name, n in [item for item in ranked if item[1] < 0.99 * running][:top]:
            print(f"    {100 * n / running:5.1f} %  {name}")


PEAKS = {"server": "server_kib", "sender": "sender_kib", "receiver": "receiver_kib"}


def memory_ratios(paths: list[Any], base: Any, attrs: dict[str, Any]) -> str:
    """One line: each path's peak per process as a ratio to ``base``'s (measured in the
    same run), e.g. ``roomdrop relay 100 MiB: server 68.9 / 51.4 MiB = 1.34x, ...``; the
    paths are :class:`Series` here and instances.py's, with ``peak(attr)`` in KiB."""
    parts = []
    for p in paths:
        if p is base:
            continue
        ratios = []
        for name, attr in attrs.items():
            mine, theirs = p.peak(attr), base.peak(attr)
            if mine and theirs:
                ratios.append(
                    f"{name} {mine / 1024:.1f} / {theirs / 1024:.1f} MiB = {mine / theirs:.2f}x"
                )
        parts.append(f"{p.label} {p.size // MIB} MiB: {', '.join(ratios)}")
    return f"peak memory against the {base.label}, same run: " + "; ".join(parts)


def add_size_options(parser: argparse.ArgumentParser, profile_help: str) -> None:
    """``--size-mb``, ``--repeat`` and ``--profile-server`` (shared with instances.py)."""
    parser.add_argument("--size-mb", type=int, default=100, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (median)")
    parser.add_argument("--profile-server", type=Path, metavar="DIR", help=profile_help)


def sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[int, int, int]:
    """Check the options of :func:`add_size_options` (and make the profile directory);
    ``(quarter_mb, size, quarter)``: the quarter-size file's MiB, both sizes in bytes."""
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")
    if args.profile_server is not None:
        args.profile_server = args.profile_server.resolve()
        args.profile_server.mkdir(parents=True, exist_ok=True)
    quarter_mb = max(1, args.size_mb // 4)
    return quarter_mb, args.size_mb * MIB, quarter_mb * MIB


def main() -> None:
    if sys.argv[1:2] == [SAMPLED]:
        sampled_serve(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_options(parser, "sample roomdrop's server CPU here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    quarter_mb, size, quarter = sizes(parser, args)
    paths = [
        Series("bare", "bare relay", size),
        Series("sealed", "bare + e2e work", size),
        Series("roomdrop", "roomdrop relay", size),
        Series("roomdrop", "roomdrop relay", quarter),
    ]
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="roomdrop-relay-bench-") as tmp:
        files = {size: Path(tmp) / "source.bin", quarter: Path(tmp) / "quarter.bin"}
        make_random_file(files[size], args.size_mb)
        make_random_file(files[quarter], quarter_mb)
        bench = Bench(
            Path(tmp), secrets.token_urlsafe(32), max(120.0, args.size_mb), args.profile_server
        )
        try:
            for _ in range(args.repeat):
                for p in paths:  # interleaved, so drift touches every path alike
                    p.runs.append(bench.run(p.name, files[p.size]))
        except Failed as exc:
            raise SystemExit(f"benchmark failed: {exc}") from None
        sha_pass = sha256_pass_cpu(files[size])
        staging_us = staging_round_trip_us(Path(tmp) / "staging")

    bare, sealed, full, small = paths
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"roomdrop relay benchmark: {args.size_mb} MiB file ({size:,} bytes) and "
        f"{quarter_mb} MiB, {size // CHUNK:,} chunks of 64 KiB (+{HEADER_SIZE}-byte header), "
        f"median of {args.repeat} run(s) per path, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPU(s), load average {load} at the end"
    )
    print(
        "each run: a fresh server + receiver + sender process on 127.0.0.1; time from the "
        "first frame sent to the receiver's end; MB = 10^6 bytes"
    )
    print(
        "peak memory: each process's own VmHWM (bench/peak.py), highest over the runs; CPU: "
        "seconds each process used while the file moved, median"
    )
    if args.profile_server is not None:
        print(f"roomdrop servers ran under a sampling profiler (stacks in {args.profile_server})")
    print()
    print(f"{'':<44}{'peak memory (MiB)':^30}  {'CPU seconds':^23}")
    print(
        f"{'path':<16} {'file':>8} {'MB/s':>8} {'x bare':>7}  "
        f"{'server':>9} {'sender':>9} {'receiver':>9}  {'server':>7} {'sender':>7} {'receiver':>8}"
    )
    for p in paths:
        peaks = (p.peak(a) / 1024 for a in ("server_kib", "sender_kib", "receiver_kib"))
        cpus = (p.median(a) for a in ("server_cpu", "sender_cpu", "receiver_cpu"))
        print(
            f"{p.label:<16} {p.size // MIB:>4} MiB {p.rate:>8.1f} {p.rate / bare.rate:>6.2f}x  "
            + " ".join(f"{peak:>9.1f}" for peak in peaks)
            + "  "
            + " ".join(f"{cpu:>7.2f}" for cpu in cpus)
        )
    print()
    print(
        "bare relay: forward only, receiver writes the data; bare + e2e work: the same relay, "
        "its clients doing roomdrop's end-to-end work and nothing else (the sender seals each "
        "block with AES-256-GCM, the receiver opens it, hashes it and the whole file); "
        "roomdrop relay: end-to-end encrypted, the server checks each frame's header and "
        "length (it cannot read the chunk, and does not hash it) and forwards it (staged, "
        "encrypted once more, on disk while the receiver is behind); the clients as in "
        "bare + e2e work"
    )
    for p in paths:  # runs were interleaved: bare 1, roomdrop 1, quarter 1, bare 2, ...
        rates = ", ".join(f"{p.size / MB / r.seconds:.1f}" for r in p.runs)
        print(f"{p.label} {p.size // MIB} MiB: MB/s per run: {rates}")
    for p in paths[2:]:
        counts = ", ".join("?" if r.staged is None else f"{r.staged:,}" for r in p.runs)
        disorder = sum(1 for r in p.runs if r.in_order is False)
        print(
            f"{p.label} {p.size // MIB} MiB: chunks staged (the receiver was behind) per run: "
            f"{counts} of {p.size // CHUNK:,}; runs with chunks out of order (the receiver "
            f"re-read the file to hash it): {disorder} of {len(p.runs)}"
        )
    print(memory_ratios(paths, bare, PEAKS))
    ratio = full.rate / bare.rate
    big, little = full.peak("server_kib"), small.peak("server_kib")
    flat = big <= little * FLAT
    print(
        f"goal roomdrop relay >= {GOAL} x bare relay ({bare.rate:.1f} MB/s): "
        f"roomdrop {full.rate:.1f} MB/s = {ratio:.2f} x ({'>=' if ratio >= GOAL else '<'} "
        f"{GOAL}: {'met' if ratio >= GOAL else 'NOT met'}); server memory flat in file size: "
        f"peak {little / 1024:.1f} MiB at {quarter_mb} MiB, {big / 1024:.1f} MiB at "
        f"{args.size_mb} MiB ({'flat' if flat else 'GROWS'}, limit +{(FLAT - 1) * 100:.0f} %)"
    )
    print(
        f"roomdrop relay against the same end-to-end work on a bare relay ({sealed.rate:.1f} "
        f"MB/s = {sealed.rate / bare.rate:.2f} x bare): {full.rate / sealed.rate:.2f} x; CPU "
        f"seconds, all three processes: bare {total_cpu(bare):.2f}, bare + e2e work "
        f"{total_cpu(sealed):.2f}, roomdrop {total_cpu(full):.2f}"
    )
    print(
        f"for reference, measured in this process: one sha256 pass over the {args.size_mb} MiB "
        f"file in 64 KiB chunks {sha_pass:.3f} CPU-s (the receiver makes two); a chunk "
        f"staged and taken back (AES-GCM both ways, pwrite, pread) "
        f"{staging_us:.1f} us"
    )
    if args.profile_server is not None:
        profile_summary(sorted(args.profile_server.glob(f"server-{args.size_mb}MiB-*.stacks")))


if __name__ == "__main__":
    main()
