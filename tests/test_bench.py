"""Every benchmark in bench/ runs to its end on a small file and prints a row for each of
its paths, next to the baseline it is measured against, and its goal line.

The figures are not checked: speed and memory are the benchmarks' to measure, not a
test's to assert. What is checked is that each harness still works with the code as it
is now (a real ``roomdrop serve``, real clients, real aiortc peers and a real
redis-server, as each benchmark starts them), so that the README's figures can be
measured again at any time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    ("name", "paths", "goal"),
    [
        ("engine", ["baseline ", "engine "], "goal engine >= 0.5 x baseline"),
        (
            "relay",
            ["bare relay ", "bare + sha256 ", "roomdrop relay "],
            "goal roomdrop relay >= 0.6 x bare relay",
        ),
        (
            "commands",
            ["bare data channel ", "roomdrop p2p ", "bare ws relay ", "roomdrop relay "],
            "goal roomdrop relay whole command >= 0.5 x bare ws relay",
        ),
        (
            "instances",
            ["one instance ", "one + Redis ", "two instances "],
            "summary: two instances",
        ),
    ],
)
def test_each_benchmark_runs_and_prints_its_paths_and_goal(
    name: str, paths: list[str], goal: str
) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--size-mb", "4", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"bench/{name}.py exited {done.returncode}:\n{done.stderr}"
    lines = done.stdout.splitlines()
    for path in paths:
        assert any(line.startswith(path) for line in lines), (
            f"bench/{name}.py printed no row for {path.strip()!r}:\n{done.stdout}"
        )
    assert any(line.startswith(goal) for line in lines), done.stdout
