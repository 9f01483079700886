"""Benchmark: the transfer engine against plain single-threaded Python file copying.

    .venv/bin/python bench/engine.py [--size-mb 200] [--repeat 3]

Creates a random file of ``--size-mb`` MiB (written in 1 MiB blocks) in a temp dir, then
measures, in the same run, the median of ``--repeat`` runs of each path:

* baseline: read the file in 64 KiB blocks, sha256 each block, write it to a new file, and
  sha256 the whole file on the way (what the engine verifies) -- plain Python, one thread;
* baseline + fsync: the same, then fsync the new file (the engine fsyncs before placing);
* create_offer scan: the engine's separate pass that reads and hashes the file once;
* engine, in order / shuffled: one FileTransferManager holding both ends, timed from the
  first send_chunk through completion: every chunk send_chunk -> receive_chunk (read, hash,
  frame; parse, verify, write), then the final whole-file check and placement.
* engine, no write-back: in order, with the receiver's write-back as chunks land turned
  off (the part file's data all reach the disk in the fsync before placing, as before).
* engine, e2e: in order, end-to-end encrypted (the content key sealed to a second device
  key in the offer; each chunk sealed with AES-256-GCM by send_chunk, opened, hashed and
  written by receive_chunk), the work every transfer does now.

Under the table: the fsync before placing (``PartFile.final_sync_s``: waiting for the last
write-back, then fsync), median per engine path.

Every run of every path is its own child process (this script with a hidden ``--child``
flag), so each peak memory (the child's own ``VmHWM`` as it exits, ``bench/peak.py``) is
that path's alone; the table shows the highest peak over the repeats, and its ratio to
the baseline's. All children import roomdrop, so their baselines are comparable.
The source file is in the page cache throughout (it was just written); no cache is dropped.
Temp files are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peak  # bench/peak.py: each process's own peak memory
from roomdrop import storage
from roomdrop.e2e import DeviceKey
from roomdrop.manager import FileTransferManager

MIB = 1024 * 1024
MB = 1_000_000
BLOCK = 64 * 1024
PATHS = (
    "baseline",
    "baseline+fsync",
    "engine",
    "engine-shuffled",
    "engine-no-write-back",
    "engine-e2e",
)
GOAL = 0.5


# --- children: one measured path each ------------------------------------------------


def run_baseline(source: Path, workdir: Path, fsync: bool) -> dict[str, Any]:
    dest = workdir / "baseline.out"
    start = time.perf_counter()
    whole = hashlib.sha256()
    with source.open("rb") as src, dest.open("wb") as dst:
        while block := src.read(BLOCK):
            hashlib.sha256(block).digest()
            whole.update(block)
            dst.write(block)
        if fsync:
            dst.flush()
            os.fsync(dst.fileno())
    whole.hexdigest()
    seconds = time.perf_counter() - start
    dest.unlink()
    return {"seconds": seconds}


def watch_final_sync(write_back: bool) -> list[float]:
    """The fsync before placing of every file this process places, as it is measured."""
    if not write_back:
        storage._WRITE_BACK_EVERY = 1 << 62
    seen: list[float] = []
    real = storage.PartFile.place

    def place(part: storage.PartFile, filename: str) -> Path:
        try:
            return real(part, filename)
        finally:
            if part.final_sync_s is not None:
                seen.append(part.final_sync_s)

    storage.PartFile.place = place  # type: ignore[method-assign]
    return seen


async def run_engine(
    source: Path,
    workdir: Path,
    shuffled: bool,
    seed: int,
    write_back: bool = True,
    e2e: bool = False,
) -> dict[str, Any]:
    final_syncs = watch_final_sync(write_back)
    size = source.stat().st_size
    manager = FileTransferManager(
        BLOCK, download_dir=workdir / "downloads", max_file_size=max(size, 500 * MIB)
    )
    start = time.perf_counter()
    keys: dict[str, Any] = {}
    if e2e:
        receiver = DeviceKey.generate()
        keys = {"device": DeviceKey.generate(), "receiver_key": receiver.public_text}
    offer = await manager.create_offer(source, "alice", "bob", "room", **keys)
    scan_seconds = time.perf_counter() - start
    tid = offer["transfer_id"]
    await manager.accept_transfer(tid)
    order = list(range(offer["total_chunks"]))
    if shuffled:
        random.Random(seed).shuffle(order)
    start = time.perf_counter()
    for index in order:
        frame = await manager.send_chunk(tid, index)
        await manager.receive_chunk(tid, index, frame)
    seconds = time.perf_counter() - start
    progress = await manager.get_progress(tid)
    await manager.close()
    saved = progress["saved_path"]
    if progress["status"] != "completed" or not saved:
        raise RuntimeError(f"transfer did not complete: {progress}")
    saved_path = Path(saved)
    if saved_path.stat().st_size != size:
        raise RuntimeError(f"saved file has {saved_path.stat().st_size} bytes, expected {size}")
    saved_path.unlink()
    return {"seconds": seconds, "scan_seconds": scan_seconds, "final_sync_s": final_syncs[-1]}


def child_main(path: str, source: Path, workdir: Path, seed: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if path.startswith("baseline"):
        result = run_baseline(source, workdir, fsync=path == "baseline+fsync")
    else:
        shuffled, write_back = path == "engine-shuffled", path != "engine-no-write-back"
        e2e = path == "engine-e2e"
        result = asyncio.run(run_engine(source, workdir, shuffled, seed, write_back, e2e))
    print(json.dumps(result))  # its peak: bench/peak.py's report


# --- parent: make the file, run the children, print the table -------------------------


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def make_random_file(path: Path, size_mb: int) -> None:
    with path.open("wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MIB))


def run_child(path: str, source: Path, workdir: Path, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", path, str(source), str(workdir)]
    report = workdir.with_name(f"{workdir.name}.peak")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with peak.start([*cmd, "--seed", str(seed)], report, **pipes) as proc:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{path} child failed:\n{err}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_kib"] = peak.reported_kib(report)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (median)")
    parser.add_argument("--seed", type=int, default=1, help="shuffle seed")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, source, workdir = args.child
        child_main(path, Path(source), Path(workdir), args.seed)
        return
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")

    size = args.size_mb * MIB
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    with tempfile.TemporaryDirectory(prefix="roomdrop-bench-") as tmp:
        source = Path(tmp) / "source.bin"
        make_random_file(source, args.size_mb)
        for r in range(args.repeat):
            for p in PATHS:  # interleaved, so drift touches every path alike
                runs[p].append(run_child(p, source, Path(tmp) / f"{p}-{r}", args.seed + r))

    def row(name: str, seconds: list[float], peaks: list[int]) -> tuple[str, float, float, int]:
        return name, size / MB / statistics.median(seconds), 0.0, max(peaks)

    rows = []
    for p in PATHS:
        rows.append(row(p, [x["seconds"] for x in runs[p]], [x["peak_kib"] for x in runs[p]]))
    engine_runs = runs["engine"] + runs["engine-shuffled"] + runs["engine-no-write-back"]
    scan = row(
        "create_offer scan",
        [x["scan_seconds"] for x in engine_runs],
        [x["peak_kib"] for x in engine_runs],
    )
    rows.insert(2, scan)
    base, base_peak = rows[0][1], rows[0][3]
    rates = {name: rate for name, rate, _, _ in rows}

    print(
        f"roomdrop engine benchmark: {args.size_mb} MiB file ({size:,} bytes), "
        f"{size // BLOCK:,} chunks of 64 KiB, median of {args.repeat} run(s) per path, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)"
    )
    print("source file is in the page cache (just written, never dropped); MB = 10^6 bytes")
    print(
        "each run is a fresh child process; peak memory = the highest over its runs of the "
        "child's own VmHWM (bench/peak.py)"
    )
    print()
    print(f"{'path':<20} {'MB/s':>9} {'x baseline':>11} {'peak memory':>12} {'x baseline':>11}")
    for name, rate, _, top in rows:
        print(
            f"{name:<20} {rate:>9.1f} {rate / base:>10.2f}x {top / 1024:>8.1f} MiB "
            f"{top / base_peak:>10.2f}x"
        )
    print()
    print(
        "create_offer scan: a separate pass before the first send_chunk, not in the engine "
        "rows (its peak memory is the engine children's)"
    )
    print("engine rows include one fsync of the whole file before placement; baseline does not")
    syncs = ", ".join(
        f"{p} {1000 * statistics.median(x['final_sync_s'] for x in runs[p]):.1f} ms"
        for p in PATHS
        if p.startswith("engine")
    )
    print(f"fsync before placing (median; load average {load_average()}): {syncs}")
    verdict = "; ".join(
        f"{name} {rates[name]:.1f} MB/s = {rates[name] / base:.2f} x baseline "
        f"({'>=' if rates[name] >= GOAL * base else '<'} {GOAL})"
        for name in ("engine", "engine-shuffled", "engine-e2e")
    )
    print(f"goal engine >= {GOAL} x baseline ({base:.1f} MB/s): {verdict}")


if __name__ == "__main__":
    main()
