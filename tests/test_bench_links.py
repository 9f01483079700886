"""bench/links.py runs to its end on a small file over shaped links and removes what it
made: its two network namespaces, the veth pair between them and every process it
started (all of which run in one of those namespaces), also when it is interrupted.

As in tests/test_bench.py, the figures are the benchmark's, not the test's: what is
checked is that every path ran over each profile and printed real numbers and its goal
line, and that the shaping took (bare TCP on the 100 Mbit/s link is far from the
unshaped link's and near 12.5 MB/s), so the README's figures can be measured again.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
COMMAND = [sys.executable, str(BENCH / "links.py")]
PROFILES = ("100mbit", "unshaped")
PATHS = (
    "bare TCP + work",
    "bare TCP",
    "bare data channel",
    "roomdrop direct",
    "roomdrop p2p",
    "roomdrop relay",
)
NUM = r"(\d+\.\d+)"
ROW = re.compile(
    rf"^(\S+) +({'|'.join(map(re.escape, PATHS))}) +{NUM} +{NUM}x +{NUM} +{NUM}x +"
    r"(\S+) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+)$"
)
MARKER = "ROOMDROP_LINKS_BENCH"  # bench/links.py puts it in its namespaces' sleep processes


def link_names() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return [line.split(":")[1].strip() for line in out.stdout.splitlines()]


def netns_of_processes() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                found[int(entry.name)] = os.readlink(entry / "ns" / "net")
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def marked_processes(bench_pid: int) -> list[int]:
    """The processes holding bench/links.py's namespaces (started by ``bench_pid``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"{MARKER}={bench_pid}".encode() in environ:
                found.append(int(entry.name))
    return found


def assert_nothing_left(namespaces: set[str], bench_pid: int, links_before: list[str]) -> None:
    assert namespaces, "no namespace of the benchmark's to check"
    deadline = time.monotonic() + 5  # a SIGKILLed process is gone at once; leave a margin
    while True:
        inside = {p: ns for p, ns in netns_of_processes().items() if ns in namespaces}
        marked = marked_processes(bench_pid)
        if (not inside and not marked) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not inside, f"processes left in the benchmark's namespaces: {inside}"
    assert not marked, f"the benchmark's namespace holders are still running: {marked}"
    assert link_names() == links_before, "the benchmark left a link behind"
    assert not [n for n in link_names() if n.startswith("rdl-") or "veth" in n]


def test_links_benchmark_measures_every_path_on_shaped_links(tmp_path: Path) -> None:
    links_before = link_names()
    started = time.monotonic()
    bench = subprocess.Popen(
        [*COMMAND, "--size-mb", "4", "--repeat", "1", "--profiles", ",".join(PROFILES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        out, err = bench.communicate(timeout=240)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    took = time.monotonic() - started
    assert bench.returncode == 0, f"bench/links.py exited {bench.returncode}:\n{err}"
    lines = out.splitlines()
    print(f"bench/links.py took {took:.1f} s\n{out}")

    rows: dict[tuple[str, str], re.Match[str]] = {}
    for line in lines:
        match = ROW.match(line)
        if match:
            rows[match[1], match[2]] = match
    for profile in PROFILES:
        for path in PATHS:
            row = rows.get((profile, path))
            assert row is not None, f"no row for {path!r} on {profile}:\n{out}"
            transfer, x_tcp, whole, x_whole = (float(row[i]) for i in range(3, 7))
            assert transfer > 0 and whole > 0, row[0]
            tcp = rows[profile, "bare TCP"]  # its row comes first
            for mine, ratio, base in (
                (transfer, x_tcp, float(tcp[3])),
                (whole, x_whole, float(tcp[5])),
            ):
                rounding = 0.0051 + 0.051 * (1 + mine / base) / base  # of the printed figures
                assert abs(ratio - mine / base) < rounding, row[0]
            if path == "bare TCP":
                assert row[4] == row[6] == "1.00", row[0]  # the baseline of its profile
            cpu, peaks = row.groups()[6:9], row.groups()[9:12]
            served = path.startswith("roomdrop")  # only roomdrop's paths have a server
            for role, value in zip(("sender", "receiver", "server"), cpu, strict=True):
                if role == "server" and not served:
                    assert value == "-", row[0]
                elif role == "server":  # on the direct path it only saw the signalling:
                    # 4 MiB of it can round to 0.00 s
                    assert 0 <= float(value) < 120, f"{role} CPU seconds: {row[0]}"
                else:
                    assert 0 < float(value) < 120, f"{role} CPU seconds: {row[0]}"
            for role, value in zip(("sender", "receiver", "server"), peaks, strict=True):
                if role == "server" and not served:
                    assert value == "-", row[0]
                else:  # each process's own peak: at least Python's, far from the parent's
                    assert 5 < float(value) < 500, f"{role} peak MiB: {row[0]}"

    # the shaping took: 4 MiB at 12.5 MB/s, with tbf's 256 KB burst ahead, is ~13 MB/s
    shaped = float(rows["100mbit", "bare TCP"][3])
    unshaped = float(rows["unshaped", "bare TCP"][3])
    assert 4 < shaped < 20, f"bare TCP on the 100 Mbit/s link: {shaped} MB/s\n{out}"
    assert unshaped > 3 * shaped, f"unshaped {unshaped} MB/s against {shaped} MB/s shaped"
    assert any(
        line.startswith("profile 100mbit: ") and line.count("tbf") == 2 and "100Mbit" in line
        for line in lines
    ), out
    assert any(line.startswith("profile unshaped: ") and "tbf" not in line for line in lines)
    assert any(line.startswith("netem: ") for line in lines), out

    # shaped links are measured against bare TCP, the unshaped one (CPU-bound) against
    # bare TCP doing the same per-chunk work, whose own ratio to bare TCP is printed
    for profile, floor in (("100mbit", "bare TCP"), ("unshaped", "bare TCP + work")):
        start = f"goal CLI -> CLI >= 0.9 x {floor} on {profile} ("
        goal = [line for line in lines if line.startswith(start)]
        assert len(goal) == 1, f"no goal line for {profile}:\n{out}"
        base = float(rows[profile, floor][3])
        for path in ("roomdrop direct", "roomdrop p2p", "roomdrop relay"):
            verdict = re.search(rf"{path} {NUM} MB/s = {NUM}x \((met|NOT met);", goal[0])
            assert verdict is not None, goal[0]
            assert float(verdict[1]) == float(rows[profile, path][3]), goal[0]
            assert abs(float(verdict[2]) - float(verdict[1]) / base) < 0.02, goal[0]
            assert (verdict[3] == "met") == (float(verdict[2]) >= 0.9), goal[0]
    work = re.search(rf"\(bare TCP \+ work on unshaped = {NUM} x plain bare TCP", out)
    assert work is not None, out
    assert abs(float(work[1]) - float(rows["unshaped", "bare TCP + work"][3]) / unshaped) < 0.02

    namespaces = set(re.findall(r"net:\[\d+\]", out))
    assert len(namespaces) == 2, out
    assert_nothing_left(namespaces, bench.pid, links_before)
    assert not list(tmp_path.iterdir()), "the benchmark's temp dir was left behind"


def test_links_benchmark_removes_everything_when_interrupted(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the benchmark) in the middle of a run: the run's processes, the
    namespaces, the veth pair and the temp dir are all gone once it has exited."""
    links_before = link_names()
    bench = subprocess.Popen(
        [*COMMAND, "--size-mb", "64", "--repeat", "3", "--profiles", "100mbit"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    own = os.readlink("/proc/self/ns/net")
    try:
        namespaces: set[str] = set()
        busy: dict[int, str] = {}  # pid: command line
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and bench.poll() is None:
            holders = marked_processes(bench.pid)
            everyone = netns_of_processes()
            # a holder just forked is still in this namespace, until its unshare
            namespaces |= {everyone[p] for p in holders if p in everyone} - {own}
            # a run under way: one of its Python processes in a namespace (not ip or tc)
            inside = [p for p, ns in everyone.items() if ns in namespaces and p not in holders]
            busy = {p: cmdline(p) for p in inside if cmdline(p).startswith(sys.executable)}
            if len(namespaces) == 2 and busy:
                break
            time.sleep(0.05)
        assert len(namespaces) == 2 and busy, (
            f"no run under way in the benchmark's namespaces (exit {bench.poll()}): "
            f"{bench.stderr.read().decode() if bench.poll() is not None else ''}"
        )
        time.sleep(1.0)  # well inside a run: 64 MiB at 100 Mbit/s takes ~5 s
        bench.send_signal(signal.SIGINT)
        _, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode != 0, "the benchmark ran to its end: it was not interrupted"
    assert b"KeyboardInterrupt" in err, err.decode(errors="replace")
    assert_nothing_left(namespaces, bench.pid, links_before)
    assert not list(tmp_path.iterdir()), "the benchmark's temp dir was left behind"
