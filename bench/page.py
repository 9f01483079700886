"""Benchmark: the room page's data channel, each roomdrop path next to a bare data channel
between the same ends in the same run.

    .venv/bin/python bench/page.py [--size-mb 100] [--repeat 3] [--only PATH,...]
        [--profile DIR]

Run it as root (it needs a network namespace, which it makes for itself: this process
calls ``unshare(CLONE_NEWNET)`` first, brings ``lo`` up and makes the veth pair the
browser tests make, ``v0`` 10.213.0.1/24 and ``v1`` 10.213.0.2/24 with a default route,
since two Chromium peers gather no ICE candidates with only ``lo``; those addresses exist
only in that namespace, which goes when this process and its children end). Nothing
outside it is touched; no STUN or TURN.

One ``roomdrop serve`` on 127.0.0.1 (``tests/server/conftest.py``'s ``launch``) and two
headless Chromium processes (``/usr/bin/chromium`` with the browser tests' flags,
``tests/browser/pagetools.py``; each its own user-data-dir), each showing the room page,
signed in as a guest, in one room. Every row runs between those same two pages (and a CLI
process), rows interleaved over ``--repeat`` rounds, so drift touches every row alike.

* bare page -> page: a second ``RTCPeerConnection`` in each of the two pages (no roomdrop
  code), the session descriptions passed through this script; one ordered channel; the
  sender sends the file's size in 64 KiB messages of one buffer, waiting for
  ``bufferedamountlow`` (``bufferedAmountLowThreshold`` = ``--bare-low``) whenever more
  than ``--bare-high`` is buffered; nothing read from a file, hashed, encrypted or written.
  Transfer: the receiver's first message -> its last (``performance.now()`` in the
  receiving page), the first message's bytes not counted.
* roomdrop page -> page: the sending page's file input gets the file (as a person picks
  it), the receiving page's Accept is clicked: the page's real path (hashing,
  end-to-end encryption, the data channel, the OPFS worker, verification). Transfer: in
  the receiving page, the first chunk stored -> the transfer completed (the whole file
  verified and placed), polled every 2 ms; the first chunk's bytes not counted. A run
  counts only if it completed over p2p alone with the source's sha256.
* bare page -> aiortc / bare aiortc -> page: ``bench/bare_datachannel.py`` (aiortc, ICE
  on 127.0.0.1) against the bare code in one page, its message format (64 KiB blocks as
  two messages of a 72-byte dummy header + 32 KiB, ~1 MiB buffered at most). Transfer:
  the page's channel open -> the receiver's ``done`` (page sending); the page's first
  message -> its last (page receiving). The baseline of the CLI rows: the bare channel
  between those two ends, so limited by the slower of them.
* roomdrop page -> CLI / CLI -> page: the real ``roomdrop receive --yes --count 1
  --json`` / ``roomdrop send --transport p2p --json`` (``ROOMDROP_ICE_HOSTS=127.0.0.1``,
  one config dir for the CLI user for the whole run) against the page. Transfer: the CLI
  receiver's ``elapsed_s`` (accept -> verified end); the page receiving: as above.

MB/s = file size / median transfer time (MB = 10^6 bytes); ``x base``: against the bare
row of the same pair of ends (page -> page: bare page -> page; page <-> CLI: the bare
aiortc channel in the same direction). Peak memory: each process's own high-water mark
(``VmHWM``), reset before every run (``echo 5 > /proc/PID/clear_refs``) and read after
it, the highest over the runs: for a page, its Chromium renderer process (the page's
main thread, its workers and its WebRTC stack run there; the browser process is shown on
a line of its own); for a CLI process, ``bench/peak.py``'s report; the server's too.

``--profile DIR``: one more roomdrop page -> page run after the others with Chromium's
own profiler (CDP ``Tracing`` with V8's sampling profiler, every thread of both
renderers: main threads and workers), written to DIR as trace JSON, and a table of the
functions with the most self time per thread printed (``bench/page.py --summarize
TRACE`` prints it again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO / "tests" / "browser"), str(REPO / "tests")]

from pagetools import (  # noqa: E402  the browser tests' Chromium, flags and page helpers
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    VETH,
    RoomPage,
    interfaces,
    ip,
)
from playwright.async_api import BrowserContext, Playwright, async_playwright  # noqa: E402
from playwright.async_api import Error as PlaywrightError  # noqa: E402

import commands  # noqa: E402  bench/commands.py: its child processes
import links  # noqa: E402  bench/links.py: bare_datachannel.py with ICE on a given address
import relay  # noqa: E402  bench/relay.py: the helpers shared by the benchmarks
from server.conftest import Server, launch  # noqa: E402

MIB = 1024 * 1024
MB = 1_000_000
ROOM = "bench"
GOAL = 0.85  # roomdrop >= 0.85 x the bare channel between the same ends
PATHS = ("bare-pp", "pp", "bare-pc", "pc", "bare-cp", "cp")
LABELS = {
    "bare-pp": "bare page -> page",
    "pp": "roomdrop page -> page",
    "bare-pc": "bare page -> aiortc",
    "pc": "roomdrop page -> CLI",
    "bare-cp": "bare aiortc -> page",
    "cp": "roomdrop CLI -> page",
}
BASELINE = {"pp": "bare-pp", "pc": "bare-pc", "cp": "bare-cp"}
CLONE_NEWNET = 0x40000000
BARE_DC = BENCH / "bare_datachannel.py"
ROOMDROP = [sys.executable, "-m", "roomdrop.cli"]
CLI_USER = "cli"
CLI_ADDRESS = "10.213.0.2"  # ICE of the CLI and bare aiortc processes: v1
TRACE_CATEGORIES = [
    "-*",
    "disabled-by-default-v8.cpu_profiler",
    "v8.execute",
    "disabled-by-default-devtools.timeline",
    "devtools.timeline",
]

Failed = relay.Failed

# The bare data channel's code, put in each page (window.__bare). Timestamps are the
# page's own performance.now(), in milliseconds.
BARE_JS = """
window.__bare = (() => {
  let pc = null, ch = null, rx = null;
  const gathered = (p) => new Promise((resolve) => {
    if (p.iceGatheringState === "complete") return resolve();
    p.addEventListener("icegatheringstatechange", () => {
      if (p.iceGatheringState === "complete") resolve();
    });
  });
  const fresh = () => {
    if (pc) pc.close();
    pc = new RTCPeerConnection({ iceServers: [] });
    ch = null;
    rx = { first: null, firstBytes: 0, last: null, bytes: 0, messages: 0, done: false };
  };
  const receiving = (channel, size, header) => {
    channel.binaryType = "arraybuffer";
    channel.onmessage = (event) => {
      const at = performance.now();
      if (typeof event.data === "string") return;
      const n = event.data.byteLength - header;
      if (rx.first === null) { rx.first = at; rx.firstBytes = n; }
      rx.last = at;
      rx.bytes += n;
      rx.messages += 1;
      if (rx.bytes >= size && !rx.done) { rx.done = true; channel.send("done"); }
    };
  };
  const opened = (channel) => channel.readyState === "open" ? Promise.resolve()
    : new Promise((resolve, reject) => {
      const fail = () => reject(new Error(`no open channel: ${pc && pc.connectionState}`));
      const timer = setTimeout(fail, 30000);
      channel.addEventListener("open", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  return {
    async offer() {
      fresh();
      ch = pc.createDataChannel("bare", { ordered: true });
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      return { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
    },
    async answer(desc, size, header) {
      fresh();
      pc.ondatachannel = (event) => { ch = event.channel; receiving(ch, size, header); };
      await pc.setRemoteDescription(desc);
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      return { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
    },
    async accept(desc) { await pc.setRemoteDescription(desc); },
    async send(size, message, header, high, low) {
      const channel = ch;
      await opened(channel);
      channel.bufferedAmountLowThreshold = low;
      const buf = new Uint8Array(message);
      for (let at = 0; at < message; at += 65536) {
        crypto.getRandomValues(buf.subarray(at, Math.min(message, at + 65536)));
      }
      const payload = message - header;
      // the receiver's "done" (text from a page, bytes from aiortc)
      const done = new Promise((resolve) => {
        channel.addEventListener("message", () => resolve(performance.now()));
      });
      const open = performance.now();
      for (let sent = 0; sent < size; ) {
        const n = Math.min(payload, size - sent);
        channel.send(n === payload ? buf : buf.subarray(0, header + n));
        sent += n;
        if (channel.bufferedAmount > high) {
          await new Promise((r) => {
            channel.addEventListener("bufferedamountlow", r, { once: true });
          });
        }
      }
      const end = await done;
      pc.close(); // an aiortc receiver ends once the sender has closed
      pc = null;
      return { open, end };
    },
    async received(size, timeoutMs) {
      const until = performance.now() + timeoutMs;
      while (rx.bytes < size && performance.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
      }
      return { ...rx };
    },
    close() { if (pc) pc.close(); pc = null; ch = null; },
  };
})();
"""

# Watches one transfer in a receiving page: the first chunk stored, the end.
WATCH_JS = """(tid) => {
  const get = (m, k) => m instanceof Map ? m.get(k) : m[k];
  const w = { first: null, firstBytes: 0, end: null, status: null };
  window.__watch = w;
  const timer = setInterval(() => {
    const t = get(window.roomdrop.transfers, tid);
    if (!t) return;
    const at = performance.now();
    if (w.first === null && t.bytes_transferred > 0) {
      w.first = at;
      w.firstBytes = t.bytes_transferred;
    }
    if (["completed", "failed", "cancelled", "rejected"].includes(t.status)) {
      w.end = at; w.status = t.status; clearInterval(timer);
    }
  }, 2);
}"""

# The newest receiving transfer a page shows (a CLI sender's offer).
NEWEST_RECEIVE_JS = """() => {
  const all = window.roomdrop.transfers;
  const list = all instanceof Map ? [...all.values()] : Object.values(all);
  const mine = list.filter((t) => t.direction === "receive" && t.status === "pending");
  return mine.length ? mine[mine.length - 1].transfer_id : null;
}"""

# The files a receiving page placed (verified) in OPFS go between runs.
CLEAR_OPFS_JS = """async () => {
  const root = await navigator.storage.getDirectory();
  for (const name of ["roomdrop-received"]) {
    let dir;
    try { dir = await root.getDirectoryHandle(name); } catch { continue; }
    const names = [];
    for await (const [entry] of dir.entries()) names.push(entry);
    for (const entry of names) await dir.removeEntry(entry).catch(() => {});
  }
}"""


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# --- the namespace -----------------------------------------------------------------------


def enter_own_namespace() -> None:
    """A network namespace of this process's own, with ``lo`` up and the browser tests'
    veth pair (two Chromium peers gather no ICE candidates with only ``lo``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise SystemExit(
            f"bench/page.py needs root to make its network namespace: "
            f"{os.strerror(ctypes.get_errno())}"
        )
    ip("link", "set", "lo", "up")
    ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    for link in VETH:  # no IPv6 addresses arriving later to look like a network change
        ipv6 = Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6")
        if ipv6.exists():
            ipv6.write_text("1")
    ip("addr", "add", "10.213.0.1/24", "dev", "v0")
    ip("addr", "add", "10.213.0.2/24", "dev", "v1")
    ip("link", "set", "v0", "up")
    ip("link", "set", "v1", "up")
    ip("route", "add", "default", "via", "10.213.0.2", "dev", "v0")
    assert interfaces() == {"lo", *VETH}, interfaces()


def netns() -> str:
    return os.readlink("/proc/self/ns/net")


# --- processes and their memory ----------------------------------------------------------


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, cmdline)
    return table


@dataclass
class Chromium:
    """The processes of one Chromium (found by its user-data-dir)."""

    profile: Path
    browser: int = 0

    def find(self) -> None:
        for pid, (_, cmdline) in process_table().items():
            if f"--user-data-dir={self.profile}" in cmdline and "--type=" not in cmdline:
                self.browser = pid
                return
        raise Failed(f"no Chromium browser process for {self.profile}")

    def tree(self) -> dict[int, str]:
        table = process_table()
        found, todo = {}, [self.browser]
        while todo:
            pid = todo.pop()
            if pid in table:
                found[pid] = table[pid][1]
                todo += [p for p, (ppid, _) in table.items() if ppid == pid]
        return found

    def renderers(self) -> list[int]:
        return [p for p, cmd in self.tree().items() if "--type=renderer" in cmd]

    def reset_peaks(self) -> None:
        for pid in self.tree():
            reset_peak(pid)

    def cpu_seconds(self) -> float:
        """utime + stime of every process of this Chromium (live ones: all of a run's)."""
        total = 0.0
        for pid in self.tree():
            with contextlib.suppress(OSError, IndexError, ValueError):  # gone meanwhile
                total += relay.process_cpu(pid)
        return total

    def peaks(self) -> tuple[int, int]:
        """(the highest renderer VmHWM, the browser process's VmHWM), KiB."""
        renderer = max((hwm(p) for p in self.renderers()), default=0)
        return renderer, hwm(self.browser)


def reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def hwm(pid: int) -> int:
    try:
        return relay.vm_hwm_kib(pid)
    except Exception:
        return 0


# --- the runs ----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    bytes: int
    sender_kib: int
    receiver_kib: int
    server_kib: int = 0
    browsers_kib: tuple[int, int] = (0, 0)
    udp_drops: int = 0
    chromium_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds / MB


@dataclass
class Series:
    key: str
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def rate(self) -> float:
        """MB/s at the median time (each run's counted bytes over its seconds)."""
        return statistics.median(r.rate for r in self.runs) if self.runs else math.nan

    def peak(self, attr: str) -> int:
        return max((getattr(r, attr) for r in self.runs), default=0)

    @property
    def cpu_per_mb(self) -> float:
        """Both Chromiums' CPU milliseconds per MB moved (median over the runs)."""
        if not self.runs:
            return math.nan
        return statistics.median(1000 * r.chromium_cpu / (r.bytes / MB) for r in self.runs)


@dataclass
class Bench:
    tmp: Path
    source: Path
    digest: str
    server: Server
    alice: RoomPage
    bob: RoomPage
    chromia: dict[str, Chromium]
    high: int
    low: int
    timeout: float
    count: int = 0
    cli_config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cli_config = self.tmp / "cli-config"

    @property
    def size(self) -> int:
        return self.source.stat().st_size

    def reset_peaks(self) -> None:
        for c in self.chromia.values():
            c.reset_peaks()
        reset_peak(self.server.process.pid)

    def chromium_cpu(self) -> float:
        return sum(c.cpu_seconds() for c in self.chromia.values())

    def renderer(self, page: RoomPage) -> int:
        return self.chromia[page.label].peaks()[0]

    def browsers(self) -> tuple[int, int]:
        return self.chromia["alice"].peaks()[1], self.chromia["bob"].peaks()[1]

    async def run(self, key: str) -> Run:
        self.count += 1
        workdir = self.tmp / f"run-{self.count}-{key}"
        workdir.mkdir()
        group = commands.Group()
        self.reset_peaks()
        drops = commands.udp_receive_drops()
        cpu = self.chromium_cpu()
        try:
            if key == "bare-pp":
                run = await self.bare_pp()
            elif key == "pp":
                run = await self.roomdrop_pp()
            elif key == "bare-pc":
                run = await self.bare_pc(group, workdir)
            elif key == "bare-cp":
                run = await self.bare_cp(group, workdir)
            elif key == "pc":
                run = await self.roomdrop_pc(group, workdir)
            else:
                run = await self.roomdrop_cp(group, workdir)
            run.server_kib = hwm(self.server.process.pid)
            run.browsers_kib = self.browsers()
            run.udp_drops = commands.udp_receive_drops() - drops
            run.chromium_cpu = self.chromium_cpu() - cpu
            return run
        except (Failed, PlaywrightError) as exc:
            raise group.fail(f"{LABELS[key]} run {self.count}", exc) from None
        finally:
            group.stop_all()
            with contextlib.suppress(Exception):
                await self.alice.page.evaluate("() => window.__bare && window.__bare.close()")
                await self.bob.page.evaluate("() => window.__bare && window.__bare.close()")
            shutil.rmtree(workdir, ignore_errors=True)

    # --- bare ----------------------------------------------------------------------------

    async def bare_pp(self) -> Run:
        a, b = self.alice.page, self.bob.page
        size = self.size
        offer = await a.evaluate("() => window.__bare.offer()")
        answer = await b.evaluate("([d, s]) => window.__bare.answer(d, s, 0)", [offer, size])
        await a.evaluate("(d) => window.__bare.accept(d)", answer)
        sending = a.evaluate(
            "([s, h, l]) => window.__bare.send(s, 65536, 0, h, l)", [size, self.high, self.low]
        )
        receiving = b.evaluate(
            "([s, t]) => window.__bare.received(s, t)", [size, self.timeout * 1000]
        )
        _, rx = await asyncio.gather(sending, receiving)
        if rx["bytes"] != size:
            raise Failed(f"the bare receiving page got {rx['bytes']} of {size} bytes")
        return Run(
            (rx["last"] - rx["first"]) / 1000,
            size - rx["firstBytes"],
            self.renderer(self.alice),
            self.renderer(self.bob),
        )

    def aiortc(self, group: commands.Group, workdir: Path, role: str) -> commands.Child:
        args = ["receive", str(workdir / "received.bin"), str(self.size)]
        if role == "send":
            args = ["send", str(self.source)]
        return group.start(
            f"aiortc {role}",
            [sys.executable, "-c", links.DC_CHILD, CLI_ADDRESS, *args],
            workdir / f"aiortc-{role}.log",
            stdin=True,
        )

    async def bare_pc(self, group: commands.Group, workdir: Path) -> Run:
        page = self.alice.page
        receiver = self.aiortc(group, workdir, "receive")
        if json.loads(await asyncio.to_thread(receiver.read_line, 60)) != {"ready": True}:
            raise Failed("the aiortc receiver did not say it was ready")
        offer = await page.evaluate("() => window.__bare.offer()")
        receiver.write_line(json.dumps(offer))
        answer = json.loads(await asyncio.to_thread(receiver.read_line, 60))
        await page.evaluate("(d) => window.__bare.accept(d)", answer)
        header, part = 72, 32 * 1024
        sent = await page.evaluate(
            "([s, m, h]) => window.__bare.send(s, m, h, 1048576 - 2 * m, 524288)",
            [self.size, header + part, header],
        )
        await asyncio.to_thread(group.wait_exit, [receiver], self.timeout)
        got = json.loads(await asyncio.to_thread(receiver.read_line, 5))
        if got["bytes"] != self.size:
            raise Failed(f"the aiortc receiver wrote {got['bytes']} of {self.size} bytes")
        return Run(
            (sent["end"] - sent["open"]) / 1000,
            self.size,
            self.renderer(self.alice),
            receiver.peak_kib,
        )

    async def bare_cp(self, group: commands.Group, workdir: Path) -> Run:
        page = self.bob.page
        sender = self.aiortc(group, workdir, "send")
        offer = json.loads(await asyncio.to_thread(sender.read_line, 60))
        answer = await page.evaluate(
            "([d, s]) => window.__bare.answer(d, s, 72)", [offer, self.size]
        )
        sender.write_line(json.dumps(answer))
        rx = await page.evaluate(
            "([s, t]) => window.__bare.received(s, t)", [self.size, self.timeout * 1000]
        )
        await asyncio.to_thread(group.wait_exit, [sender], self.timeout)
        if rx["bytes"] != self.size:
            raise Failed(f"the bare receiving page got {rx['bytes']} of {self.size} bytes")
        return Run(
            (rx["last"] - rx["first"]) / 1000,
            self.size - rx["firstBytes"],
            sender.peak_kib,
            self.renderer(self.bob),
        )

    # --- roomdrop ------------------------------------------------------------------------

    async def watch(self, page: RoomPage, tid: str) -> dict[str, Any]:
        """Until the transfer watched in ``page`` (WATCH_JS) ends: what was seen."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            seen = await page.page.evaluate("() => window.__watch")
            if seen["end"] is not None:
                if seen["status"] != "completed":
                    raise Failed(f"{page.label}: {seen['status']}: {await page.describe()}")
                return dict(seen)
            await asyncio.sleep(0.1)
        raise Failed(
            f"{page.label}: not completed in {self.timeout:.0f} s: {await page.describe()}"
        )

    async def check_received(self, page: RoomPage, tid: str) -> None:
        state = await page.transfer_state(tid)
        if state["sha256"] != self.digest or state["bytes_via"]["p2p"] != self.size:
            raise Failed(f"{page.label} received {state}, not the source over p2p alone")
        if state["bytes_via"]["relay"]:
            raise Failed(f"{page.label}: some chunks came through the relay: {state}")

    async def received(self, page: RoomPage, tid: str, seen: dict[str, Any]) -> float:
        await self.check_received(page, tid)
        await page.page.evaluate(CLEAR_OPFS_JS)
        return float((seen["end"] - seen["first"]) / 1000)

    async def roomdrop_pp(self, profile: Path | None = None) -> Run:
        a, b = self.alice, self.bob
        tid = await a.send(b.user, self.source)
        await b.page.evaluate(WATCH_JS, tid)
        tracing = [Tracer(p) for p in (a, b)] if profile is not None else []
        for tracer in tracing:
            await tracer.start()
        await b.accept()
        seen = await self.watch(b, tid)
        for tracer in tracing:
            assert profile is not None
            await tracer.stop(profile / f"trace-{tracer.page.label}.json")
        await self.sender_done(a, tid)
        seconds = await self.received(b, tid, seen)
        return Run(seconds, self.size - seen["firstBytes"], self.renderer(a), self.renderer(b))

    async def sender_done(self, page: RoomPage, tid: str) -> None:
        try:
            await page.wait_status(tid, "completed", 30)
        except AssertionError as exc:
            raise Failed(str(exc)) from None

    def cli_env(self) -> dict[str, str]:
        return commands.clean_env(
            ROOMDROP_ICE_HOSTS=CLI_ADDRESS, ROOMDROP_CONFIG_DIR=str(self.cli_config)
        )

    def cli_common(self) -> list[str]:
        token = self.server.token(CLI_USER, ttl=3600)
        return ["--server", self.server.url, "--room", ROOM, "--token", token]

    async def cli_joined(self, page: RoomPage, cli: commands.Child) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not cli.running:
                raise Failed(f"{cli.name} exited with {cli.exit_code} before joining")
            if await page.participant(CLI_USER).count():
                return
            await asyncio.sleep(0.05)
        raise Failed(f"{page.label} never saw {CLI_USER} join")

    def cli_result(self, child: commands.Child) -> dict[str, Any]:
        assert child.stdout_path is not None
        results = []
        for line in child.stdout_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and obj.get("event") == "result":
                    results.append(obj)
        if len(results) != 1:
            raise Failed(f"{child.name} printed {len(results)} result lines, not 1")
        result = results[0]
        good = (
            result.get("status") == "completed"
            and result.get("transport") == "p2p"
            and result.get("sha256") == self.digest
            and result.get("bytes_transferred") == self.size
        )
        if not good:
            raise Failed(f"{child.name}'s result: {result}")
        return result

    async def roomdrop_pc(self, group: commands.Group, workdir: Path) -> Run:
        a = self.alice
        out = workdir / "out"
        out.mkdir()
        cmd = [*ROOMDROP, "receive", *self.cli_common(), "--out", str(out)]
        cmd += ["--yes", "--count", "1", "--json"]
        receiver = group.start(
            "roomdrop receive",
            cmd,
            workdir / "receive.log",
            env=self.cli_env(),
            stdout=workdir / "receive.out",
        )
        await self.cli_joined(a, receiver)
        tid = await a.send(CLI_USER, self.source)
        await asyncio.to_thread(group.wait_exit, [receiver], self.timeout)
        result = self.cli_result(receiver)
        saved = [p for p in out.rglob("*") if p.is_file()]
        if len(saved) != 1 or relay.file_sha256(saved[0]) != self.digest:
            raise Failed(f"the CLI saved {saved}, not the source")
        await self.sender_done(a, tid)
        return Run(float(result["elapsed_s"]), self.size, self.renderer(a), receiver.peak_kib)

    async def roomdrop_cp(self, group: commands.Group, workdir: Path) -> Run:
        b = self.bob
        cmd = [*ROOMDROP, "send", str(self.source), *self.cli_common(), "--to", b.user]
        cmd += ["--transport", "p2p", "--json"]
        sender = group.start(
            "roomdrop send",
            cmd,
            workdir / "send.log",
            env=self.cli_env(),
            stdout=workdir / "send.out",
        )
        deadline = time.monotonic() + 60
        tid = None
        while tid is None:
            if time.monotonic() > deadline or not sender.running:
                raise Failed(f"no offer from the CLI reached {b.label}: {await b.describe()}")
            await asyncio.sleep(0.05)
            tid = await b.page.evaluate(NEWEST_RECEIVE_JS)
        await b.page.evaluate(WATCH_JS, tid)
        await b.accept()
        seen = await self.watch(b, tid)
        await asyncio.to_thread(group.wait_exit, [sender], self.timeout)
        self.cli_result(sender)
        seconds = await self.received(b, tid, seen)
        return Run(seconds, self.size - seen["firstBytes"], sender.peak_kib, self.renderer(b))


# --- Chromium's profiler -----------------------------------------------------------------


class Tracer:
    """CDP Tracing of one page's Chromium (V8's sampling profiler on every thread)."""

    def __init__(self, page: RoomPage) -> None:
        self.page = page
        self.events: list[dict[str, Any]] = []
        self.done: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.session = await self.page.context.new_cdp_session(self.page.page)
        self.session.on("Tracing.dataCollected", lambda e: self.events.extend(e["value"]))
        self.done = asyncio.get_running_loop().create_future()
        self.session.on(
            "Tracing.tracingComplete",
            lambda e: self.done is not None and not self.done.done() and self.done.set_result(None),
        )
        await self.session.send(
            "Tracing.start",
            {
                "transferMode": "ReportEvents",
                "traceConfig": {"includedCategories": TRACE_CATEGORIES},
            },
        )

    async def stop(self, path: Path) -> None:
        assert self.done is not None
        await self.session.send("Tracing.end")
        await asyncio.wait_for(self.done, 60)
        path.write_text(json.dumps({"traceEvents": self.events}))
        await self.session.detach()


def summarize(trace: Path, top: int = 12) -> list[str]:
    """Self time per function and thread, from the trace's V8 CPU profile samples."""
    events = json.loads(trace.read_text())["traceEvents"]
    threads = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
    # profile id -> its nodes (id -> callFrame) and samples (node ids), time deltas
    nodes: dict[tuple[int, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    samples: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    where: dict[tuple[int, str], tuple[int, int]] = {}
    for e in events:
        if e.get("name") == "Profile":
            where[(e["pid"], e["id"])] = (e["pid"], e["tid"])
        if e.get("name") != "ProfileChunk":
            continue
        key = (e["pid"], e["id"])
        data = e["args"]["data"]
        cpu = data.get("cpuProfile", {})
        for node in cpu.get("nodes", []):
            nodes[key][node["id"]] = node["callFrame"]
        ids = cpu.get("samples", [])
        deltas = data.get("timeDeltas", [0] * len(ids))
        samples[key] += list(zip(ids, deltas, strict=False))
    lines = []
    for key, taken in samples.items():
        thread = threads.get(where.get(key, (0, 0)), "?")
        self_us: Counter[str] = Counter()
        # the time until the next sample is this sample's
        for (node, _), (_, delta) in zip(taken, [*taken[1:], (0, 0)], strict=True):
            frame = nodes[key].get(node, {})
            name = frame.get("functionName") or "(anonymous)"
            url = frame.get("url", "").rsplit("/", 1)[-1]
            line = frame.get("lineNumber", -1) + 1
            label = f"{name} {url}:{line}" if url else name
            self_us[label] += max(0, delta)
        total = sum(self_us.values())
        if not total:
            continue
        busy = total - self_us["(idle)"]
        lines.append(
            f"{trace.name} pid {key[0]} {thread}: {total / 1e6:.2f} s sampled, "
            f"{busy / 1e6:.2f} s not idle ({100 * busy / total:.0f} %)"
        )
        for label, us in self_us.most_common(top):
            lines.append(f"  {100 * us / total:5.1f} %  {us / 1e3:8.1f} ms  {label}")
    return lines


# --- main --------------------------------------------------------------------------------


class Standin:
    """What RoomPage asks of the browser tests' harness (a screenshot on a failure)."""

    def __init__(self, shots: Path) -> None:
        self.shots = shots

    async def shot(self, page: RoomPage, name: str) -> Path:
        path = self.shots / f"{page.label}-{name}.png"
        with contextlib.suppress(Exception):
            await page.page.screenshot(path=str(path))
        return path

    def log(self, label: str, text: str) -> None:
        pass


async def open_page(
    playwright: Playwright, tmp: Path, server: Server, label: str, log: list[str]
) -> tuple[RoomPage, Chromium]:
    profile = tmp / f"chromium-{label}"
    context: BrowserContext = await playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=DESKTOP,
        accept_downloads=True,
    )
    context.set_default_timeout(30_000)
    page = context.pages[0] if context.pages else await context.new_page()
    page.on("console", lambda m: log.append(f"[{label}] {m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"[{label}] pageerror: {e}"))
    await page.add_init_script(BARE_JS)
    standin: Any = Standin(tmp)
    room_page = RoomPage(standin, label, context, page, server)
    chromium = Chromium(profile)
    chromium.find()
    return room_page, chromium


async def measure(args: argparse.Namespace, keys: list[str]) -> tuple[list[Series], list[str]]:
    size = args.size_mb * MIB
    notes: list[str] = []
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="roomdrop-page-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "source.bin"
        relay.make_random_file(source, args.size_mb)
        digest = relay.file_sha256(source)
        env = {"ROOMDROP_MAX_FILE_SIZE": str(max(size, 500 * MIB))}
        server = await asyncio.to_thread(launch, tmp / "serve", env)
        try:
            async with async_playwright() as playwright:
                alice, ca = await open_page(playwright, tmp, server, "alice", log)
                bob, cb = await open_page(playwright, tmp, server, "bob", log)
                await alice.join(ROOM, name="alice")
                await bob.join(ROOM, name="bob")
                await alice.sees(bob.user)
                await bob.sees(alice.user)
                bench = Bench(
                    tmp,
                    source,
                    digest,
                    server,
                    alice,
                    bob,
                    {"alice": ca, "bob": cb},
                    args.bare_high,
                    args.bare_low,
                    max(120.0, 3.0 * args.size_mb),
                )
                series = [Series(k) for k in PATHS if k in keys]
                try:
                    for _ in range(args.repeat):
                        for s in series:
                            print(f"{s.label} ...", end=" ", file=sys.stderr, flush=True)
                            s.runs.append(await bench.run(s.key))
                            print(f"{s.runs[-1].rate:.1f} MB/s", file=sys.stderr, flush=True)
                    if args.profile is not None:
                        args.profile.mkdir(parents=True, exist_ok=True)
                        run = await bench.roomdrop_pp(args.profile)
                        notes.append(f"profiled run: roomdrop page -> page {run.rate:.1f} MB/s")
                        for who in ("alice", "bob"):
                            notes += summarize(args.profile / f"trace-{who}.json")
                except Failed as exc:
                    tail = "\n".join(log[-60:])
                    raise SystemExit(f"benchmark failed: {exc}\npage console:\n{tail}") from None
                notes.append(f"chromium: {await alice.page.evaluate('navigator.userAgent')}")
                for context in (alice.context, bob.context):
                    await context.close()
        finally:
            complaint = server.stop()
            if complaint:
                print(f"warning: {complaint}", file=sys.stderr)
        errors = [line for line in log if "pageerror" in line]
        if errors:
            raise SystemExit("uncaught page errors:\n" + "\n".join(errors))
    return series, notes


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}" if kib else "-"


def print_table(series: list[Series], args: argparse.Namespace, load: str) -> None:
    size = args.size_mb * MIB
    print(
        f"roomdrop page benchmark: {args.size_mb} MiB file ({size:,} bytes), median of "
        f"{args.repeat} run(s) per row, two headless Chromium processes and one roomdrop "
        f"serve, {os.cpu_count()} CPU(s), load average {load} at the start, "
        f"{relay_load()} at the end; network namespace {netns()} (lo + veth v0/v1)"
    )
    print(
        "transfer: bare: the receiver's first message -> last (page receiving) or the page's "
        "channel open -> the receiver's done (page sending); roomdrop page receiving: first "
        "chunk stored -> completed (verified, placed); roomdrop CLI receiving: its elapsed_s"
    )
    print(
        f"bare page -> page: 64 KiB messages, bufferedAmountLowThreshold {args.bare_low} bytes, "
        f"waits above {args.bare_high} bytes buffered; bare aiortc: bench/bare_datachannel.py; "
        "MB = 10^6 bytes"
    )
    print(
        "Chromium CPU ms/MB: user + system time of every process of both Chromiums (renderers, "
        "browser, GPU, utility) over the run, per MB moved (median): what a row costs the "
        "browsers, whatever else loads the machine"
    )
    print(
        "peak memory: VmHWM, reset before each run (clear_refs), highest over the runs: a page's "
        "Chromium renderer process, a CLI process's own (bench/peak.py), the server's"
    )
    print()
    print(f"{'':<24}{'transfer':^16} {'Chromium':>9}  {'peak memory (MiB)':^26}")
    print(
        f"{'path':<23} {'MB/s':>8} {'x base':>7} {'CPU ms/MB':>9}  {'sender':>8} {'receiver':>8} "
        f"{'server':>8}"
    )
    by_key = {s.key: s for s in series}
    for s in series:
        base = by_key.get(BASELINE.get(s.key, s.key))
        ratio = f"{s.rate / base.rate:.2f}x" if base is not None else "-"
        print(
            f"{s.label:<23} {s.rate:>8.1f} {ratio:>7} {s.cpu_per_mb:>9.1f}  "
            f"{mib(s.peak('sender_kib')):>8} "
            f"{mib(s.peak('receiver_kib')):>8} {mib(s.peak('server_kib')):>8}"
        )
    print()
    print(
        "MB/s per run (UDP datagrams dropped for a full socket buffer; the Chromium browser "
        "processes' peaks, alice / bob, MiB)"
    )
    for s in series:
        runs = "  ".join(
            f"{r.rate:.1f} ({r.udp_drops}; {mib(r.browsers_kib[0])}/{mib(r.browsers_kib[1])})"
            for r in s.runs
        )
        print(f"  {s.label:<23} {runs}")
    print()
    for key, base_key in BASELINE.items():
        mine, base = by_key.get(key), by_key.get(base_key)
        if mine is None or base is None:
            continue
        ratio = mine.rate / base.rate
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(
            f"goal {mine.label} >= {GOAL} x {base.label}: {mine.rate:.1f} / {base.rate:.1f} "
            f"MB/s = {ratio:.3f}x ({verdict})"
        )


def relay_load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median)")
    parser.add_argument(
        "--only",
        default=",".join(PATHS),
        help=f"comma-separated rows, of {', '.join(PATHS)} (default: all)",
    )
    parser.add_argument("--bare-high", type=int, default=1024 * 1024, help="bytes")
    parser.add_argument("--bare-low", type=int, default=256 * 1024, help="bytes")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="a profiled run, to DIR")
    parser.add_argument("--summarize", type=Path, metavar="TRACE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.summarize is not None:
        print("\n".join(summarize(args.summarize)))
        return
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")
    if not keys or any(k not in PATHS for k in keys):
        parser.error(f"--only takes rows among {', '.join(PATHS)}")
    load = relay_load()
    enter_own_namespace()
    with relay.sigterm_as_exit():
        series, notes = asyncio.run(measure(args, keys))
    print_table(series, args, load)
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
