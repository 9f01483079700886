"""Benchmark: the real ``roomdrop send`` / ``roomdrop receive`` commands, P2P and relayed, each
next to a bare baseline measured in the same run.

    .venv/bin/python bench/commands.py [--size-mb 100] [--repeat 3] [--only PATH,...]
        [--wormhole-venv DIR | --no-wormhole]

Run it inside a loopback-only namespace, as the tests are:
``unshare --net sh -c 'ip link set lo up && .venv/bin/python bench/commands.py'``.

Creates a random file of ``--size-mb`` MiB and one of a quarter of that in a temp dir, then
measures the median of ``--repeat`` runs of each path (runs interleaved, so drift touches
every path alike). Every run is fresh processes; only 127.0.0.1 is used; no STUN or TURN.

* bare data channel (``bench/bare_datachannel.py``): two aiortc processes (uvloop), one
  data channel, the session descriptions passed through this script's pipes, ICE pinned
  to 127.0.0.1 with no ICE servers. 64 KiB blocks sent as two 32,840-byte messages (dummy
  72-byte header + 32 KiB), at most ~1 MiB buffered (``bufferedamountlow``); the receiver
  writes the data to a file. Transfer phase: from the channel's open event to the last
  byte written. The P2P baseline.
* bare WebSocket relay: ``bench/bare_relay.py`` (FastAPI/uvicorn, forwards each message
  as it is) with the bare clients of ``bench/relay.py`` (``relay.py --child``, i.e.
  ``bare_send`` / ``bare_receive``): one 64 KiB block + 72-byte header per message, the
  receiver writes the data to a file. Transfer phase: from the sender's first message to
  the last byte written. Its receiver then reads the file back once for its sha256
  (``bare_receive`` does; only to check the relay), which counts in its whole command.
  The relay baseline.
* roomdrop p2p / roomdrop relay: a real ``roomdrop serve`` (``python -m roomdrop.cli
  serve``, ``ROOMDROP_SECRET`` random, everything else default but the file-size limit),
  tokens from ``TokenAuthority``, then the real commands, ``ROOMDROP_ICE_HOSTS=127.0.0.1``:
  ``roomdrop receive --server URL --room bench --token T --out DIR --yes --count 1 --json``
  and ``roomdrop send FILE --server URL --room bench --to bob --token T --transport
  p2p|relay --json``. Transfer phase: the receiver's ``elapsed_s`` (from the accept to the
  verified end, as the command reports it). A run counts only if both commands exit 0,
  both result lines say ``completed`` over the transport asked for with the source's
  sha256, and the received file's sha256 is the source's.
* the two roomdrop paths again at a quarter of the size, to see whether any process's
  memory grows with the file.
* magic-wormhole (``bench/wormhole.py``): ``wormhole send`` -> ``wormhole receive``
  through its own mailbox server and transit relay on 127.0.0.1, installed from PyPI at
  run time into a venv of their own (``--wormhole-venv DIR`` keeps one between runs;
  ``--no-wormhole`` leaves the row out, and the output says so). Whole command only.

Whole command: wall time from launching the sender to both processes having exited (the
receiver was started first and is already waiting: for roomdrop, joined to the room, as
the server's ``roomdrop_rooms`` metric shows; for the baselines, connected / ready). It
includes the sender's start-up (imports), signalling and connecting, the roomdrop sender's
hashing of the file, the transfer, and the ends' shutdown.

MB/s = file size / median time, MB = 10^6 bytes. Each ratio is against the baseline of the
same kind (P2P: bare data channel; relay: bare WebSocket relay), transfer phase against
transfer phase, whole command against whole command. Peak memory: each process's own
``VmHWM`` (``bench/peak.py``: the sender's and the receiver's as each exits, the server's
from /proc just before it is stopped), the highest over the repeats; a line under the
table gives each roomdrop process's peak as a ratio to the same process of its baseline
in the same run. Nothing is fsynced by the baselines. Every process
is stopped and the temp dir deleted at the end, on error too.

aiortc's figures vary from run to run: now and then the receiving process's UDP socket
buffer (the kernel's default size) overflows, and SCTP's loss recovery shrinks its window.
The drops (``RcvbufErrors`` in /proc/net/snmp, for this network namespace, so run it in one
of its own) are printed for every run next to its seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import secrets
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import peak  # bench/peak.py: each process's own peak memory
import relay  # bench/relay.py: the bare relay's clients and the helpers shared with it
import wormhole  # bench/wormhole.py: the magic-wormhole row

MIB = 1024 * 1024
MB = 1_000_000
HOST = "127.0.0.1"
ROOM = "bench"
SENDER, RECEIVER = "alice", "bob"
GOAL_P2P = 0.9  # roomdrop p2p transfer phase >= 0.9 x the bare data channel's
GOAL_RELAY = 0.5  # roomdrop relay whole command >= 0.5 x the bare WebSocket relay's
GOAL_WORMHOLE = 2.5  # roomdrop relay whole command >= 2.5 x magic-wormhole's
FLAT = 1.10  # full-size peak <= 1.10 x quarter-size peak + FLAT_SLACK
FLAT_SLACK_KIB = 4 * 1024
BARE_DC = Path(__file__).resolve().with_name("bare_datachannel.py")
RELAY_BENCH = Path(relay.__file__).resolve()
ROOMDROP = [sys.executable, "-m", "roomdrop.cli"]
PATHS = ("bare-dc", "p2p", "bare-ws", "relay", "wormhole")
LABELS = {
    "bare-dc": "bare data channel",
    "p2p": "roomdrop p2p",
    "bare-ws": "bare ws relay",
    "relay": "roomdrop relay",
    "wormhole": "magic-wormhole",
}
BASELINE = {"p2p": "bare-dc", "relay": "bare-ws"}
PEAKS = {"sender": "sender_kib", "receiver": "receiver_kib", "server": "server_kib"}


def now() -> float:
    """System-wide monotonic clock, comparable between processes on one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


Failed = relay.Failed  # relay's helpers raise it too


# --- processes -------------------------------------------------------------------------


class Child:
    """One process. It is reaped with ``os.waitpid`` (for the moment it ended), never with
    Popen's own waiting. A ``measured`` one runs under bench/peak.py: :attr:`peak_kib` is
    its own peak once it has exited."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        stdout: Path | None = None,
        stdin: bool = False,
        measured: bool = True,
    ) -> None:
        self.name, self.cmd, self.log, self.stdout_path = name, cmd, log, stdout
        self.exit_code: int | None = None
        self.peak_report = log.with_suffix(".peak") if measured else None
        self.ended = 0.0
        self._buf = b""
        with contextlib.ExitStack() as files:
            err = files.enter_context(log.open("wb"))
            out: int | IO[bytes] = subprocess.PIPE
            if stdout is not None:
                out = files.enter_context(stdout.open("wb"))
            stdin_to = subprocess.PIPE if stdin else subprocess.DEVNULL
            files_to = {"stdin": stdin_to, "stdout": out, "stderr": err}
            options: dict[str, Any] = {"env": env, "cwd": log.parent, "bufsize": 0, **files_to}
            if self.peak_report is not None:
                self.proc = peak.start(cmd, self.peak_report, **options)
            else:
                self.proc = subprocess.Popen(cmd, **options)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def peak_kib(self) -> int:
        """Its own peak (VmHWM as it exited), in KiB."""
        if self.peak_report is None or not self.reap(block=False):
            raise Failed(f"{self.name}: its peak is measured only once it has exited")
        try:
            return peak.reported_kib(self.peak_report)
        except peak.NoPeak as exc:
            raise Failed(f"{self.name}: {exc}") from None

    @property
    def running(self) -> bool:
        return self.exit_code is None and not self.reap(block=False)

    def reap(self, *, block: bool) -> bool:
        """Collect the exit status if the process has ended; True once it has."""
        if self.exit_code is not None:
            return True
        if self.proc.returncode is not None:  # Popen reaped it (relay.wait_healthy's poll)
            self.exit_code, self.ended = self.proc.returncode, now()
            return True
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.exit_code, self.ended = -1, now()
            return True
        if pid == 0:
            return False
        self.ended = now()
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.exit_code  # so Popen never waits for it again
        return True

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.running:
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not self.reap(block=False):
                time.sleep(0.01)
            if self.exit_code is None:
                self.signal(signal.SIGKILL)
                self.reap(block=True)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def write_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def read_line(self, timeout: float) -> str:
        """The next line on the stdout pipe (unbuffered reads, so nothing is lost)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"{self.name}: no line on stdout in {timeout:.0f} s")
                if sel.select(left):
                    data = os.read(self.proc.stdout.fileno(), 65536)
                    if not data:
                        self.reap(block=True)
                        raise Failed(f"{self.name} exited with {self.exit_code}, no line")
                    self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def report(self) -> str:
        lines = [f"--- {self.name} (exit {self.exit_code}): {' '.join(self.cmd)}"]
        if self.stdout_path is not None:
            lines.append(f"stdout tail:\n{relay.tail(self.stdout_path, 5)}")
        lines.append(f"stderr tail:\n{relay.tail(self.log, 25)}")
        return "\n".join(lines)


class Group:
    """Every process of one run; ``stop_all`` ends whichever are still running."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, name: str, cmd: list[str], log: Path, **kwargs: Any) -> Child:
        child = Child(name, cmd, log, **kwargs)
        self.children.append(child)
        return child

    def wait_exit(self, children: list[Child], timeout: float) -> None:
        """Until every one of ``children`` has exited 0; Failed as soon as one exits otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            ended = [c.reap(block=False) for c in children]
            failed = [c for c in children if c.exit_code not in (None, 0)]
            if failed:
                raise Failed(", ".join(f"{c.name} exited with {c.exit_code}" for c in failed))
            if all(ended):
                return
            if time.monotonic() > deadline:
                raise Failed(f"still running after {timeout:.0f} s")
            time.sleep(0.002)

    def fail(self, what: str, exc: Exception) -> Failed:
        return Failed(f"{what}: {exc}\n" + "\n".join(c.report() for c in self.children))

    def stop_all(self) -> None:
        for child in self.children:
            if child.running:
                child.signal(signal.SIGTERM)
        for child in self.children:
            child.stop()
        self.children.clear()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    env.update(extra)
    return env


def udp_receive_drops() -> int:
    """UDP datagrams this network namespace dropped for want of socket buffer space
    (``RcvbufErrors`` in /proc/net/snmp): each is an SCTP packet aiortc must retransmit."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = [line for line in lines if line[0] == "Udp:"][:2]
    return int(values[names.index("RcvbufErrors")])


def wait_joined(port: int, receiver: Child, timeout: float = 60) -> None:
    """Until the server's ``roomdrop_rooms`` metric shows a room with a participant."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not receiver.running:
            raise Failed(f"receiver exited with {receiver.exit_code} before joining")
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", "/metrics")
            for line in conn.getresponse().read().decode().splitlines():
                if line.startswith("roomdrop_rooms ") and float(line.split()[1]) >= 1:
                    return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    raise Failed(f"receiver did not join the room in {timeout:.0f} s")


# --- the runs ----------------------------------------------------------------------------


@dataclass
class Run:
    transfer_s: float
    whole_s: float
    sender_kib: int
    receiver_kib: int
    server_kib: int = 0
    udp_drops: int = 0


@dataclass
class Series:
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

    def peak(self, attr: str) -> int:
        return max(getattr(r, attr) for r in self.runs)


@dataclass
class Bench:
    tmp: Path
    secret: str
    timeout: float
    wormhole_venv: Path | None = None
    digests: dict[Path, str] = field(default_factory=dict)
    count: int = 0

    def digest(self, path: Path) -> str:
        if path not in self.digests:
            self.digests[path] = relay.file_sha256(path)
        return self.digests[path]

    def run(self, key: str, source: Path) -> Run:
        self.count += 1
        workdir = self.tmp / f"run-{self.count}-{key}"
        workdir.mkdir()
        group = Group()
        drops = udp_receive_drops()
        try:
            if key == "bare-dc":
                run = self.bare_dc(group, source, workdir)
            elif key == "bare-ws":
                run = self.bare_ws(group, source, workdir)
            elif key == "wormhole":
                run = self.wormhole(group, source, workdir)
            else:
                run = self.roomdrop(group, key, source, workdir)
            run.udp_drops = udp_receive_drops() - drops
            return run
        except Failed as exc:
            raise group.fail(f"{LABELS[key]} run {self.count} ({workdir.name})", exc) from None
        finally:
            group.stop_all()
            for received in workdir.rglob("*"):  # keep the temp dir small between runs
                if received.is_file() and received.stat().st_size > MIB:
                    received.unlink()

    def check_copy(self, source: Path, dest: Path) -> None:
        if not dest.is_file():
            raise Failed(f"no received file at {dest}")
        size = dest.stat().st_size
        if size != source.stat().st_size or relay.file_sha256(dest) != self.digest(source):
            raise Failed(f"{dest.name} differs from the source")

    def bare_dc(self, group: Group, source: Path, workdir: Path) -> Run:
        size, dest = source.stat().st_size, workdir / "received.bin"
        py = [sys.executable, str(BARE_DC)]
        receiver = group.start(
            "receiver",
            [*py, "receive", str(dest), str(size)],
            workdir / "receiver.log",
            stdin=True,
        )
        if json.loads(receiver.read_line(60)) != {"ready": True}:
            raise Failed("receiver did not say it was ready")
        start = now()
        sender = group.start(
            "sender", [*py, "send", str(source)], workdir / "sender.log", stdin=True
        )
        receiver.write_line(sender.read_line(60))  # the offer
        sender.write_line(receiver.read_line(60))  # the answer
        group.wait_exit([sender, receiver], self.timeout)
        sent, received = json.loads(sender.read_line(5)), json.loads(receiver.read_line(5))
        if received["bytes"] != size:
            raise Failed(f"receiver wrote {received['bytes']} bytes of {size}")
        self.check_copy(source, dest)
        return Run(
            received["end"] - sent["open"],
            max(sender.ended, receiver.ended) - start,
            sender.peak_kib,
            receiver.peak_kib,
        )

    def wormhole(self, group: Group, source: Path, workdir: Path) -> Run:
        assert self.wormhole_venv is not None
        try:
            got = wormhole.run(
                group, self.wormhole_venv, source, workdir, self.timeout, now, relay.free_port
            )
        except RuntimeError as exc:
            raise Failed(str(exc)) from None
        self.check_copy(source, Path(got["dest"]))
        run = Run(math.nan, got["whole_s"], got["sender_kib"], got["receiver_kib"])
        run.server_kib = got["server_kib"]
        return run

    def start_server(
        self, group: Group, cmd: list[str], workdir: Path, env: dict[str, str]
    ) -> Child:
        port = int(cmd[cmd.index("--port") + 1])
        log = workdir / "server.log"
        out = workdir / "server.out"  # its peak: from /proc while it runs (server_peak)
        server = group.start("server", cmd, log, env=env, stdout=out, measured=False)
        relay.wait_healthy(port, server.proc, log)
        return server

    def server_peak(self, server: Child) -> int:
        if not server.running:
            raise Failed(f"server exited with {server.exit_code} during the run")
        return relay.vm_hwm_kib(server.pid)

    def bare_ws(self, group: Group, source: Path, workdir: Path) -> Run:
        from roomdrop.server.run import MAX_WS_MESSAGE

        size, dest = source.stat().st_size, workdir / "received.bin"
        port = relay.free_port()
        server_cmd = [sys.executable, str(relay.BARE_SERVER), "--host", HOST, "--port", str(port)]
        server_cmd += ["--ws-max-size", str(MAX_WS_MESSAGE)]
        server = self.start_server(group, server_cmd, workdir, clean_env())

        def child(role: str, url: str, path: Path) -> list[str]:
            spec = {"role": role, "url": url, "path": str(path), "size": size}
            return [sys.executable, str(RELAY_BENCH), "--child", json.dumps(spec)]

        base = f"ws://{HOST}:{port}/ws"
        receiver = group.start(
            "receiver", child("bare-receive", f"{base}/receiver", dest), workdir / "receiver.log"
        )
        if receiver.read_line(60) != "ready":
            raise Failed("receiver did not say it was ready")
        start = now()
        sender = group.start(
            "sender", child("bare-send", f"{base}/sender", source), workdir / "sender.log"
        )
        group.wait_exit([sender, receiver], self.timeout)
        server_kib = self.server_peak(server)
        sent, received = json.loads(sender.read_line(5)), json.loads(receiver.read_line(5))
        if received["bytes"] != size or received["sha256"] != self.digest(source):
            raise Failed("the bare relay's receiver got something else than the source")
        return Run(
            received["end"] - sent["start"],
            max(sender.ended, receiver.ended) - start,
            sender.peak_kib,
            receiver.peak_kib,
            server_kib,
        )

    def roomdrop(self, group: Group, transport: str, source: Path, workdir: Path) -> Run:
        from roomdrop.server.auth import TokenAuthority

        size = source.stat().st_size
        port = relay.free_port()
        data_dir, out_dir = workdir / "data", workdir / "out"
        out_dir.mkdir()
        server_env = clean_env(
            ROOMDROP_SECRET=self.secret, ROOMDROP_MAX_FILE_SIZE=str(max(size, 500 * MIB))
        )
        serve = ["serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)]
        server = self.start_server(group, [*ROOMDROP, *serve], workdir, server_env)
        authority = TokenAuthority(self.secret)
        url = f"http://{HOST}:{port}"
        common = ["--server", url, "--room", ROOM]
        env = clean_env(ROOMDROP_ICE_HOSTS=HOST)
        receive = [*ROOMDROP, "receive", *common, "--token", authority.issue(RECEIVER, 3600)]
        receive += ["--out", str(out_dir), "--yes", "--count", "1", "--json"]
        send = [*ROOMDROP, "send", str(source), *common, "--to", RECEIVER]
        send += ["--token", authority.issue(SENDER, 3600), "--transport", transport, "--json"]
        receiver = group.start(
            "receiver", receive, workdir / "receiver.log", env=env, stdout=workdir / "receiver.out"
        )
        wait_joined(port, receiver)
        start = now()
        sender = group.start(
            "sender", send, workdir / "sender.log", env=env, stdout=workdir / "sender.out"
        )
        group.wait_exit([sender, receiver], self.timeout)
        server_kib = self.server_peak(server)
        results = {}
        for child in (sender, receiver):
            result = self.result_line(child, transport, source)
            results[child.name] = result
        elapsed = float(results["receiver"]["elapsed_s"])
        received = [p for p in out_dir.rglob("*") if p.is_file()]
        if len(received) != 1:
            raise Failed(f"expected one file in --out, found {[str(p) for p in received]}")
        saved = results["receiver"].get("saved_path")
        if saved is not None and Path(saved) != received[0]:
            raise Failed(f"the receiver says it saved {saved}, but --out holds {received[0]}")
        self.check_copy(source, received[0])
        leftovers = list((data_dir / "relay").glob("*"))
        if leftovers:
            print(f"warning: relay staging left behind in {workdir.name}: {leftovers}")
        server_log = (workdir / "server.log").read_text(errors="replace")
        if '"level": "error"' in server_log or "Traceback" in server_log:
            print(f"warning: the server logged errors in {workdir.name}:", file=sys.stderr)
            print(relay.tail(workdir / "server.log"), file=sys.stderr)
        for child in (sender, receiver):  # the commands print nothing there when all is well
            if child.log.stat().st_size:
                print(f"warning: {child.name} in {workdir.name} wrote to stderr:", file=sys.stderr)
                print(relay.tail(child.log), file=sys.stderr)
        return Run(
            elapsed,
            max(sender.ended, receiver.ended) - start,
            sender.peak_kib,
            receiver.peak_kib,
            server_kib,
        )

    def result_line(self, child: Child, transport: str, source: Path) -> dict[str, Any]:
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
        if result.get("status") != "completed":
            problems.append(f"status {result.get('status')!r}")
        if result.get("transport") != transport:
            problems.append(f"transport {result.get('transport')!r}, asked for {transport!r}")
        if result.get("sha256") != self.digest(source):
            problems.append(f"sha256 {result.get('sha256')!r}")
        if result.get("bytes_transferred") != source.stat().st_size:
            problems.append(f"bytes_transferred {result.get('bytes_transferred')!r}")
        if problems:
            raise Failed(f"{child.name}'s result: {', '.join(problems)}: {result}")
        return result


# --- main: the runs and the table --------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}" if kib else "-"


def flat(full: int, quarter: int) -> bool:
    return full <= quarter * FLAT + FLAT_SLACK_KIB


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def print_table(
    series: list[Series],
    args: argparse.Namespace,
    size: int,
    quarter_mb: int,
    load: str,
    wormhole_note: str,
) -> None:
    print(
        f"roomdrop commands benchmark: {args.size_mb} MiB file ({size:,} bytes) and "
        f"{quarter_mb} MiB, median of {args.repeat} run(s) per path, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPU(s), load average {load} at the start, "
        f"{load_average()} at the end"
    )
    print(
        "transfer: bare data channel open -> last byte written; bare ws relay first message "
        "-> last byte written; roomdrop: the receiver's elapsed_s (accept -> verified end)"
    )
    print(
        "whole: launching the sender (receiver already waiting) -> both processes exited; "
        "MB = 10^6 bytes; x base: against the same kind of figure of the baseline"
    )
    print(
        "peak memory: each process's own VmHWM (bench/peak.py), highest over the runs; "
        "every run fresh processes on 127.0.0.1"
    )
    print(
        "roomdrop commands (ROOMDROP_ICE_HOSTS=127.0.0.1): receive --server URL --room bench "
        "--token T --out DIR --yes --count 1 --json; send FILE --server URL --room bench "
        "--to bob --token T --transport p2p|relay --json"
    )
    print(f"magic-wormhole: {wormhole_note}")
    print()
    print(f"{'':<27}{'transfer':^16} {'whole command':^16}  {'peak memory (MiB)':^26}")
    print(
        f"{'path':<17} {'file':>8} {'MB/s':>8} {'x base':>7} {'MB/s':>8} {'x base':>7}  "
        f"{'sender':>8} {'receiver':>8} {'server':>8}"
    )
    by_key = {(s.key, s.size): s for s in series}
    for s in series:
        base = by_key.get((BASELINE.get(s.key, s.key), size))
        ratios = ("", "")
        if base is not None and s.size == size:
            ratios = (
                "-" if s.key == "wormhole" else f"{s.transfer_rate / base.transfer_rate:.2f}x",
                f"{s.whole_rate / base.whole_rate:.2f}x",
            )
        print(
            f"{s.label:<17} {s.size // MIB:>4} MiB {rate(s.transfer_rate):>8} {ratios[0]:>7} "
            f"{s.whole_rate:>8.1f} {ratios[1]:>7}  {mib(s.peak('sender_kib')):>8} "
            f"{mib(s.peak('receiver_kib')):>8} {mib(s.peak('server_kib')):>8}"
        )
    print()
    print("seconds per run: transfer / whole (UDP datagrams dropped by a full socket buffer)")
    for s in series:
        runs = "  ".join(
            f"{'-' if math.isnan(r.transfer_s) else f'{r.transfer_s:.2f}'}/{r.whole_s:.2f} "
            f"({r.udp_drops})"
            for r in s.runs
        )
        print(f"  {s.label:<17} {s.size // MIB:>4} MiB  {runs}")
    print()
    goals = (
        ("p2p", GOAL_P2P, "transfer phase", "transfer_rate"),
        ("relay", GOAL_RELAY, "whole command", "whole_rate"),
    )
    for key, goal, what, attr in goals:
        mine, base = by_key.get((key, size)), by_key.get((BASELINE[key], size))
        if mine is None or base is None:
            continue
        ratio = getattr(mine, attr) / getattr(base, attr)
        verdict = "met" if ratio >= goal else "NOT met"
        print(
            f"goal {mine.label} {what} >= {goal} x {base.label}: {getattr(mine, attr):.1f} / "
            f"{getattr(base, attr):.1f} MB/s = {ratio:.3f}x ({verdict})"
        )
        if key == "relay":  # the stricter goal: against the bare relay's transfer alone
            strict = mine.whole_rate / base.transfer_rate
            verdict = "met" if strict >= GOAL_RELAY else "NOT met"
            print(
                f"goal {mine.label} whole command >= {GOAL_RELAY} x {base.label} transfer "
                f"phase: {mine.whole_rate:.1f} / {base.transfer_rate:.1f} MB/s = {strict:.3f}x "
                f"({verdict})"
            )
    mine, theirs = by_key.get(("relay", size)), by_key.get(("wormhole", size))
    if mine is not None and theirs is not None:
        ratio = mine.whole_rate / theirs.whole_rate
        verdict = "met" if ratio >= GOAL_WORMHOLE else "NOT met"
        print(
            f"goal {mine.label} whole command >= {GOAL_WORMHOLE} x {theirs.label} whole "
            f"command: {mine.whole_rate:.1f} / {theirs.whole_rate:.1f} MB/s = {ratio:.3f}x "
            f"({verdict})"
        )
    elif "wormhole" not in [s.key for s in series]:
        print(
            f"goal roomdrop relay whole command >= {GOAL_WORMHOLE} x magic-wormhole: not "
            "measured, the magic-wormhole row was skipped"
        )
    for key in ("p2p", "relay"):
        base = by_key.get((BASELINE[key], size))
        rows = [s for s in series if s.key == key]
        if base is not None and rows:
            print(relay.memory_ratios(rows, base, PEAKS))
    if theirs is not None and mine is not None:
        print(relay.memory_ratios([mine], theirs, PEAKS) + " (its server: mailbox + transit)")
    slack = FLAT_SLACK_KIB // 1024
    for key in ("p2p", "relay"):
        full, small = by_key.get((key, size)), by_key.get((key, quarter_mb * MIB))
        if full is None or small is None or small.size == full.size:
            continue
        parts = []
        for attr in ("sender_kib", "receiver_kib", "server_kib"):
            big, little = full.peak(attr), small.peak(attr)
            verdict = "flat" if flat(big, little) else "GROWS"
            parts.append(f"{attr.split('_')[0]} {mib(little)} -> {mib(big)} MiB {verdict}")
        print(
            f"memory {full.label} ({quarter_mb} -> {args.size_mb} MiB; flat: <= {FLAT:.2f} x "
            f"+ {slack} MiB): " + "; ".join(parts)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (median)")
    parser.add_argument(
        "--only",
        default=",".join(PATHS),
        help=f"comma-separated paths to run, of {', '.join(PATHS)} (default: all)",
    )
    parser.add_argument(
        "--wormhole-venv",
        type=Path,
        metavar="DIR",
        help="the venv magic-wormhole and its servers are installed into (and kept; "
        "default: one in the temp dir, installed from PyPI at every run)",
    )
    parser.add_argument(
        "--no-wormhole",
        action="store_true",
        help="leave the magic-wormhole row out (no install; the output says it was skipped)",
    )
    args = parser.parse_args()
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")
    if not keys or any(k not in PATHS for k in keys):
        parser.error(f"--only takes paths among {', '.join(PATHS)}")

    wormhole_note = "skipped (--no-wormhole)" if args.no_wormhole else "not in --only"
    if args.no_wormhole and "wormhole" in keys:
        keys.remove("wormhole")
    load = load_average()
    quarter_mb = max(1, args.size_mb // 4)
    size, quarter = args.size_mb * MIB, quarter_mb * MIB
    series = [Series(k, size) for k in PATHS if k in keys]
    series += [Series(k, quarter) for k in ("p2p", "relay") if k in keys and quarter < size]
    with (
        relay.sigterm_as_exit(),
        tempfile.TemporaryDirectory(prefix="roomdrop-commands-bench-") as tmp,
    ):
        files = {size: Path(tmp) / "source.bin", quarter: Path(tmp) / "quarter.bin"}
        relay.make_random_file(files[size], args.size_mb)
        if quarter < size:
            relay.make_random_file(files[quarter], quarter_mb)
        bench = Bench(Path(tmp), secrets.token_urlsafe(32), max(180.0, 3.0 * args.size_mb))
        if "wormhole" in keys:
            bench.wormhole_venv = (args.wormhole_venv or Path(tmp) / "wormhole-venv").resolve()
            try:
                wormhole_note = wormhole.ensure(bench.wormhole_venv)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                raise SystemExit(f"benchmark failed: magic-wormhole: {exc}") from None
        try:
            for _ in range(args.repeat):
                for s in series:  # interleaved, so drift touches every path alike
                    s.runs.append(bench.run(s.key, files[s.size]))
        except Failed as exc:
            raise SystemExit(f"benchmark failed: {exc}") from None
    print_table(series, args, size, quarter_mb, load, wormhole_note)


if __name__ == "__main__":
    main()
