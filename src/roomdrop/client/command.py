"""``roomdrop send`` and ``roomdrop receive`` as functions: run a :class:`Session` on
uvloop, pause cleanly on Ctrl-C (SIGINT) or SIGTERM, and turn the results into an exit
status and one line saying why.

Exit status: 0 every file arrived and verified; 1 a file did not (rejected, cancelled,
refused by policy, failed its check, ...); 3 the server could not be reached or refused
the connection (at the start, or for ROOMDROP_RECONNECT_TIMEOUT after losing it, whatever
the command was waiting for); 130 interrupted (active transfers were paused first); 141
the output's reader went away (stdout or stderr a pipe nobody reads: transfers paused
likewise, see :mod:`.output`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from roomdrop.allocator import tune_allocator
from roomdrop.client.output import EXIT_OUTPUT_CLOSED
from roomdrop.client.session import Session
from roomdrop.client.transfers import Result
from roomdrop.exceptions import RoomdropError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_UNREACHABLE",
    "Outcome",
    "run_receive",
    "run_send",
]

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


@dataclass
class Outcome:
    exit_code: int
    message: str | None = None
    results: list[Result] = field(default_factory=list)


def run_send(paths: list[Path], to: str, *, transport: str, **common: Any) -> Outcome:
    tune_allocator()
    return uvloop.run(
        _main(lambda session: session.send_files(paths, to), {"transport": transport, **common})
    )


def run_receive(out: Path, *, count: int | None, yes: bool, **common: Any) -> Outcome:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Outcome(EXIT_FAILED, f"cannot use {out} for received files: {exc.strerror}")
    ask = None if yes else _asker(common["reporter"])
    tune_allocator()
    return uvloop.run(
        _main(
            lambda session: session.receive_files(count),
            {"download_dir": out, "ask": ask, **common},
            receiving=True,
        )
    )


def _asker(reporter: Any) -> Callable[[dict[str, Any]], Awaitable[bool]]:
    lock = asyncio.Lock()

    async def ask(offer: dict[str, Any]) -> bool:
        async with lock:
            reporter.offer(offer)
            print("accept? [y/N] ", end="", file=sys.stderr, flush=True)
            line = await asyncio.to_thread(sys.stdin.readline)
            return line.strip().lower() in ("y", "yes")

    return ask


async def _main(
    body: Callable[[Session], Awaitable[list[Result]]],
    options: dict[str, Any],
    *,
    receiving: bool = False,
) -> Outcome:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted = False
    output_closed = False
    running = True

    def interrupt() -> None:
        nonlocal interrupted
        if running and not interrupted:
            interrupted = True
            task.cancel()

    def closed() -> None:  # the reporter's stream lost its reader
        nonlocal output_closed
        output_closed = True
        interrupt()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    reporter: Any = options.get("reporter")
    if hasattr(reporter, "on_closed"):
        reporter.on_closed = lambda: loop.call_soon_threadsafe(closed)
    try:
        session = Session(**options)
    except ValueError as exc:
        return Outcome(EXIT_UNREACHABLE, str(exc))
    try:
        await session.start()
        results = await session.until_gone(body(session))
        running = False
    except asyncio.CancelledError:
        running = False
        if not interrupted:
            raise
        task.uncancel()
        await session.close(pause=True)
        if output_closed:
            return Outcome(
                EXIT_OUTPUT_CLOSED,
                "the output's reader went away: transfers under way were paused; "
                "run the same command again to resume them",
            )
        return Outcome(
            EXIT_INTERRUPTED,
            "interrupted: transfers under way were paused; "
            "run the same command again to resume them",
        )
    except RoomdropError as exc:
        running = False
        with contextlib.suppress(Exception):
            await session.close(pause=False)
        return Outcome(EXIT_UNREACHABLE, f"{exc.code}: {exc}")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    await session.close(pause=False)
    # an offer the person at this receiver declined is their choice, not a failure
    failed = [r for r in results if not r.ok and not (receiving and r.declined)]
    if failed:
        why = "; ".join(f"{r.filename}: {r.status}: {r.error or r.status}" for r in failed)
        return Outcome(EXIT_FAILED, why, results)
    return Outcome(0, None, results)
