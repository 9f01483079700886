"""Child process for test_engine_memory: one transfer through the engine, then its peak RSS.

Usage: python tests/_memory_child.py WORKDIR SIZE_MB

Writes a random source file of SIZE_MB MiB in 1 MiB blocks (hashing it on the way), sends
every chunk through one FileTransferManager holding both ends (send_chunk -> receive_chunk),
re-hashes the saved file in 1 MiB blocks, and prints one JSON line with the results and
its own peak memory, ``VmHWM`` (KiB), not ``ru_maxrss``, which starts with the parent's
peak in it (bench/peak.py). Nothing here holds a whole file in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from roomdrop.manager import FileTransferManager

BLOCK = 1024 * 1024


def write_random_file(path: Path, size_mb: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size_mb):
            block = os.urandom(BLOCK)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


async def transfer(source: Path, download_dir: Path) -> dict[str, Any]:
    manager = FileTransferManager(64 * 1024, download_dir=download_dir)
    offer = await manager.create_offer(source, "alice", "bob", "room")
    tid = offer["transfer_id"]
    await manager.accept_transfer(tid)
    for index in range(offer["total_chunks"]):
        frame = await manager.send_chunk(tid, index)
        await manager.receive_chunk(tid, index, frame)
    progress = await manager.get_progress(tid)
    await manager.close()
    return {
        "offer_sha256": offer["sha256"],
        "total_chunks": offer["total_chunks"],
        "status": str(progress["status"]),
        "saved_path": progress["saved_path"],
    }


def own_peak_kib() -> int:
    """This process's own peak resident memory (as bench/peak.py reads it), in KiB."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])


def main() -> None:
    workdir, size_mb = Path(sys.argv[1]), int(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "source.bin"
    source_sha256 = write_random_file(source, size_mb)
    result = asyncio.run(transfer(source, workdir / "downloads"))
    saved = Path(result["saved_path"]) if result["saved_path"] else None
    result.update(
        size=source.stat().st_size,
        source_sha256=source_sha256,
        saved_size=saved.stat().st_size if saved else None,
        saved_sha256=file_sha256(saved) if saved else None,
        peak_kib=own_peak_kib(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
