"""Benchmark: roomdrop's relay across two instances sharing Redis, next to one instance.

    .venv/bin/python bench/instances.py [--size-mb 100] [--repeat 3] [--profile-server DIR]

Starts its own ``redis-server`` (Debian's package) on a free port of 127.0.0.1, with
nothing persisted (``--save '' --appendonly no``, in the temp dir), creates a random file
of ``--size-mb`` MiB and one of a quarter of that, then measures, in the same run, the
median of ``--repeat`` runs of each path (runs interleaved, so drift touches every path
alike):

* one instance: one ``roomdrop serve``, in-memory state (no Redis): the single-instance
  figure, the same transfer as the roomdrop relay of ``bench/relay.py``;
* one + Redis: one ``roomdrop serve`` with ``ROOMDROP_REDIS_URL`` (records, rooms and
  progress in Redis; sender and receiver on that one instance, so the chunks go straight
  from socket to socket);
* two instances: two ``roomdrop serve`` sharing Redis (a fresh ``ROOMDROP_REDIS_PREFIX``
  per run, the same ``ROOMDROP_SECRET``, a data dir each); the receiver connects to
  instance 2 and the sender to instance 1, so every chunk crosses from instance 1 to
  instance 2 through the transfer's bounded queue in Redis (16 sealed frames);
* two instances again at a quarter of the size, to show each instance's and Redis's
  memory does not grow with the file.

The clients are ``bench/relay.py``'s (``relay.py --child``: ``roomdrop_send`` and
``roomdrop_receive``; websockets, uvloop, one whole binary frame per 64 KiB chunk, every
chunk's sha256 checked by the receiver and the whole file's at the end), and so are the
helpers (processes, /proc readings). Every run is fresh server and client processes;
the Redis server stays up for the whole benchmark. Time runs from the sender's first
frame to the receiver's verified end. MB = 10^6 bytes.

Memory: each process's own ``VmHWM`` (``bench/peak.py``: each instance's read from /proc
at the end of the run, each client's as it exits), the highest over the runs, and each as
a ratio to the same process of one instance in the same run. Redis, two figures: its
process's ``VmHWM``,
reset at the start of each run (``MEMORY PURGE``, then ``5`` written to
``/proc/<pid>/clear_refs``, which sets the high-water mark to the current RSS); and the
highest ``used_memory`` of ``INFO memory`` sampled every 10 ms during the run (Redis
7.0's ``CONFIG RESETSTAT`` does not reset ``used_memory_peak``, so that figure is not
usable per run). The sampling's own ``INFO`` calls count in Redis's CPU (a few ms).
CPU seconds (median): the sender's over its sending loop, the receiver's from joining to
its verified end, each instance's and redis-server's (/proc utime + stime, all threads)
from the receiver's joining to the end of the run.

``--profile-server DIR`` runs every instance under ``bench/relay.py``'s CPU-time
sampling profiler (``relay.py --sampled-server``), leaves
``<path>-<size>MiB-<run>-inst<n>.stacks`` in DIR (flamegraph.pl's collapsed form) and
prints where each full-size instance's CPU went. Its throughput figures are then lower.

Only 127.0.0.1 is used. Every process, Redis included, is stopped and the temp dir
deleted at the end, on error too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

import relay  # bench/relay.py: the roomdrop clients (relay.py --child) and the helpers

HOST = relay.HOST
MIB, MB, CHUNK = relay.MIB, relay.MB, relay.CHUNK
FLAT = relay.FLAT  # a peak at the full size may be at most 10 % above the quarter-size one
RELAY_BENCH = Path(relay.__file__).resolve()
REDIS_SERVER = "/usr/bin/redis-server"
SAMPLE_EVERY = 0.01  # seconds between two INFO memory samples
Failed = relay.Failed

MODES = {
    "one": (1, False),  # instances, with Redis
    "one-redis": (1, True),
    "two": (2, True),
}


class RedisServer:
    """A ``redis-server`` on a free port of 127.0.0.1, nothing persisted."""

    def __init__(self, base: Path) -> None:
        binary = REDIS_SERVER if os.access(REDIS_SERVER, os.X_OK) else shutil.which("redis-server")
        if binary is None:
            raise Failed("redis-server is missing (Debian: apt-get install redis-server)")
        base.mkdir()
        self.port = relay.free_port()
        self.log = base / "redis.log"
        cmd = [binary, "--port", str(self.port), "--bind", HOST, "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(base), "--logfile", str(self.log)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.client = redis.Redis(host=HOST, port=self.port)
        self.version = ""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.version = str(self.client.info("server")["redis_version"])
                return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Failed(f"redis-server did not start:\n{relay.tail(self.log)}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def commands(self) -> dict[str, tuple[int, int]]:
        """Calls and microseconds per command since the last ``CONFIG RESETSTAT``."""
        stats = self.client.info("commandstats")
        return {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in stats.items()}

    def reset(self) -> bool:
        """Reset the command statistics; give freed memory back to the system, then reset
        the process's VmHWM (False if that failed)."""
        self.client.config_resetstat()
        self.client.memory_purge()
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sampler:
    """The highest ``used_memory`` of Redis, sampled every ``SAMPLE_EVERY`` s meanwhile."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(host=HOST, port=port)
        self.peak = self.client.info("memory")["used_memory"]
        self.samples = 1
        self.error: Exception | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        try:
            while not self.stopping.wait(SAMPLE_EVERY):
                self.peak = max(self.peak, self.client.info("memory")["used_memory"])
                self.samples += 1
        except redis.RedisError as exc:
            self.error = exc

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join()
        self.client.close()
        if self.error is not None:
            raise Failed(f"sampling Redis's memory failed: {self.error}")
        return int(self.peak)


@dataclass
class Run:
    seconds: float
    servers_kib: list[int]
    servers_cpu: list[float]
    staged: list[int | None]
    """chunks each instance staged on disk (the receiver's side was behind)"""
    sender_kib: int
    receiver_kib: int
    sender_cpu: float
    receiver_cpu: float
    redis_kib: int | None
    """redis-server's VmHWM over the run (None: no Redis, or its VmHWM was not reset)"""
    redis_used: int | None
    """the highest used_memory sampled during the run, bytes"""
    redis_cpu: float | None
    in_order: bool | None
    redis_commands: dict[str, tuple[int, int]]
    """Redis's calls and microseconds per command during the run (INFO commandstats)"""


@dataclass
class Series:
    mode: str
    label: str
    size: int
    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rate(self) -> float:
        return self.size / MB / self.seconds

    def peak(self, get: Callable[[Run], float | None]) -> float | None:
        values = [v for r in self.runs if (v := get(r)) is not None]
        return max(values) if values else None

    def median(self, get: Callable[[Run], float | None]) -> float | None:
        values = [v for r in self.runs if (v := get(r)) is not None]
        return statistics.median(values) if values else None


def server_getter(i: int, attr: str) -> Callable[[Run], float | None]:
    def get(r: Run) -> float | None:
        values: list[float] = getattr(r, attr)
        return values[i] if i < len(values) else None

    return get


def kib_to_mib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def bytes_to_mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


@dataclass
class Bench:
    tmp: Path
    secret: str
    timeout: float
    redis: RedisServer
    profile_dir: Path | None = None
    count: int = 0
    hwm_reset: bool = True

    def run(self, mode: str, source: Path) -> Run:
        """One transfer of ``source`` through fresh instances of ``mode``."""
        self.count += 1
        instances, shared = MODES[mode]
        size = source.stat().st_size
        workdir = self.tmp / f"run-{self.count}-{mode}"
        workdir.mkdir()
        dest = workdir / "received.bin"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
        env["ROOMDROP_SECRET"] = self.secret  # every other setting at its default, but:
        env["ROOMDROP_MAX_FILE_SIZE"] = str(max(size, 500 * MIB))
        prefix = f"bench{self.count}-{uuid.uuid4().hex[:8]}"
        if shared:
            env["ROOMDROP_REDIS_URL"] = self.redis.url
            env["ROOMDROP_REDIS_PREFIX"] = prefix
        ports = [relay.free_port() for _ in range(instances)]
        data_dirs = [workdir / f"data{i + 1}" for i in range(instances)]
        logs = [workdir / f"server{i + 1}.log" for i in range(instances)]
        procs = relay.Processes()
        sampler: Sampler | None = None
        try:
            servers = []
            for i, (port, data_dir, log) in enumerate(zip(ports, data_dirs, logs, strict=True)):
                serve = ["serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)]
                cmd = [sys.executable, "-m", "roomdrop.cli", *serve]
                if self.profile_dir is not None:
                    name = f"{mode}-{size // MIB}MiB-{self.count}-inst{i + 1}.stacks"
                    cmd = [sys.executable, str(RELAY_BENCH), relay.SAMPLED]
                    cmd += [str(self.profile_dir / name), *serve]
                servers.append(procs.start(cmd, log, env, pipe=False))
            for port, server, log in zip(ports, servers, logs, strict=True):
                relay.wait_healthy(port, server, log)

            from roomdrop.server.auth import TokenAuthority

            authority = TokenAuthority(self.secret)
            url = f"ws://{HOST}:{{}}/webrtc/ws/{relay.ROOM}?token={{}}"
            send_url = url.format(ports[0], authority.issue(relay.SENDER, 3600))
            receive_url = url.format(ports[-1], authority.issue(relay.RECEIVER, 3600))
            if shared:
                self.hwm_reset = self.redis.reset() and self.hwm_reset
                sampler = Sampler(self.redis.port)
            receiver_log, sender_log = workdir / "receiver.log", workdir / "sender.log"
            receiver = procs.start(
                self.child_cmd("roomdrop-receive", receive_url, dest), receiver_log
            )
            if (line := procs.wait_line(receiver, "receiver", 30)) != "ready":
                raise Failed(f"receiver printed {line!r}")
            servers_cpu = [relay.process_cpu(s.pid) for s in servers]
            redis_cpu = relay.process_cpu(self.redis.proc.pid)
            sender = procs.start(self.child_cmd("roomdrop-send", send_url, source), sender_log)
            try:
                sent = procs.result(sender, "sender", self.timeout)
                received = procs.result(receiver, "receiver", self.timeout)
            except Failed as exc:
                tails = "\n".join(
                    f"--- {p.name}:\n{relay.tail(p)}" for p in (sender_log, receiver_log, *logs)
                )
                raise Failed(f"{mode} run {self.count}: {exc}\n{tails}") from None
            servers_kib = [relay.vm_hwm_kib(s.pid) for s in servers]
            servers_cpu = [
                relay.process_cpu(s.pid) - c for s, c in zip(servers, servers_cpu, strict=True)
            ]
            redis_cpu = relay.process_cpu(self.redis.proc.pid) - redis_cpu
            redis_used = sampler.stop() if sampler is not None else None
            sampler = None
            redis_kib = relay.vm_hwm_kib(self.redis.proc.pid) if shared else None
            commands = self.redis.commands() if shared else {}
            staged = [relay.staged_chunks(port) for port in ports]
            self.check_leftovers(mode, data_dirs, logs, prefix if shared else None)
        finally:
            if sampler is not None:
                with contextlib.suppress(Failed):
                    sampler.stop()
            procs.stop_all()
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
        return Run(
            seconds=received["end"] - sent["start"],
            servers_kib=servers_kib,
            servers_cpu=servers_cpu,
            staged=staged,
            sender_kib=sent["peak_kib"],
            receiver_kib=received["peak_kib"],
            sender_cpu=sent["cpu"],
            receiver_cpu=received["cpu"],
            redis_kib=redis_kib if shared and self.hwm_reset else None,
            redis_used=redis_used,
            redis_cpu=redis_cpu if shared else None,
            in_order=received.get("in_order"),
            redis_commands=commands,
        )

    def child_cmd(self, role: str, url: str, path: Path) -> list[str]:
        spec = {"role": role, "url": url, "path": str(path), "size": 0}
        return [sys.executable, str(RELAY_BENCH), "--child", json.dumps(spec)]

    def check_leftovers(
        self, mode: str, data_dirs: list[Path], logs: list[Path], prefix: str | None
    ) -> None:
        """Warnings (not failures) for what a finished transfer should not leave behind."""
        for i, data_dir in enumerate(data_dirs, 1):
            if leftovers := list((data_dir / "relay").glob("*")):
                print(f"warning: instance {i} left relay staging: {leftovers}", file=sys.stderr)
        for i, log in enumerate(logs, 1):
            text = log.read_text(errors="replace")
            if '"level": "error"' in text or "Traceback" in text:
                print(f"warning: {mode} instance {i} logged errors:\n{text}", file=sys.stderr)
        if prefix is not None:
            queued = self.redis.client.keys(f"{prefix}:q:*")
            if queued:
                print(f"warning: relay queues left in Redis: {queued}", file=sys.stderr)


def cell(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    relay.add_size_options(parser, "sample the instances' CPU here")
    args = parser.parse_args()
    quarter_mb, size, quarter = relay.sizes(parser, args)
    paths = [
        Series("one", "one instance", size),
        Series("one-redis", "one + Redis", size),
        Series("two", "two instances", size),
        Series("two", "two instances", quarter),
    ]
    with (
        relay.sigterm_as_exit(),
        tempfile.TemporaryDirectory(prefix="roomdrop-instances-bench-") as tmp,
    ):
        files = {size: Path(tmp) / "source.bin", quarter: Path(tmp) / "quarter.bin"}
        relay.make_random_file(files[size], args.size_mb)
        relay.make_random_file(files[quarter], quarter_mb)
        try:
            server = RedisServer(Path(tmp) / "redis")
        except Failed as exc:
            raise SystemExit(f"benchmark failed: {exc}") from None
        try:
            timeout = max(120.0, args.size_mb)
            secret = secrets.token_urlsafe(32)
            bench = Bench(Path(tmp), secret, timeout, server, args.profile_server)
            for _ in range(args.repeat):
                for p in paths:  # interleaved, so drift touches every path alike
                    p.runs.append(bench.run(p.mode, files[p.size]))
        except (Failed, redis.RedisError) as exc:
            raise SystemExit(f"benchmark failed: {exc}") from None
        finally:
            server.stop()
    report(args.size_mb, quarter_mb, args.repeat, paths, server.version, bench.hwm_reset)
    if args.profile_server is not None:
        print(
            f"\ninstances ran under relay.py's sampling profiler (stacks in {args.profile_server})"
        )
        for mode in MODES:
            for i in (1, 2):
                stacks = sorted(
                    args.profile_server.glob(f"{mode}-{args.size_mb}MiB-*-inst{i}.stacks")
                )
                if stacks:
                    print(f"\n== {mode}, instance {i}:", end="")
                    relay.profile_summary(stacks)


def report(
    size_mb: int, quarter_mb: int, repeat: int, paths: list[Series], version: str, hwm: bool
) -> None:
    one, with_redis, two, small = paths
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"roomdrop relay across instances: {size_mb} MiB file ({size_mb * MIB:,} bytes) and "
        f"{quarter_mb} MiB, chunks of 64 KiB, median of {repeat} run(s) per path, "
        f"Python {sys.version.split()[0]}, redis-server {version}, {os.cpu_count()} CPU(s), "
        f"load average {load} at the end"
    )
    print(
        "each run: fresh instance(s) + receiver + sender processes on 127.0.0.1 (one "
        "redis-server for the whole benchmark); time from the first frame sent to the "
        "receiver's verified end; MB = 10^6 bytes; 'x one' = MB/s / one instance's MB/s"
    )
    print(
        "peak memory, highest over the runs: each process's own VmHWM (bench/peak.py), 'redis' = "
        "redis-server's (reset per run"
        + ("" if hwm else ": RESET FAILED, not shown")
        + f"), 'r.used' = Redis's highest INFO used_memory sampled every {SAMPLE_EVERY * 1000:.0f} "
        "ms; CPU: seconds each process used while the file moved, median"
    )
    print(
        "one instance: in memory, no Redis; one + Redis: one instance with the Redis backend; "
        "two instances: sender on instance 1, receiver on instance 2, chunks through Redis"
    )
    print()
    head_mem, head_cpu = "peak memory (MiB)", "CPU seconds"
    print(f"{'':<50}{head_mem:^47}  {head_cpu:^39}")
    print(
        f"{'path':<14} {'file':>8} {'seconds':>8} {'MB/s':>7} {'x one':>7}  "
        f"{'inst 1':>7} {'inst 2':>7} {'redis':>7} {'r.used':>7} {'sender':>7} {'receiv.':>7}  "
        f"{'inst 1':>7} {'inst 2':>7} {'redis':>7} {'sender':>7} {'receiv.':>7}"
    )
    for p in paths:
        mems = [
            kib_to_mib(p.peak(server_getter(0, "servers_kib"))),
            kib_to_mib(p.peak(server_getter(1, "servers_kib"))),
            kib_to_mib(p.peak(lambda r: r.redis_kib)),
            bytes_to_mib(p.peak(lambda r: r.redis_used)),
            kib_to_mib(p.peak(lambda r: r.sender_kib)),
            kib_to_mib(p.peak(lambda r: r.receiver_kib)),
        ]
        cpus = [
            p.median(server_getter(0, "servers_cpu")),
            p.median(server_getter(1, "servers_cpu")),
            p.median(lambda r: r.redis_cpu),
            p.median(lambda r: r.sender_cpu),
            p.median(lambda r: r.receiver_cpu),
        ]
        print(
            f"{p.label:<14} {p.size // MIB:>4} MiB {p.seconds:>8.3f} {p.rate:>7.1f} "
            f"{p.rate / one.rate:>6.2f}x  "
            + " ".join(cell(m, 7) for m in mems)
            + "  "
            + " ".join(cell(c, 7, 2) for c in cpus)
        )
    peaks = {"inst 1": server_getter(0, "servers_kib")}
    peaks.update(sender=lambda r: r.sender_kib, receiver=lambda r: r.receiver_kib)
    print(relay.memory_ratios(paths, one, peaks))
    print()
    for p in paths:  # runs were interleaved: one 1, one + Redis 1, two 1, quarter 1, one 2, ...
        rates = ", ".join(f"{p.size / MB / r.seconds:.1f}" for r in p.runs)
        staged = "; ".join(
            ", ".join("?" if s is None else f"{s:,}" for s in r.staged) for r in p.runs
        )
        disorder = sum(1 for r in p.runs if r.in_order is False)
        print(
            f"{p.label} {p.size // MIB} MiB: MB/s per run: {rates}; chunks staged on disk "
            f"per run (per instance): {staged} of {p.size // CHUNK:,}; runs with chunks out "
            f"of order: {disorder} of {len(p.runs)}"
        )
    print()
    for p in paths[1:]:
        for n, r in enumerate(p.runs, 1):
            top = sorted(r.redis_commands.items(), key=lambda item: -item[1][1])[:6]
            calls = ", ".join(f"{name} {c:,} / {us / 1000:.0f} ms" for name, (c, us) in top)
            print(f"{p.label} {p.size // MIB} MiB run {n}: Redis calls / time in them: {calls}")
    print()
    checks = [
        ("instance 1", server_getter(0, "servers_kib"), 1024),
        ("instance 2", server_getter(1, "servers_kib"), 1024),
        ("Redis rss", lambda r: r.redis_kib, 1024),
        ("Redis used", lambda r: r.redis_used, MIB),
    ]
    flats = []
    for name, get, unit in checks:
        big, little = two.peak(get), small.peak(get)
        if big is None or little is None:
            flats.append(f"{name} not measured")
            continue
        verdict = "flat" if big <= little * FLAT else "GROWS"
        flats.append(f"{name} {little / unit:.1f} -> {big / unit:.1f} MiB {verdict}")
    print(
        f"summary: two instances {two.rate:.1f} MB/s = {two.rate / one.rate:.2f} x one instance "
        f"({one.rate:.1f} MB/s; one + Redis {with_redis.rate:.1f} MB/s = "
        f"{with_redis.rate / one.rate:.2f} x); peak memory of the two instances at "
        f"{quarter_mb} -> {size_mb} MiB (limit +{(FLAT - 1) * 100:.0f} %): " + ", ".join(flats)
    )


if __name__ == "__main__":
    main()
