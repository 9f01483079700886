"""Benchmark: roomdrop on links of known capacity, each path next to bare TCP on the same link.

    .venv/bin/python bench/links.py [--size-mb 100] [--repeat 3] [--profiles 1gbit,100mbit,unshaped]

Run it as root inside a network namespace of its own (it makes its namespaces inside it):
``unshare --net --mount sh -c 'ip link set lo up && .venv/bin/python bench/links.py'``.

The link: two network namespaces, one for the sender's side and one for the receiver's,
each held by an ``unshare --net sleep infinity`` process (entered with ``nsenter -t PID
-n`` for ``ip`` and ``tc``, and with ``setns`` by this process before it starts a child
on that side), joined by a veth pair made inside them (nothing is made in the namespace
this runs in): ``rdl-s`` 10.77.0.1/24 on the sender's side, ``rdl-r`` 10.77.0.2/24 on
the receiver's. Those addresses exist only inside these two namespaces. Each profile
shapes both ends with ``tc qdisc add dev DEV root tbf rate R burst 256kb latency 100ms``:
``1gbit``, ``100mbit``, and ``unshaped`` (no qdisc: the veth's own speed, CPU-bound).
If the kernel has ``netem`` (tried once: ``tc qdisc add ... netem delay 20ms``), the
``100mbit`` profile also delays each direction by 20 ms (a 40 ms round trip, netem under
tbf); without it (this project's kernel: "Specified qdisc kind is unknown") there is no
added delay, and the output says which.

Paths, on each profile, in the same run (runs interleaved, so drift touches every path
alike; every run fresh processes):

* bare TCP: one Python process per side (``TCP_CHILD``, plain blocking sockets): the
  sender connects to the receiver's veth address and writes the file in 64 KiB blocks,
  the receiver writes what it reads to a file. Transfer: the sender's first block ->
  the receiver's last byte written. The link's real capacity, the baseline of the row.
* bare TCP + work: the same two processes doing the per-chunk work of the direct path
  (``TCP_WORK_CHILD``: each chunk encrypted twice, end to end and for the channel, then
  opened twice, hashed and written in place at the other end), in a plain script: the
  floor of the unshaped profile, where the CPU and not the link is the limit.
* bare data channel: ``bench/bare_datachannel.py``, run by ``commands.py``'s code (its
  ``Bench.bare_dc``), with ICE pinned to each side's veth address instead of 127.0.0.1.
* roomdrop direct / p2p / relay: ``commands.py``'s ``Bench.roomdrop``: a real
  ``roomdrop serve`` on the receiver's side listening on 10.77.0.2, then the real
  ``roomdrop receive`` (receiver's side) and ``roomdrop send --transport direct|p2p|relay``
  (sender's side) with ``ROOMDROP_ICE_HOSTS`` set to each side's own veth address, so ICE
  has only those. The sender reaches the server over the link; the receiver, next to the
  server, reaches it inside its namespace. Transfer: the receiver's ``elapsed_s``. A run
  counts only if both commands report ``completed`` over the transport asked for with the
  source's sha256 and the received file is the source.

Whole command: launching the sender (the receiver already waiting) -> both exited.
MB/s = file size / median time, MB = 10^6 bytes; ``x TCP``: against the same profile's
bare TCP, transfer against transfer, whole against whole. CPU seconds (median): each
client's whole process (``os.wait4``: start-up and shutdown included), the server's from
the sender's launch to both clients' exit (/proc utime + stime). Peak memory: each
process's own ``VmHWM`` (``bench/peak.py``), the highest over the runs. UDP drops: datagrams
both namespaces dropped for a full socket buffer (``RcvbufErrors``), per run.

Goal, per profile: roomdrop's CLI -> CLI transfer >= 0.9 x bare TCP on the same link;
unshaped, >= 0.9 x bare TCP + work (whose ratio to plain bare TCP is printed too).

The namespaces, the veth pair (it goes with them) and every child process are removed at
the end, on error, Ctrl-C or SIGTERM too; the sleep processes also die with this one
(``PR_SET_PDEATHSIG``) should it be killed outright.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import secrets
import shlex
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

import commands  # bench/commands.py: its processes and its bare data channel / roomdrop runs
import relay  # bench/relay.py: the helpers shared by the benchmarks

MIB = 1024 * 1024
MB = 1_000_000
GOAL = 0.9  # roomdrop CLI -> CLI transfer >= 0.9 x bare TCP on the same link
SENDER_ADDR, RECEIVER_ADDR = "10.77.0.1", "10.77.0.2"
SENDER_DEV, RECEIVER_DEV = "rdl-s", "rdl-r"
PREFIX = 24
PROFILES = {"1gbit": "1gbit", "100mbit": "100mbit", "unshaped": None}  # tbf rate
NOMINAL_MB_S = {"1gbit": 125.0, "100mbit": 12.5}
TBF = ["burst", "256kb", "latency", "100ms"]
DELAY = {"100mbit": "20ms"}  # each direction, only where netem exists: a 40 ms round trip
PATHS = ("bare-tcp", "bare-tcp-work", "bare-dc", "direct", "p2p", "relay")
LABELS = {
    "bare-tcp": "bare TCP",
    "bare-tcp-work": "bare TCP + work",
    "bare-dc": "bare data channel",
    "direct": "roomdrop direct",
    "p2p": "roomdrop p2p",
    "relay": "roomdrop relay",
}
ROLES = ("sender", "receiver", "server")
MARKER = "ROOMDROP_LINKS_BENCH"  # in the sleep processes' environment: this process's pid
BENCH = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

Failed = relay.Failed

TCP_CHILD = """
import json, os, socket, sys, time

role, host, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
BLOCK = 64 * 1024


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


if role == "receive":
    size, got = int(sys.argv[5]), 0
    buf = bytearray(4 * BLOCK)
    view = memoryview(buf)
    with socket.create_server((host, port)) as server:
        print("ready", flush=True)
        conn, _ = server.accept()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with conn:
            while got < size:
                n = conn.recv_into(buf)
                if not n:
                    break
                done = 0
                while done < n:
                    done += os.write(fd, view[done:n])
                got += n
            end = now()
            conn.sendall(b"done")
        os.close(fd)
    print(json.dumps({"end": end, "bytes": got}), flush=True)
else:
    with socket.create_connection((host, port), timeout=30) as conn, open(path, "rb") as f:
        conn.settimeout(None)
        start = now()
        while block := f.read(BLOCK):
            conn.sendall(block)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(16)
    print(json.dumps({"start": start}), flush=True)
"""
"""The bare TCP path's two processes (``python -c``, under bench/peak.py), stdlib only,
so their memory is Python's and the socket's: ``-c TCP_CHILD receive HOST PORT DEST SIZE``
prints ``ready`` once it listens, then ``{"end": T, "bytes": N}``; ``-c TCP_CHILD send
HOST PORT SOURCE`` prints ``{"start": T}`` (system-wide monotonic clock)."""

TCP_WORK_CHILD = """
import hashlib, json, os, socket, struct, sys, time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

role, host, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
BLOCK = 64 * 1024
LENGTH = struct.Struct(">I")
HEADER = bytes(38)  # a binary frame's header: kind, transfer id, index, lengths
CONTENT, CHANNEL = AESGCM(bytes(range(32))), AESGCM(bytes(range(32, 64)))
TID = bytes(16)


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def aad(index, length):
    return TID + index.to_bytes(4, "big") + length.to_bytes(4, "big")


def recv_exactly(conn, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = conn.recv_into(view[got:])
        if not k:
            raise EOFError
        got += k
    return buf


if role == "receive":
    size, got, seq = int(sys.argv[5]), 0, 0
    whole = hashlib.sha256()
    with socket.create_server((host, port)) as server:
        print("ready", flush=True)
        conn, _ = server.accept()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with conn:
            index = 0
            while got < size:
                (n,) = LENGTH.unpack(recv_exactly(conn, 4))
                record = CHANNEL.decrypt(seq.to_bytes(12, "big"), bytes(recv_exactly(conn, n)), b"")
                seq += 1
                sealed = record[len(HEADER):]
                nonce, length = index.to_bytes(12, "big"), len(sealed) - 16
                data = CONTENT.decrypt(nonce, sealed, aad(index, length))
                hashlib.sha256(data).digest()  # the chunk's own digest, for the record
                whole.update(data)
                os.pwrite(fd, data, index * BLOCK)
                got += len(data)
                index += 1
            end = now()
            whole.hexdigest()
            conn.sendall(b"done")
        os.close(fd)
    print(json.dumps({"end": end, "bytes": got}), flush=True)
else:
    with socket.create_connection((host, port), timeout=30) as conn, open(path, "rb") as f:
        conn.settimeout(None)
        start, index, seq = now(), 0, 0
        while block := f.read(BLOCK):
            sealed = CONTENT.encrypt(index.to_bytes(12, "big"), block, aad(index, len(block)))
            record = CHANNEL.encrypt(seq.to_bytes(12, "big"), HEADER + sealed, b"")
            conn.sendall(LENGTH.pack(len(record)) + record)
            index, seq = index + 1, seq + 1
        conn.shutdown(socket.SHUT_WR)
        conn.recv(16)
    print(json.dumps({"start": start}), flush=True)
"""
"""Bare TCP doing the per-chunk work of roomdrop's direct path, in a plain script
(``cryptography`` only; same arguments and output as TCP_CHILD): the sender encrypts each
64 KiB chunk with AES-256-GCM (nonce from the index, associated data as the chunk's) and
seals the frame, header and all, again (the direct channel's record); the receiver opens
both, hashes the chunk (its digest for the record) and the whole file, and writes it in
place. Neither protocol nor asyncio: the floor the direct path's own code is measured
against on an unshaped link, where the CPU and not the link is the limit."""

DC_CHILD = f"""
import sys
sys.path.insert(0, {str(BENCH)!r})
import aioice.ice
import bare_datachannel

address = sys.argv.pop(1)


def pin_veth():
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [address]


bare_datachannel.pin_loopback = pin_veth
sys.argv[0] = bare_datachannel.__file__
bare_datachannel.main()
"""
"""bench/bare_datachannel.py as it is, but with ICE pinned to the side's veth address
(``-c DC_CHILD ADDRESS send|receive ...``) instead of 127.0.0.1."""


# --- namespaces --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move this (single-threaded) process into the network namespace ``fd`` refers to."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def die_with_parent() -> None:
    """In the child, before exec: SIGKILL once this process is gone, however it ends."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Side:
    """One network namespace, held by an ``unshare --net sleep infinity`` process."""

    def __init__(self, name: str, address: str, dev: str) -> None:
        self.name, self.address, self.dev = name, address, dev
        self.fd: int | None = None
        env = {**os.environ, MARKER: str(os.getpid())}
        self.proc = subprocess.Popen(
            ["unshare", "--net", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
            start_new_session=True,  # a Ctrl-C reaches this process, which removes it
        )
        try:
            self.wait_made()
        except BaseException:
            self.close()
            raise
        self.fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)

    def wait_made(self) -> None:
        """Until the process is ``sleep`` in a namespace of its own."""
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while True:
            try:
                comm = Path(f"/proc/{self.pid}/comm").read_text().strip()
                self.netns = os.readlink(f"/proc/{self.pid}/ns/net")
            except OSError:
                comm, self.netns = "", ours
            if comm == "sleep" and self.netns != ours:
                break
            if self.proc.poll() is not None:
                raise Failed(f"unshare --net exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise Failed(f"the {self.name} side's namespace was not made in 10 s")
            time.sleep(0.005)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", *cmd], capture_output=True, text=True
        )
        if check and done.returncode != 0:
            raise Failed(f"{self.name} side: {shlex.join(cmd)}: {done.stderr.strip()}")
        return done

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This process in this side's namespace (what it starts is there too)."""
        assert self.fd is not None
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            setns(self.fd)
            yield
        finally:
            setns(back)
            os.close(back)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Link:
    """The two sides and the veth pair between them (``with``: removed at the end)."""

    def __init__(self) -> None:
        self.sides: list[Side] = []
        self.no_netem = ""  # why there is no netem (tc's answer), or "" if there is

    def __enter__(self) -> Link:
        try:
            self.sender = self.add(Side("sender", SENDER_ADDR, SENDER_DEV))
            self.receiver = self.add(Side("receiver", RECEIVER_ADDR, RECEIVER_DEV))
            veth = ["type", "veth", "peer", "name", RECEIVER_DEV, "netns", str(self.receiver.pid)]
            self.sender.run("ip", "link", "add", SENDER_DEV, *veth)
            for side in self.sides:
                side.run("ip", "link", "set", "lo", "up")
                side.run("ip", "addr", "add", f"{side.address}/{PREFIX}", "dev", side.dev)
                side.run("ip", "link", "set", side.dev, "up")
            deadline = time.monotonic() + 10
            while not all("LOWER_UP" in self.link_state(s) for s in self.sides):
                if time.monotonic() > deadline:
                    states = "; ".join(self.link_state(s) for s in self.sides)
                    raise Failed(f"the veth pair did not come up in 10 s: {states}")
                time.sleep(0.02)
            self.no_netem = self.probe_netem()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, side: Side) -> Side:
        self.sides.append(side)
        return side

    def link_state(self, side: Side) -> str:
        return side.run("ip", "-o", "link", "show", "dev", side.dev).stdout.strip()

    def probe_netem(self) -> str:
        done = self.sender.run(
            "tc", "qdisc", "add", "dev", SENDER_DEV, "root", "netem", "delay", "20ms", check=False
        )
        if done.returncode == 0:
            self.sender.run("tc", "qdisc", "del", "dev", SENDER_DEV, "root")
            return ""
        return done.stderr.strip() or f"tc exited with {done.returncode}"

    def shape(self, profile: str) -> list[str]:
        """Both ends as ``profile`` says; what ``tc qdisc show`` says of each then."""
        rate = PROFILES[profile]
        delay = None if self.no_netem else DELAY.get(profile)
        shown = []
        for side in self.sides:
            side.run("tc", "qdisc", "del", "dev", side.dev, "root", check=False)  # may be none
            if rate is not None:
                tbf = ["root", "handle", "1:", "tbf", "rate", rate, *TBF]
                side.run("tc", "qdisc", "add", "dev", side.dev, *tbf)
                if delay is not None:
                    netem = ["parent", "1:1", "handle", "10:", "netem", "delay", delay]
                    side.run("tc", "qdisc", "add", "dev", side.dev, *netem)
            qdiscs = side.run("tc", "qdisc", "show", "dev", side.dev).stdout.strip()
            shown.append(f"{side.dev}: " + "; ".join(qdiscs.splitlines()))
        return shown

    def close(self) -> None:
        with contextlib.ExitStack() as stack:  # every side is closed, whatever fails
            for side in self.sides:
                stack.callback(side.close)
            if self.sides:  # deleting one end deletes the pair (so would the namespaces' end)
                self.sides[0].run("ip", "link", "del", SENDER_DEV, check=False)
        self.sides.clear()


# --- the runs ----------------------------------------------------------------------------


class SidedGroup(commands.Group):
    """commands.py's processes, each started on its side: the sender on the sender's,
    the rest (receiver, server) on the receiver's, with ``ROOMDROP_ICE_HOSTS`` and the
    bare data channel's ICE pinned to that side's address; and reaped with ``os.wait4``
    for each client's CPU seconds."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link
        self.cpu: dict[str, float] = {}
        self.server_cpu_at_start: float | None = None

    def start(self, name: str, cmd: list[str], log: Path, **kwargs: Any) -> commands.Child:
        side = self.link.sender if name == "sender" else self.link.receiver
        env = kwargs.get("env")
        if env is not None and "ROOMDROP_ICE_HOSTS" in env:
            kwargs["env"] = {**env, "ROOMDROP_ICE_HOSTS": side.address}
        if cmd[1:2] == [str(commands.BARE_DC)]:
            cmd = [cmd[0], "-c", DC_CHILD, side.address, *cmd[2:]]
        if name == "sender":
            server = self.server()
            if server is not None:
                self.server_cpu_at_start = relay.process_cpu(server.pid)
        with side.entered():
            return super().start(name, cmd, log, **kwargs)

    def server(self) -> commands.Child | None:
        return next((c for c in self.children if c.name == "server" and c.running), None)

    def wait_exit(self, children: list[commands.Child], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for child in children:
                if child.exit_code is None:
                    self.reap(child)
            failed = [c for c in children if c.exit_code not in (None, 0)]
            if failed:
                raise Failed(", ".join(f"{c.name} exited with {c.exit_code}" for c in failed))
            if all(c.exit_code is not None for c in children):
                break
            if time.monotonic() > deadline:
                raise Failed(f"still running after {timeout:.0f} s")
            time.sleep(0.002)
        server = self.server()
        if server is not None and self.server_cpu_at_start is not None:
            self.cpu["server"] = relay.process_cpu(server.pid) - self.server_cpu_at_start

    def reap(self, child: commands.Child) -> None:
        """``Child.reap``, through ``os.wait4`` for the child's CPU seconds."""
        try:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        except ChildProcessError:
            child.reap(block=False)
            return
        if pid:
            child.ended = commands.now()
            child.exit_code = child.proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu[child.name] = usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    transfer_s: float
    whole_s: float
    udp_drops: int
    peak_kib: dict[str, int]
    cpu_s: dict[str, float]


@dataclass
class Series:
    profile: str
    key: str
    size: int
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def transfer_rate(self) -> float:
        return self.size / MB / statistics.median(r.transfer_s for r in self.runs)

    @property
    def whole_rate(self) -> float:
        return self.size / MB / statistics.median(r.whole_s for r in self.runs)

    def peak(self, role: str) -> int:
        return max(r.peak_kib.get(role, 0) for r in self.runs)

    def cpu(self, role: str) -> float:
        values = [r.cpu_s[role] for r in self.runs if role in r.cpu_s]
        return statistics.median(values) if values else math.nan


@dataclass
class LinkBench(commands.Bench):
    link: Link | None = None

    def udp_drops(self) -> int:
        assert self.link is not None
        total = 0
        for side in self.link.sides:
            with side.entered():
                total += commands.udp_receive_drops()
        return total

    def measure(self, key: str, source: Path) -> Run:
        assert self.link is not None
        self.count += 1
        workdir = self.tmp / f"run-{self.count}-{key}"
        workdir.mkdir()
        group = SidedGroup(self.link)
        drops = self.udp_drops()
        try:
            if key in ("bare-tcp", "bare-tcp-work"):
                run = self.bare_tcp(group, source, workdir, key == "bare-tcp-work")
            elif key == "bare-dc":
                run = self.bare_dc(group, source, workdir)
            else:
                run = self.roomdrop(group, key, source, workdir)
            peaks = {"sender": run.sender_kib, "receiver": run.receiver_kib}
            if run.server_kib:
                peaks["server"] = run.server_kib
            return Run(run.transfer_s, run.whole_s, self.udp_drops() - drops, peaks, group.cpu)
        except Failed as exc:
            raise group.fail(f"{LABELS[key]} run {self.count} ({workdir.name})", exc) from None
        finally:
            group.stop_all()
            for received in workdir.rglob("*"):  # keep the temp dir small between runs
                if received.is_file() and received.stat().st_size > MIB:
                    received.unlink()

    def bare_tcp(
        self, group: SidedGroup, source: Path, workdir: Path, work: bool = False
    ) -> commands.Run:
        size, dest, port = source.stat().st_size, workdir / "received.bin", relay.free_port()
        tcp = [sys.executable, "-c", TCP_WORK_CHILD if work else TCP_CHILD]
        receive = [*tcp, "receive", RECEIVER_ADDR, str(port), str(dest), str(size)]
        receiver = group.start("receiver", receive, workdir / "receiver.log")
        if receiver.read_line(60) != "ready":
            raise Failed("receiver did not say it was ready")
        start = commands.now()
        send = [*tcp, "send", RECEIVER_ADDR, str(port), str(source)]
        sender = group.start("sender", send, workdir / "sender.log")
        group.wait_exit([sender, receiver], self.timeout)
        sent, received = json.loads(sender.read_line(5)), json.loads(receiver.read_line(5))
        if received["bytes"] != size:
            raise Failed(f"receiver got {received['bytes']} bytes of {size}")
        self.check_copy(source, dest)
        return commands.Run(
            received["end"] - sent["start"],
            max(sender.ended, receiver.ended) - start,
            sender.peak_kib,
            receiver.peak_kib,
        )


# --- main: the runs and the table --------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}" if kib else "-"


def seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def print_table(
    series: list[Series],
    args: argparse.Namespace,
    size: int,
    link_info: list[str],
    shaping: dict[str, list[str]],
    load: str,
) -> None:
    print(
        f"roomdrop on links of known capacity: {args.size_mb} MiB file ({size:,} bytes), "
        f"median of {args.repeat} run(s) per path and profile, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPU(s), load average {load} at the "
        f"start, {commands.load_average()} at the end"
    )
    python = os.path.relpath(sys.executable)
    python = sys.executable if python.startswith("..") else python
    print(f"command: {shlex.join([python, *sys.argv])} (as root, in a namespace of its own)")
    for line in link_info:
        print(line)
    for profile, shown in shaping.items():
        print(f"profile {profile}: " + " | ".join(shown))
    print(
        "bare TCP: one process per side, plain sockets, 64 KiB writes; bare data channel: "
        "bench/bare_datachannel.py, ICE pinned to each side's veth address; roomdrop: "
        "receive --server http://10.77.0.2:PORT --room bench --token T --out DIR --yes "
        "--count 1 --json; send FILE --server ... --to bob --token T --transport "
        "direct|p2p|relay "
        "--json; ROOMDROP_ICE_HOSTS = the side's veth address"
    )
    print(
        "transfer: bare TCP first block sent -> last byte written; bare data channel open "
        "-> last byte written; roomdrop: the receiver's elapsed_s (accept -> verified end); "
        "whole: launching the sender (receiver waiting) -> both exited; MB = 10^6 bytes; "
        "x TCP: against the profile's bare TCP, same kind of figure"
    )
    print(
        "CPU seconds (median): each client's whole process (os.wait4), the server's from "
        "the sender's launch to both clients' exit; peak memory: each process's own VmHWM "
        "(bench/peak.py), highest over the runs"
    )
    print()
    print(
        f"{'':<29}{'transfer':^15} {'whole command':^15}  {'CPU seconds':^26}  "
        f"{'peak memory (MiB)':^26}"
    )
    print(
        f"{'profile':<9}{'path':<19} {'MB/s':>7} {'x TCP':>6}  {'MB/s':>7} {'x TCP':>6}  "
        f"{'sender':>8} {'receiver':>8} {'server':>8}  {'sender':>8} {'receiver':>8} "
        f"{'server':>8}"
    )
    base = {s.profile: s for s in series if s.key == "bare-tcp"}
    for s in series:
        tcp = base[s.profile]
        print(
            f"{s.profile:<9}{s.label:<19} {s.transfer_rate:>7.1f} "
            f"{s.transfer_rate / tcp.transfer_rate:>5.2f}x  {s.whole_rate:>7.1f} "
            f"{s.whole_rate / tcp.whole_rate:>5.2f}x  "
            + " ".join(f"{seconds(s.cpu(role)):>8}" for role in ROLES)
            + "  "
            + " ".join(f"{mib(s.peak(role)):>8}" for role in ROLES)
        )
    print()
    print("seconds per run: transfer / whole (UDP datagrams dropped by a full socket buffer)")
    for s in series:
        runs = "  ".join(f"{r.transfer_s:.3f}/{r.whole_s:.3f} ({r.udp_drops})" for r in s.runs)
        print(f"  {s.profile:<9}{s.label:<19} {runs}")
    print()
    for profile, tcp in base.items():
        if profile in NOMINAL_MB_S:
            nominal = NOMINAL_MB_S[profile]
            print(
                f"link {profile}: bare TCP {tcp.transfer_rate:.1f} MB/s = "
                f"{tcp.transfer_rate / nominal:.2f} x the nominal {nominal:.1f} MB/s "
                "(tbf counts each frame's headers; its 256 KB burst goes first, at once)"
            )
        else:
            print(f"link {profile}: bare TCP {tcp.transfer_rate:.1f} MB/s (no shaping: CPU-bound)")
    work = {s.profile: s for s in series if s.key == "bare-tcp-work"}
    for profile, tcp in base.items():
        # shaped: against the link (bare TCP); unshaped, where the CPU is the limit:
        # against bare TCP doing the same per-chunk work
        against = work.get(profile) if profile not in NOMINAL_MB_S else None
        floor = against or tcp
        parts = []
        for s in series:
            if s.profile == profile and s.key in ("direct", "p2p", "relay"):
                ratio = s.transfer_rate / floor.transfer_rate
                verdict = "met" if ratio >= GOAL else "NOT met"
                parts.append(
                    f"{s.label} {s.transfer_rate:.1f} MB/s = {ratio:.2f}x ({verdict}; whole "
                    f"command {s.whole_rate / floor.whole_rate:.2f}x)"
                )
        if parts:
            print(
                f"goal CLI -> CLI >= {GOAL} x {floor.label} on {profile} "
                f"({floor.transfer_rate:.1f} MB/s), transfer phase: " + "; ".join(parts)
            )
        if against is not None:
            print(
                f"  ({against.label} on {profile} = {against.transfer_rate / tcp.transfer_rate:.2f}"
                f" x plain bare TCP, {tcp.transfer_rate:.1f} MB/s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (median)")
    parser.add_argument(
        "--profiles",
        default=",".join(PROFILES),
        help=f"comma-separated link profiles, of {', '.join(PROFILES)} (default: all)",
    )
    args = parser.parse_args()
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")
    if not profiles or any(p not in PROFILES for p in profiles):
        parser.error(f"--profiles takes profiles among {', '.join(PROFILES)}")
    profiles = [p for p in PROFILES if p in profiles]
    if os.geteuid() != 0:
        parser.error("run it as root (in a namespace of its own: unshare --net --mount ...)")

    # commands.py's and relay.py's runs use their HOST for the server's address, its
    # health checks, the room's metrics and free ports: here, the receiver's veth address
    commands.HOST = relay.HOST = RECEIVER_ADDR
    load = commands.load_average()
    size = args.size_mb * MIB
    series = [Series(p, k, size) for p in profiles for k in PATHS]
    shaping: dict[str, list[str]] = {}
    with (
        relay.sigterm_as_exit(),
        tempfile.TemporaryDirectory(prefix="roomdrop-links-bench-") as tmp,
    ):
        source = Path(tmp) / "source.bin"
        relay.make_random_file(source, args.size_mb)
        bench = LinkBench(Path(tmp), secrets.token_urlsafe(32), max(300.0, 3.0 * args.size_mb))
        try:
            with Link() as link:
                bench.link = link
                sides = ", ".join(
                    f"{s.name} {s.netns} (pid {s.pid}) {s.dev} {s.address}/{PREFIX}"
                    for s in link.sides
                )
                link_info = [
                    f"network namespaces (removed at the end), joined by a veth pair: {sides}; "
                    f"the server runs on the receiver's side on {RECEIVER_ADDR}",
                    "netem: "
                    + (
                        f"present: the 100mbit profile adds {DELAY['100mbit']} each way "
                        "(a 40 ms round trip)"
                        if not link.no_netem
                        else f"not in this kernel (tc: {link.no_netem!r}): no delay added, "
                        "every profile has the veth's own round trip"
                    ),
                ]
                for profile in profiles:
                    shaping[profile] = link.shape(profile)
                    with link.receiver.entered():
                        for _ in range(args.repeat):
                            for s in series:  # interleaved, so drift touches every path alike
                                if s.profile == profile:
                                    s.runs.append(bench.measure(s.key, source))
        except Failed as exc:
            raise SystemExit(f"benchmark failed: {exc}") from None
    print_table(series, args, size, link_info, shaping, load)


if __name__ == "__main__":
    main()
