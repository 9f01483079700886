"""The bars as rich draws them (a real Console writing to a string): a paused transfer
says ``paused`` where its speed and time remaining were."""

from __future__ import annotations

import io
import time
from typing import Any

from rich.console import Console

from roomdrop.client.display import RichReporter


def snapshot(done: int, status: str) -> dict[str, Any]:
    return {
        "transfer_id": "t1",
        "filename": "movie.bin",
        "file_size": 10_000_000,
        "bytes_transferred": done,
        "status": status,
    }


def drawn(reporter: RichReporter) -> str:
    out = reporter.console.file
    assert isinstance(out, io.StringIO)
    out.truncate(0)
    out.seek(0)
    reporter.console.print(reporter.bars.make_tasks_table(reporter.bars.tasks))
    return out.getvalue()


def test_a_paused_transfer_shows_paused_not_its_last_speed() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    reporter = RichReporter(console)
    try:
        for done in (0, 2_000_000, 4_000_000):
            reporter.progress(snapshot(done, "active"), "relay")
            time.sleep(0.2)
        moving = drawn(reporter)
        assert "MB/s" in moving, moving
        assert "paused" not in moving

        reporter.progress(snapshot(4_000_000, "paused"), "relay")
        still = drawn(reporter)
        assert "paused" in still, still
        assert "MB/s" not in still, still
        assert "4.0/10.0 MB" in still, still

        reporter.progress(snapshot(5_000_000, "active"), "relay")
        assert "paused" not in drawn(reporter)
    finally:
        reporter.stop()


def test_a_send_to_several_names_the_receiver_on_each_line() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    reporter = RichReporter(console, receivers=True)
    try:
        for tid, receiver in (("t1", "bob"), ("t2", "carol")):
            reporter.progress(
                {**snapshot(1_000_000, "active"), "transfer_id": tid, "receiver_id": receiver},
                "relay",
            )
        lines = drawn(reporter)
        assert "movie.bin to bob [relay]" in lines, lines
        assert "movie.bin to carol [relay]" in lines, lines
    finally:
        reporter.stop()
    alone = RichReporter(Console(file=io.StringIO(), width=120, force_terminal=False))
    try:
        alone.progress({**snapshot(1_000_000, "active"), "receiver_id": "bob"}, "relay")
        assert "movie.bin [relay]" in drawn(alone)
    finally:
        alone.stop()
