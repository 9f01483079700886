"""The engine's memory does not grow with the file: 20 MB and 300 MB peak within 5 MB.

Each size runs in its own fresh child process (tests/_memory_child.py), so each peak memory
(the child's own ``VmHWM``) is that transfer's alone. The child writes its source in 1 MiB random
blocks, sends every chunk send_chunk -> receive_chunk through one manager holding both
ends, and re-hashes the saved file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).with_name("_memory_child.py")
MIB = 1024 * 1024
MAX_GROWTH_KIB = 5 * 1024  # 5 MB


def run_child(workdir: Path, size_mb: int) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-W", "error", str(CHILD), str(workdir), str(size_mb)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # hundreds of MB: do not keep them
    assert proc.returncode == 0, f"child for {size_mb} MiB failed:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def check_completed(result: dict[str, Any], size_mb: int) -> None:
    assert result["status"] == "completed", result
    assert result["size"] == size_mb * MIB
    assert result["total_chunks"] == size_mb * MIB // (64 * 1024)
    assert result["saved_size"] == size_mb * MIB
    assert result["offer_sha256"] == result["source_sha256"]
    assert result["saved_sha256"] == result["offer_sha256"]


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    small = run_child(tmp_path / "small", 20)
    big = run_child(tmp_path / "big", 300)
    check_completed(small, 20)
    check_completed(big, 300)
    growth = big["peak_kib"] - small["peak_kib"]
    print(  # shown with pytest -s; the README quotes it
        f"peak RSS: 20 MiB -> {small['peak_kib'] / 1024:.1f} MiB, "
        f"300 MiB -> {big['peak_kib'] / 1024:.1f} MiB"
    )
    assert abs(growth) < MAX_GROWTH_KIB, (
        f"peak RSS {small['peak_kib']} KiB for 20 MiB, "
        f"{big['peak_kib']} KiB for 300 MiB: grew {growth} KiB"
    )
