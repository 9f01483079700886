"""``roomdrop send`` and ``roomdrop receive`` as functions: run a :class:`Session` on
uvloop, pause cleanly on Ctrl-C (SIGINT) or SIGTERM (a second one ends the command at
once, saying where each transfer was left), and turn the results into an exit status and
one line saying why.

Exit status: 0 every file arrived and verified; 1 a file did not (rejected, cancelled,
refused by policy, failed its check, infected, not scanned, a peer's key changed, ...;
a room that requires scanning and a receiver that does not); 2 the device key or the
trusted keys file cannot be used (:mod:`.configdir` says why); 3 the server could not be
reached or refused
the connection (at the start, or for ROOMDROP_RECONNECT_TIMEOUT after losing it, whatever
the command was waiting for); 130 interrupted (active transfers were paused first, unless
a second Ctrl-C came before that was done); 141 the output's reader went away (stdout or
stderr a pipe nobody reads: transfers paused likewise, see :mod:`.output`). The last line
says where each transfer was left, or that none was under way.
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
from roomdrop.client import scans as source_scans
from roomdrop.client.configdir import ConfigError
from roomdrop.client.outgoing import NobodyCame
from roomdrop.client.output import EXIT_OUTPUT_CLOSED
from roomdrop.client.session import Left, Session
from roomdrop.client.terminal import LineReader
from roomdrop.client.transfers import Result
from roomdrop.exceptions import RoomdropError, ScanRequired
from roomdrop.protocol.state import Status

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_SETUP",
    "EXIT_UNREACHABLE",
    "Outcome",
    "run_receive",
    "run_send",
]

EXIT_FAILED = 1
EXIT_SETUP = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
#: a second Ctrl-C still sends the pauses not sent yet, for at most this long
PAUSE_NOW_TIMEOUT = 0.5


@dataclass
class Outcome:
    exit_code: int
    message: str | None = None
    results: list[Result] = field(default_factory=list)


def run_send(
    paths: list[Path],
    to: str | list[str],
    *,
    transport: str,
    wait: float | None = None,
    store: bool = False,
    **common: Any,
) -> Outcome:
    """``wait``: give up (exit 1) if ``to`` has not joined the room after that many
    seconds; ``None``: keep waiting. ``store``: keep each file in the server's store
    for ``to`` (delivered when they join)."""
    scans = source_scans.take(paths)  # begun by roomdrop.cli, or now

    async def send(session: Session) -> list[Result]:
        session.outgoing.join_wait = wait
        session.outgoing.store = store
        return await session.send_files(paths, to, scans)

    tune_allocator()
    return uvloop.run(_main(send, {"transport": transport, **common}))


def run_receive(out: Path, *, count: int | None, yes: bool, **common: Any) -> Outcome:
    quarantine = common["settings"].quarantine_dir
    for directory, what in ((out, "received files"), (quarantine, "infected files")):
        try:
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return Outcome(EXIT_FAILED, f"cannot use {directory} for {what}: {exc.strerror}")
    ask = None if yes else _asker(common["reporter"])

    async def receive(session: Session) -> list[Result]:
        if session.scanner is not None:
            await session.scanner.check()  # a note: it answers, or files wait for it
        return await session.receive_files(count)

    tune_allocator()
    return uvloop.run(_main(receive, {"download_dir": out, "ask": ask, **common}, receiving=True))


def _asker(reporter: Any) -> Callable[[dict[str, Any]], Awaitable[bool]]:
    """Ask about each offer in turn: the whole offer and ``accept? [y/N]`` on screen
    (``reporter.asking``), the answer a line of stdin. On a terminal, what was typed
    before the question is discarded: it does not answer it (a stray ``clear`` would
    have rejected a file)."""
    lock = asyncio.Lock()
    reader = LineReader(sys.stdin.fileno())

    async def ask(offer: dict[str, Any]) -> bool:
        async with lock:
            # what was typed ahead is dropped right before the question shows
            with reporter.asking(offer, reader.discard_typed_ahead):
                line = await reader.line()
            return line.strip().lower() in ("y", "yes")

    return ask


async def _main(
    body: Callable[[Session], Awaitable[list[Result]]],
    options: dict[str, Any],
    *,
    receiving: bool = False,
) -> Outcome:
    """Run ``body``. The first Ctrl-C (or SIGTERM) pauses what is under way and leaves;
    a second one, while that goes on, ends the command at once (:func:`_pause_and_leave`).
    The handlers stay until the loop closes, so a Ctrl-C while the command ends is not a
    ``KeyboardInterrupt`` somewhere in it."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupts = 0
    output_closed = False
    again: asyncio.Future[None] = loop.create_future()

    def interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            task.cancel()
        elif not again.done():
            again.set_result(None)

    def closed() -> None:  # the reporter's stream lost its reader: as a Ctrl-C
        nonlocal output_closed
        output_closed = True
        if not interrupts:
            interrupt()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    reporter: Any = options.get("reporter")
    if hasattr(reporter, "on_closed"):
        reporter.on_closed = lambda: loop.call_soon_threadsafe(closed)

    async def leave(session: Session, outcome: Outcome) -> Outcome:
        """Close without pausing; a Ctrl-C meanwhile changes nothing: the outcome is known."""
        try:
            await session.close(pause=False)
        except asyncio.CancelledError:
            if not interrupts:
                raise
            task.uncancel()
        return outcome

    try:
        session = Session(**options)
    except ConfigError as exc:
        return Outcome(EXIT_SETUP, str(exc))
    except ValueError as exc:
        return Outcome(EXIT_UNREACHABLE, str(exc))
    try:
        await session.start()
        results = await session.until_gone(body(session))
    except asyncio.CancelledError:
        if not interrupts:
            raise
        task.uncancel()
        outcome = await _pause_and_leave(session, again)
        if output_closed:
            why = (outcome.message or "").split(": ", 1)[-1]
            return Outcome(EXIT_OUTPUT_CLOSED, f"the output's reader went away: {why}")
        return outcome
    except NobodyCame as exc:
        return await leave(session, Outcome(EXIT_FAILED, str(exc)))
    except ScanRequired as exc:  # the room takes only receivers that scan
        return await leave(session, Outcome(EXIT_FAILED, f"{exc.code}: {exc}"))
    except RoomdropError as exc:
        unreachable = Outcome(EXIT_UNREACHABLE, f"{exc.code}: {exc}")
        with contextlib.suppress(Exception):
            await leave(session, unreachable)
        return unreachable
    # an offer the person at this receiver declined is their choice, not a failure
    failed = [r for r in results if not r.ok and not (receiving and r.declined)]
    if failed:
        several = not receiving and len({r.peer for r in results}) > 1
        why = "; ".join(
            f"{r.filename}{f' to {r.peer}' if several else ''}: {r.status}: {r.error or r.status}"
            for r in failed
        )
        return await leave(session, Outcome(EXIT_FAILED, why, results))
    return await leave(session, Outcome(0, None, results))


async def _pause_and_leave(session: Session, again: asyncio.Future[None]) -> Outcome:
    """The graceful close after a Ctrl-C: what is under way is paused, then the session
    leaves. If ``again`` (a second Ctrl-C) comes first, the close is dropped where it is
    and the command ends at once: the pauses closing had not sent yet are sent (at most
    ``PAUSE_NOW_TIMEOUT``), nothing waited for. Nothing on disk needs the close (a part
    file's record never claims a chunk the file lacks), and the server pauses whatever
    this end could not as its connection drops (docs/protocol.md §11.8)."""
    if not again.done():
        closing = asyncio.ensure_future(session.close(pause=True))
        await asyncio.wait({closing, again}, return_when=asyncio.FIRST_COMPLETED)
        if not again.done():
            closing.result()  # raises what went wrong, if anything did
            return Outcome(EXIT_INTERRUPTED, "interrupted: " + describe_left(session.left()))
        closing.cancel()
    with contextlib.suppress(asyncio.TimeoutError):  # what closing had not paused yet
        await asyncio.wait_for(session.pause_now(), PAUSE_NOW_TIMEOUT)
    return Outcome(EXIT_INTERRUPTED, "interrupted again: " + describe_left(session.left()))


def describe_left(left: list[Left]) -> str:
    """Where each transfer was left, in words, for the command's last line."""
    if not left:
        return "no transfer was under way"
    parts = []
    resumable = False
    for t in left:
        kept = " (part file kept)" if not t.sending and t.status is not Status.PENDING else ""
        if t.status is Status.PENDING:
            parts.append(f"the offer of {t.filename} was left unanswered")
            continue
        resumable = True
        if t.status is Status.PAUSED or t.pause_sent:
            parts.append(f"the transfer of {t.filename} was left paused at {t.percent} %{kept}")
        else:
            parts.append(
                f"the transfer of {t.filename} was left at {t.percent} %, not paused by this "
                f"command (the server pauses it as the connection drops){kept}"
            )
    then = "; run the same command to resume " + ("it" if len(left) == 1 else "them")
    return "; ".join(parts) + (then if resumable else "")
