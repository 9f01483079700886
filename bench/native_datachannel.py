"""Evaluation: a native data channel (aiolibdatachannel: libdatachannel's SCTP in C++, Python
3.12+) against aiortc's pure-Python one, two processes, and the two talking to each other.

    .venv/bin/python bench/native_datachannel.py [--size-mb 32] [--repeat 3]
        [--profiles loopback,1gbit,100mbit,unshaped] [--chromium-mb 8 | --no-chromium]

Run it as root in a loopback-only namespace of its own (the link profiles make their
namespaces inside it): ``unshare --net --mount sh -c 'ip link set lo up && .venv/bin/python
bench/native_datachannel.py'``. No roomdrop code and no server: the parent passes each
side's session description (one JSON line, candidates included) between the two
processes' pipes.

Implementations, each a fresh process of this file in child mode (``child IMPL ROLE
ADDRESS PATH [SIZE]``) under bench/peak.py, with uvloop:

* ``aiortc``: aiortc 1.16 in ``.venv`` (Python 3.11, ``--aiortc-python``), ICE pinned to
  the side's address (``aioice.ice.get_host_addresses`` replaced, as bench/bare_datachannel.py
  does), no ICE servers.
* ``ldc``: aiolibdatachannel in ``.venv-ldc`` (Python 3.12, ``--ldc-python``). Its
  configuration has no bind address and no interface filter (ice_servers, a port range,
  mtu, max_message_size, enable_ice_tcp, ... only); libjuice never offers loopback, so in a
  loopback-only namespace it gathers no candidate at all. So: its port range is one free
  UDP port, and its session description's candidates are replaced by one host candidate,
  the side's address and that port. On the link profiles the side's address is its veth
  address (which libjuice would have gathered itself; nothing else is there).

Pairs (sender -> receiver): aiortc -> aiortc (the baseline), ldc -> ldc, aiortc -> ldc,
ldc -> aiortc. The sender offers and opens one reliable, ordered channel and sends the file
in 64 KiB messages (65,536 bytes of data each, no header: both ends accept 65,536);
flow control: after a send that leaves more than 1 MiB buffered (``bufferedAmount``), it
waits until the amount has fallen to the 512 KiB low threshold (aiortc:
``bufferedamountlow``; aiolibdatachannel: its ``buffered_amount`` and the event its
``buffered_amount_low`` callback sets, ``DataChannel._buffered_low_event``: the public
``send(wait_for_drain=True)`` waits on that same event but clears it after any send that
leaves anything buffered, so with a threshold above 0 it can wait for a crossing that never
comes). The receiver writes each message to a file; at the last byte it notes the time and
sends ``done``; the sender then closes. Every received file is checked against the source
(size and sha256). The libdatachannel receiver awaits ``recv()`` in a loop and never stalls:
aiolibdatachannel's receive queue holds 1,024 messages and, when full, silently drops the
oldest (measured: 2,000 messages sent to a channel nobody read for 3 s, 1,024 read, the
first 976 lost), so a slow reader loses data on a reliable channel.

Profiles: ``loopback``: both processes in this namespace on 127.0.0.1; ``1gbit``,
``100mbit``, ``unshaped``: bench/links.py's ``Link`` (two namespaces joined by a veth pair,
10.77.0.1 / 10.77.0.2, tc tbf on both ends; no netem in this kernel), the sender on one side,
the receiver on the other.

Chromium (``--chromium-mb``, loopback only, after the rest): headless /usr/bin/chromium
through playwright (tests/browser/pagetools.py's flags) on http://127.0.0.1/ (answered
by playwright's route, so no server; a secure context, for crypto.subtle), with one
RTCPeerConnection, against a child of each implementation, both ways: page -> child (the
page offers and sends generated random data, 64 KiB messages, same flow control) and
child -> page (the child offers and sends the source file). Interop check: the received
bytes' sha256 equals the sent bytes'. Its time: the sender's, open -> ``done`` received.

Transfer: the channel's open event at the sender -> the last byte written at the receiver
(system-wide monotonic clock). Whole: launching the sender (receiver ready) -> both exited.
MB/s = size / median time, MB = 10^6 bytes; ``x aiortc``: against the same profile's
aiortc -> aiortc. CPU seconds (median): each process's whole life (``os.wait4``: imports,
start-up and shutdown included). Peak memory: each process's own VmHWM (bench/peak.py), the
highest over the runs. UDP drops: datagrams the namespace(s) dropped for a full socket buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 64 * 1024
HIGH = 1024 * 1024  # wait once more than this is buffered ...
LOW = 512 * 1024  # ... until it has fallen to this
TIMEOUT = 600.0
MIB = 1024 * 1024
MB = 1_000_000
HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
IMPLS = ("aiortc", "ldc")
NAMES = {"aiortc": "aiortc", "ldc": "libdatachannel"}
PAIRS = (("aiortc", "aiortc"), ("ldc", "ldc"), ("aiortc", "ldc"), ("ldc", "aiortc"))
PROFILES = ("loopback", "1gbit", "100mbit", "unshaped")
GOAL = 2.0  # the criterion: libdatachannel -> libdatachannel >= 2 x aiortc -> aiortc


def now() -> float:
    """System-wide monotonic clock, comparable between processes on one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# --- child mode: one peer, either implementation ------------------------------------------


async def read_json() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise RuntimeError("stdin closed before a session description came")
    return json.loads(line)


def free_udp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def pin_candidate(sdp: str, address: str, port: int) -> str:
    """``sdp`` with its candidates replaced by one host candidate ``address:port``."""
    lines = [ln for ln in sdp.splitlines() if ln and not ln.startswith("a=candidate:")]
    cand = f"a=candidate:1 1 UDP 2122317823 {address} {port} typ host"
    if "a=end-of-candidates" in lines:
        lines.insert(lines.index("a=end-of-candidates"), cand)
    else:
        lines += [cand, "a=end-of-candidates"]
    return "\r\n".join(lines) + "\r\n"


class AiortcPeer:
    def __init__(self, address: str) -> None:
        import aioice.ice
        from aiortc import RTCConfiguration, RTCPeerConnection

        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [address]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.loop = asyncio.get_running_loop()
        self.incoming: asyncio.Future[Any] = self.loop.create_future()
        self.pc.on("datachannel", lambda ch: self.incoming.done() or self.incoming.set_result(ch))

    def description(self) -> dict[str, str]:
        desc = self.pc.localDescription
        return {"type": desc.type, "sdp": desc.sdp}

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.description()

    async def answer(self, offer: dict[str, str]) -> dict[str, str]:
        await self.remote(offer)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.description()

    async def remote(self, desc: dict[str, str]) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(desc["sdp"], desc["type"]))

    def channel(self) -> Any:
        return self.pc.createDataChannel("bench")

    async def send_file(self, channel: Any, source: Path) -> tuple[float, float]:
        opened: asyncio.Future[float] = self.loop.create_future()
        done: asyncio.Future[float] = self.loop.create_future()
        low = asyncio.Event()
        channel.bufferedAmountLowThreshold = LOW
        channel.on("open", lambda: opened.done() or opened.set_result(now()))
        channel.on("bufferedamountlow", low.set)
        channel.on("message", lambda m: done.done() or done.set_result(now()))
        start = await asyncio.wait_for(opened, 60)
        with source.open("rb") as f:
            while block := f.read(BLOCK):
                channel.send(block)
                if channel.bufferedAmount > HIGH:
                    low.clear()
                    await asyncio.wait_for(low.wait(), TIMEOUT)
        return start, await asyncio.wait_for(done, TIMEOUT)

    async def receive_file(self, dest: Path, size: int) -> float:
        channel = await asyncio.wait_for(self.incoming, 60)
        finished: asyncio.Future[float] = self.loop.create_future()
        closed = asyncio.Event()
        channel.on("close", closed.set)
        self.pc.on("connectionstatechange", lambda: closed.set())
        got = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

        def on_message(message: bytes | str) -> None:
            nonlocal got
            assert isinstance(message, bytes)
            got += os.write(fd, message)
            if got >= size and not finished.done():
                finished.set_result(now())
                channel.send(b"done")

        channel.on("message", on_message)
        try:
            end = await asyncio.wait_for(finished, TIMEOUT)
            await asyncio.wait_for(closed.wait(), 10)  # the sender closes on "done"
        finally:
            os.close(fd)
        return end

    async def close(self) -> None:
        await self.pc.close()


class LdcPeer:
    def __init__(self, address: str) -> None:
        from aiolibdatachannel import PeerConnection, RTCConfiguration

        self.address, self.port = address, free_udp_port(address)
        self.pc = PeerConnection(
            RTCConfiguration(port_range_begin=self.port, port_range_end=self.port)
        )

    def pinned(self, desc: Any) -> dict[str, str]:
        return {"type": desc.type, "sdp": pin_candidate(desc.sdp, self.address, self.port)}

    async def offer(self) -> dict[str, str]:
        return self.pinned(await self.pc.create_offer())

    async def answer(self, offer: dict[str, str]) -> dict[str, str]:
        await self.remote(offer)
        return self.pinned(await self.pc.create_answer())

    async def remote(self, desc: dict[str, str]) -> None:
        await self.pc.set_remote_description(desc["sdp"], desc["type"])

    async def channel(self) -> Any:
        return await self.pc.create_data_channel("bench")

    async def send_file(self, channel: Any, source: Path) -> tuple[float, float]:
        channel.set_buffered_amount_low_threshold(LOW)
        low = channel._buffered_low_event  # set by the buffered_amount_low callback
        await asyncio.wait_for(channel.wait_open(), 60)
        start = now()
        with source.open("rb") as f:
            while block := f.read(BLOCK):
                await channel.send(block, wait_for_drain=False)
                if channel.buffered_amount > HIGH:
                    while channel.buffered_amount > LOW:  # the callback fires on the crossing
                        low.clear()
                        await asyncio.wait_for(low.wait(), TIMEOUT)
        await asyncio.wait_for(channel.recv(), TIMEOUT)  # "done"
        return start, now()

    async def receive_file(self, dest: Path, size: int) -> float:
        channel = await asyncio.wait_for(self.pc.accept_data_channel(), 60)
        got = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while got < size:
                message = await asyncio.wait_for(channel.recv(), TIMEOUT)
                assert isinstance(message, bytes)
                got += os.write(fd, message)
            end = now()
            await channel.send(b"done")
            await asyncio.wait_for(channel.wait_closed(), 10)  # the sender closes on "done"
        finally:
            os.close(fd)
        return end

    async def close(self) -> None:
        await self.pc.aclose()


async def child(impl: str, role: str, address: str, path: Path, size: int) -> dict[str, Any]:
    peer = AiortcPeer(address) if impl == "aiortc" else LdcPeer(address)
    try:
        if role == "send":
            channel = peer.channel()
            if asyncio.iscoroutine(channel):
                channel = await channel
            emit(await peer.offer())
            await peer.remote(await read_json())
            start, done = await peer.send_file(channel, path)
            return {"open": start, "done": done}
        emit({"ready": True})
        emit(await peer.answer(await read_json()))
        return {"end": await peer.receive_file(path, size), "bytes": path.stat().st_size}
    finally:
        await peer.close()


def child_main(argv: list[str]) -> None:
    impl, role, address, path = argv[0], argv[1], argv[2], Path(argv[3])
    size = int(argv[4]) if len(argv) > 4 else 0
    try:
        import uvloop

        result = uvloop.run(child(impl, role, address, path, size))
    except ImportError:
        result = asyncio.run(child(impl, role, address, path, size))
    emit(result)


# --- the parent: runs, table ---------------------------------------------------------------

sys.path.insert(0, str(HERE.parent))


@dataclass
class Run:
    transfer_s: float
    whole_s: float
    cpu_s: dict[str, float]
    peak_kib: dict[str, int]
    drops: int


@dataclass
class Series:
    profile: str
    pair: tuple[str, str]
    size: int
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{NAMES[self.pair[0]]} -> {NAMES[self.pair[1]]}"

    def rate(self, attr: str = "transfer_s") -> float:
        return self.size / MB / statistics.median(getattr(r, attr) for r in self.runs)

    def cpu(self, role: str) -> float:
        return statistics.median(r.cpu_s.get(role, math.nan) for r in self.runs)

    def peak(self, role: str) -> int:
        return max(r.peak_kib.get(role, 0) for r in self.runs)


class Runner:
    def __init__(self, tmp: Path, pythons: dict[str, str], source: Path) -> None:
        import relay

        self.tmp, self.pythons, self.source = tmp, pythons, source
        self.digest = relay.file_sha256(source)
        self.count = 0
        self.link: Any = None

    def start(self, name: str, impl: str, args: list[str], workdir: Path, side: Any) -> Any:
        import commands
        import peak

        report = workdir / f"{name}.peak"
        cmd = [self.pythons[impl], peak.HERE, str(report), str(HERE), "child", impl, *args]
        if side is None:
            child = commands.Child(name, cmd, workdir / f"{name}.log", stdin=True, measured=False)
        else:
            with side.entered():
                child = commands.Child(
                    name, cmd, workdir / f"{name}.log", stdin=True, measured=False
                )
        child.peak_file = report
        return child

    def drops(self) -> int:
        import commands

        if self.link is None:
            return commands.udp_receive_drops()
        total = 0
        for side in self.link.sides:
            with side.entered():
                total += commands.udp_receive_drops()
        return total

    def wait_exit(self, children: list[Any], cpu: dict[str, float], timeout: float) -> None:
        import relay

        deadline = time.monotonic() + timeout
        while not all(c.exit_code is not None for c in children):
            for c in children:
                if c.exit_code is None:
                    pid, status, usage = os.wait4(c.pid, os.WNOHANG)
                    if pid:
                        c.ended = now()
                        c.exit_code = c.proc.returncode = os.waitstatus_to_exitcode(status)
                        cpu[c.name] = usage.ru_utime + usage.ru_stime
            failed = [c for c in children if c.exit_code not in (None, 0)]
            if failed:
                raise relay.Failed(", ".join(f"{c.name} exited {c.exit_code}" for c in failed))
            if time.monotonic() > deadline:
                raise relay.Failed(f"still running after {timeout:.0f} s")
            time.sleep(0.002)

    def measure(self, pair: tuple[str, str], addresses: tuple[str, str]) -> Run:
        import peak
        import relay

        self.count += 1
        workdir = self.tmp / f"run-{self.count}-{pair[0]}-{pair[1]}"
        workdir.mkdir()
        dest, size = workdir / "received.bin", self.source.stat().st_size
        sides = (None, None) if self.link is None else (self.link.sender, self.link.receiver)
        children: list[Any] = []
        cpu: dict[str, float] = {}
        drops = self.drops()
        try:
            receiver = self.start(
                "receiver", pair[1], ["receive", addresses[1], str(dest), str(size)], workdir,
                sides[1],
            )  # fmt: skip
            children.append(receiver)
            if json.loads(receiver.read_line(60)) != {"ready": True}:
                raise relay.Failed("receiver did not say it was ready")
            start = now()
            sender = self.start(
                "sender", pair[0], ["send", addresses[0], str(self.source)], workdir, sides[0]
            )
            children.append(sender)
            receiver.write_line(sender.read_line(60))  # the offer
            sender.write_line(receiver.read_line(60))  # the answer
            self.wait_exit(children, cpu, TIMEOUT)
            sent, got = json.loads(sender.read_line(5)), json.loads(receiver.read_line(5))
            if got["bytes"] != size or relay.file_sha256(dest) != self.digest:
                raise relay.Failed(f"received {got['bytes']} bytes, not the source's {size}")
            peaks = {c.name: peak.reported_kib(c.peak_file) for c in children}
            end = max(sender.ended, receiver.ended)
            return Run(got["end"] - sent["open"], end - start, cpu, peaks, self.drops() - drops)
        except (relay.Failed, peak.NoPeak, ValueError, KeyError) as exc:
            reports = "\n".join(c.report() for c in children)
            raise SystemExit(f"{pair} run {self.count} failed: {exc}\n{reports}") from None
        finally:
            for c in children:
                c.stop()
            dest.unlink(missing_ok=True)


# --- Chromium ------------------------------------------------------------------------------

ORIGIN = "http://127.0.0.1/"  # never reached: the page's route answers it
BLANK = "<!doctype html><title>native data channel</title>"
PAGE_JS = """
async ({role, size, offer}) => {
  const BLOCK = 65536, HIGH = 1048576, LOW = 524288;
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  const gathered = () => new Promise((ok) => {
    if (pc.iceGatheringState === "complete") return ok();
    pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && ok());
  });
  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
  if (role === "send") {
    const ch = pc.createDataChannel("bench");
    ch.binaryType = "arraybuffer";
    ch.bufferedAmountLowThreshold = LOW;
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
    window.sent = hex(await crypto.subtle.digest("SHA-256", data));
    window.result = new Promise((resolve, reject) => {
      ch.onerror = (e) => reject(String(e.error || e));
      ch.onopen = async () => {
        const start = performance.now();
        const done = new Promise((ok) => { ch.onmessage = () => ok(performance.now()); });
        for (let off = 0; off < size; off += BLOCK) {
          ch.send(data.subarray(off, Math.min(off + BLOCK, size)));
          if (ch.bufferedAmount > HIGH)
            await new Promise((ok) => { ch.onbufferedamountlow = ok; });
        }
        const end = await done;
        resolve({seconds: (end - start) / 1000, sha256: window.sent});
        setTimeout(() => pc.close(), 100);
      };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered();
    return {type: pc.localDescription.type, sdp: pc.localDescription.sdp};
  }
  window.result = new Promise((resolve) => {
    pc.ondatachannel = ({channel: ch}) => {
      ch.binaryType = "arraybuffer";
      const parts = [];
      let got = 0;
      ch.onmessage = async ({data}) => {
        parts.push(data);
        got += data.byteLength;
        if (got >= size) {
          ch.send("done");
          const whole = await new Blob(parts).arrayBuffer();
          resolve({bytes: got, sha256: hex(await crypto.subtle.digest("SHA-256", whole))});
        }
      };
    };
  });
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered();
  return {type: pc.localDescription.type, sdp: pc.localDescription.sdp};
}
"""


async def chromium_rows(runner: Runner, size_mb: int) -> list[str]:
    from playwright.async_api import async_playwright

    import relay

    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    size = size_mb * MIB
    source = runner.tmp / "chromium-source.bin"
    relay.make_random_file(source, size_mb)
    digest = relay.file_sha256(source)
    rows = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        version = browser.version
        try:
            for impl in IMPLS:
                for direction in ("page -> child", "child -> page"):
                    runner.count += 1
                    workdir = runner.tmp / f"chromium-{runner.count}"
                    workdir.mkdir()
                    page = await browser.new_page()
                    await page.route(ORIGIN + "**", lambda route: route.fulfill(body=BLANK))
                    await page.goto(ORIGIN)  # a secure context, for crypto.subtle
                    child = None
                    label = f"Chromium -> {NAMES[impl]}"
                    if direction == "child -> page":
                        label = f"{NAMES[impl]} -> Chromium"
                    try:
                        dest = workdir / "received.bin"
                        if direction == "page -> child":
                            args = ["receive", "127.0.0.1", str(dest), str(size)]
                            child = runner.start("receiver", impl, args, workdir, None)
                            if json.loads(child.read_line(60)) != {"ready": True}:
                                raise relay.Failed("child not ready")
                            offer = await page.evaluate(PAGE_JS, {"role": "send", "size": size})
                            child.write_line(json.dumps(offer))
                            answer = json.loads(child.read_line(60))
                            await page.evaluate("(a) => window.pc.setRemoteDescription(a)", answer)
                            got = await asyncio.wait_for(page.evaluate("window.result"), 120)
                            ok = (
                                dest.stat().st_size == size
                                and relay.file_sha256(dest) == got["sha256"]
                            )
                            seconds = got["seconds"]
                        else:
                            args = ["send", "127.0.0.1", str(source)]
                            child = runner.start("sender", impl, args, workdir, None)
                            offer = json.loads(child.read_line(60))
                            answer = await page.evaluate(
                                PAGE_JS, {"role": "receive", "size": size, "offer": offer}
                            )
                            child.write_line(json.dumps(answer))
                            got = await asyncio.wait_for(page.evaluate("window.result"), 120)
                            sent = json.loads(child.read_line(120))
                            ok = got["bytes"] == size and got["sha256"] == digest
                            seconds = sent["done"] - sent["open"]
                        verdict = "ok: sha256 equal" if ok else "FAILED: sha256 differs"
                        rate = f"{size / MB / seconds:7.1f}"
                    except Exception as exc:  # any failure is this row's verdict
                        verdict, rate = f"FAILED: {type(exc).__name__}: {exc}"[:200], "      -"
                        if child is not None:
                            verdict += " | " + relay.tail(child.log, 3).replace("\n", " ")
                    finally:
                        if child is not None:
                            child.stop()
                        await page.close()
                    rows.append(f"  {label:<28} {rate} MB/s  {verdict}")
        finally:
            await browser.close()
    return [f"Chromium {version} (headless), {size_mb} MiB, loopback:", *rows]


# --- main ----------------------------------------------------------------------------------


def print_table(
    series: list[Series], args: argparse.Namespace, size: int, info: list[str], load: str
) -> None:
    import commands

    print(
        f"native data channel evaluation: {args.size_mb} MiB file ({size:,} bytes), median of "
        f"{args.repeat} run(s) per pair and profile, {os.cpu_count()} CPU(s), load average "
        f"{load} at the start, {commands.load_average()} at the end"
    )
    print(f"command: {shlex.join(['.venv/bin/python', *sys.argv])} (as root, own namespace)")
    for line in info:
        print(line)
    print(
        "transfer: sender's channel open -> receiver's last byte written; whole: launching "
        "the sender -> both exited; MB = 10^6 bytes; x aiortc: against the profile's "
        "aiortc -> aiortc; CPU: each process's whole life (os.wait4), median; peak: own "
        "VmHWM (bench/peak.py), highest over the runs; drops: UDP RcvbufErrors per run"
    )
    print()
    print(f"{'':<43}{'transfer':^15} {'whole':^15}  {'CPU seconds':^17}  {'peak MiB':^17}")
    print(
        f"{'profile':<10}{'pair':<33}{'MB/s':>7} {'x aiortc':>8} {'MB/s':>7} {'x aiortc':>8}"
        f"  {'sender':>8} {'receiver':>8}  {'sender':>8} {'receiver':>8}  drops"
    )
    base = {s.profile: s for s in series if s.pair == ("aiortc", "aiortc")}
    for s in series:
        b = base[s.profile]
        drops = ",".join(str(r.drops) for r in s.runs)
        print(
            f"{s.profile:<10}{s.label:<33}{s.rate():>7.1f} {s.rate() / b.rate():>7.2f}x "
            f"{s.rate('whole_s'):>7.1f} {s.rate('whole_s') / b.rate('whole_s'):>7.2f}x  "
            f"{s.cpu('sender'):>8.2f} {s.cpu('receiver'):>8.2f}  "
            f"{s.peak('sender') / 1024:>8.1f} {s.peak('receiver') / 1024:>8.1f}  {drops}"
        )
    print()
    print("seconds per run (transfer / whole):")
    for s in series:
        runs = "  ".join(f"{r.transfer_s:.3f}/{r.whole_s:.3f}" for r in s.runs)
        print(f"  {s.profile:<10}{s.label:<33}{runs}")
    print()
    for profile, b in base.items():
        ldc = next(s for s in series if s.profile == profile and s.pair == ("ldc", "ldc"))
        ratio = ldc.rate() / b.rate()
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(
            f"criterion libdatachannel >= {GOAL:.0f} x aiortc on {profile}: {ldc.rate():.1f} "
            f"against {b.rate():.1f} MB/s = {ratio:.2f}x ({verdict})"
        )


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=32, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per pair (median)")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated")
    parser.add_argument("--aiortc-python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--ldc-python", default=str(REPO / ".venv-ldc" / "bin" / "python"))
    parser.add_argument("--chromium-mb", type=int, default=8, help="MiB each Chromium way")
    parser.add_argument("--no-chromium", action="store_true", help="leave Chromium out")
    args = parser.parse_args()
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if not profiles or any(p not in PROFILES for p in profiles):
        parser.error(f"--profiles takes profiles among {', '.join(PROFILES)}")
    if os.geteuid() != 0:
        parser.error("run it as root in a namespace of its own (unshare --net --mount ...)")
    profiles = [p for p in PROFILES if p in profiles]

    import commands
    import links
    import relay

    pythons = {"aiortc": args.aiortc_python, "ldc": args.ldc_python}
    load = commands.load_average()
    size = args.size_mb * MIB
    series = [Series(p, pair, size) for p in profiles for pair in PAIRS]
    info = []
    for impl, python in pythons.items():
        probe = f"import sys, importlib.metadata as m; print(sys.version.split()[0], m.version({'aiortc' if impl == 'aiortc' else 'aiolibdatachannel'!r}))"  # noqa: E501
        done = commands.subprocess.run([python, "-c", probe], capture_output=True, text=True)
        where = os.path.relpath(python, REPO)
        info.append(f"{NAMES[impl]}: {where} (Python, version: {done.stdout.strip()}), uvloop")
    chromium: list[str] = []
    with relay.sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="native-dc-") as tmp:
        source = Path(tmp) / "source.bin"
        relay.make_random_file(source, args.size_mb)
        runner = Runner(Path(tmp), pythons, source)
        for profile in profiles:
            if profile == "loopback":
                for _ in range(args.repeat):
                    for s in series:
                        if s.profile == profile:
                            s.runs.append(runner.measure(s.pair, ("127.0.0.1", "127.0.0.1")))
                continue
            with links.Link() as link:
                runner.link = link
                shown = link.shape(profile)
                info.append(f"profile {profile}: " + " | ".join(shown))
                addresses = (links.SENDER_ADDR, links.RECEIVER_ADDR)
                with link.receiver.entered():
                    for _ in range(args.repeat):
                        for s in series:
                            if s.profile == profile:
                                s.runs.append(runner.measure(s.pair, addresses))
                runner.link = None
        if not args.no_chromium:
            chromium = asyncio.run(chromium_rows(runner, args.chromium_mb))
    print_table(series, args, size, info, load)
    if chromium:
        print()
        for line in chromium:
            print(line)


if __name__ == "__main__":
    main()
