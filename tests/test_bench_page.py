"""bench/page.py runs to its end on a small file and prints every row's figures.

As in tests/test_bench_links.py, the figures are the benchmark's, not the test's: what is
checked is that every row ran (two Chromium processes, the bare channels and roomdrop's
page on both sides, the CLI both ways) and printed real numbers, ratios that agree with
them, each process's own peak memory and one goal line per roomdrop row, so the figures
of docs/benchmarks.md can be measured again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

BENCH = Path(__file__).resolve().parent.parent / "bench"
COMMAND = [sys.executable, str(BENCH / "page.py")]
ROWS = {
    "bare page -> page": None,
    "roomdrop page -> page": "bare page -> page",
    "bare page -> aiortc": None,
    "roomdrop page -> CLI": "bare page -> aiortc",
    "bare aiortc -> page": None,
    "roomdrop CLI -> page": "bare aiortc -> page",
}
NUM = r"(\d+\.\d+)"
ROW = re.compile(
    rf"^({'|'.join(re.escape(r) for r in ROWS)}) +{NUM} +{NUM}x +{NUM} +(\S+) +(\S+) +(\S+)$"
)


@pytest.mark.timeout(420)
def test_page_benchmark_measures_every_row() -> None:
    # a short temp dir of its own: Chromium's singleton socket path must stay under
    # 108 bytes, which an xdist worker's pytest tmp_path can pass
    tmp_path = Path(tempfile.mkdtemp(prefix="rdbp-"))
    try:
        run_benchmark(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def run_benchmark(tmp_path: Path) -> None:
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("/usr/bin/chromium is missing: apt-get install chromium", pytrace=False)
    started = time.monotonic()
    done = subprocess.run(
        [*COMMAND, "--size-mb", "4", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, f"bench/page.py exited {done.returncode}:\n{done.stderr}"
    out = done.stdout
    print(f"bench/page.py took {took:.1f} s\n{out}")

    rows = {m[1]: m for line in out.splitlines() if (m := ROW.match(line))}
    assert set(rows) == set(ROWS), f"rows missing:\n{out}"
    for label, base in ROWS.items():
        row = rows[label]
        mb_s, ratio = float(row[2]), float(row[3])
        assert 0.1 < mb_s < 2000, row[0]
        if base is None:
            assert ratio == 1.0, row[0]
        else:
            base_mb_s = float(rows[base][2])
            rounding = 0.0051 + 0.051 * (1 + mb_s / base_mb_s) / base_mb_s
            assert abs(ratio - mb_s / base_mb_s) < rounding, row[0]
        assert 0 < float(row[4]) < 10_000, f"Chromium CPU ms/MB: {row[0]}"
        sender, receiver, server = (float(row[i]) for i in (5, 6, 7))
        # a Chromium renderer, or a Python process, or the server: each its own peak
        for role, value in (("sender", sender), ("receiver", receiver), ("server", server)):
            assert 10 < value < 2000, f"{role} peak MiB: {row[0]}"
        renderers = [sender] if "page ->" in label else []
        renderers += [receiver] if "-> page" in label else []
        assert all(v > 50 for v in renderers), f"a renderer below 50 MiB? {row[0]}"

    goals = [line for line in out.splitlines() if line.startswith("goal roomdrop ")]
    assert len(goals) == 3, out
    for line in goals:
        verdict = re.search(rf"{NUM} / {NUM} MB/s = {NUM}x \((met|NOT met)\)$", line)
        assert verdict is not None, line
        assert (verdict[4] == "met") == (float(verdict[3]) >= 0.85), line
    assert re.search(r"network namespace net:\[\d+\]", out), out
    assert os.readlink("/proc/self/ns/net") not in out, "the benchmark ran in the test's netns"
    assert not list(tmp_path.iterdir()), "the benchmark's temp dir was left behind"
