"""magic-wormhole on loopback: the ``magic-wormhole`` row of ``bench/commands.py``.

magic-wormhole (PyPI ``magic-wormhole``), its mailbox server
(``magic-wormhole-mailbox-server``) and its transit relay
(``magic-wormhole-transit-relay``) are installed from PyPI at run time into a venv of
their own (``--wormhole-venv DIR``, default: in the benchmark's temp dir), never into
roomdrop's: they are no dependency of roomdrop, and their Twisted may clash with
anything. ``python bench/wormhole.py --install DIR`` makes that venv beforehand:
``scripts/test`` makes ``.venv-wormhole`` so, before the tests run without a network.
A run:

* ``twist wormhole-mailbox --port tcp:P:interface=127.0.0.1`` and ``twist transitrelay
  --port tcp:Q:interface=127.0.0.1``, both waited for until they accept connections;
* ``wormhole --appid roomdrop-bench --relay-url ws://127.0.0.1:P/v1 --transit-helper
  tcp:127.0.0.1:Q receive --accept-file --hide-progress -o DIR/received.bin CODE``,
  waited for until the mailbox holds its first (PAKE) message: it is waiting for the
  sender, as roomdrop's receiver is once it joined the room;
* then ``wormhole ... send --code CODE --hide-progress --no-qr FILE``: the whole command
  is from launching it to both having exited, as for roomdrop. The received file must
  be the source, byte for byte.

There is no transfer phase of its own in the table (the commands do not report one).
Peak memory: the sender's and receiver's own (bench/peak.py, run by the venv's Python),
the "server" the mailbox's and the transit relay's added up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peak

PACKAGES = ("magic-wormhole", "magic-wormhole-mailbox-server", "magic-wormhole-transit-relay")
MODULES = ("wormhole", "wormhole_mailbox_server", "wormhole_transit_relay")
HOST = "127.0.0.1"
APPID = "roomdrop-bench"
CODE = "7-roomdrop-bench"


def installed(venv: Path) -> str | None:
    """The versions of what is installed in ``venv`` (one line), or None if it lacks any."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    code = (
        "import importlib.metadata as m, sys\n"
        f"import {', '.join(MODULES)}\n"
        f"print(', '.join(p + ' ' + m.version(p) for p in {PACKAGES!r}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure(venv: Path, timeout: float = 900) -> str:
    """Install magic-wormhole and its servers into ``venv`` unless they are there; one
    line saying what is installed and how long installing took (0 s: it was there)."""
    start = time.monotonic()
    versions = installed(venv)
    if versions is None:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=timeout)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        done = subprocess.run(
            [*pip, "--disable-pip-version-check", *PACKAGES],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        versions = installed(venv)
        if done.returncode != 0 or versions is None:
            raise RuntimeError(
                f"could not install {', '.join(PACKAGES)} into {venv}:\n{done.stderr[-3000:]}"
            )
    return f"{versions} in {venv} (installing took {time.monotonic() - start:.0f} s)"


def wait_listening(port: int, alive: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for port {port} exited before listening")
        with socket.socket() as s, contextlib.suppress(OSError):
            s.settimeout(1)
            s.connect((HOST, port))
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:.0f} s")


def wait_receiver_waiting(db: Path, alive: Callable[[], bool], timeout: float = 60) -> None:
    """Until the mailbox holds a message (the receiver's PAKE): it waits for the sender."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the receiver exited before it was waiting")
        uri = f"file:{db}?mode=ro"
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(uri, uri=True)) as con,
        ):
            (count,) = con.execute("SELECT COUNT(*) FROM messages").fetchone()
            if count:
                return
        time.sleep(0.02)
    raise RuntimeError(f"the receiver did not reach the mailbox in {timeout:.0f} s")


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROOMDROP_", "WORMHOLE_", "PYTHON", "VIRTUAL_ENV"))
    }


def run(
    group: Any,
    venv: Path,
    source: Path,
    workdir: Path,
    timeout: float,
    now: Callable[[], float],
    free_port: Callable[[], int],
) -> dict[str, Any]:
    """One run (``group``: bench/commands.py's Group); its whole-command seconds, and the
    peaks in KiB. Raises RuntimeError (the caller's Failed) when anything goes wrong."""
    python = str(venv / "bin" / "python")
    twist = str(venv / "bin" / "twist")
    env = clean_env()
    mailbox_port, transit_port = free_port(), free_port()
    db = workdir / "mailbox.sqlite"
    mailbox = group.start(
        "mailbox",
        [
            twist,
            "wormhole-mailbox",
            f"--port=tcp:{mailbox_port}:interface={HOST}",
            f"--channel-db={db}",
        ],
        workdir / "mailbox.log",
        env=env,
        measured=False,
    )
    transit = group.start(
        "transit",
        [twist, "transitrelay", f"--port=tcp:{transit_port}:interface={HOST}"],
        workdir / "transit.log",
        env=env,
        measured=False,
    )
    wait_listening(mailbox_port, lambda: mailbox.running)
    wait_listening(transit_port, lambda: transit.running)

    common = ["--appid", APPID, "--relay-url", f"ws://{HOST}:{mailbox_port}/v1"]
    common += ["--transit-helper", f"tcp:{HOST}:{transit_port}"]
    dest = workdir / "received.bin"

    def measured(name: str, args: list[str]) -> Any:
        report = workdir / f"{name}.peak"
        cmd = [python, peak.HERE, str(report), "-m", "wormhole", *common, *args]
        out = workdir / f"{name}.out"
        child = group.start(name, cmd, workdir / f"{name}.log", env=env, stdout=out, measured=False)
        child.peak_report = report  # run under bench/peak.py by the venv's own Python
        return child

    receive = ["receive", "--accept-file", "--hide-progress", "-o", str(dest), CODE]
    receiver = measured("receiver", receive)
    wait_receiver_waiting(db, lambda: receiver.running)
    start = now()
    sender = measured("sender", ["send", "--code", CODE, "--hide-progress", "--no-qr", str(source)])
    group.wait_exit([sender, receiver], timeout)
    whole = max(sender.ended, receiver.ended) - start
    servers = sum(peak.vm_hwm_kib(c.pid) for c in (mailbox, transit) if c.running)
    return {
        "whole_s": whole,
        "sender_kib": sender.peak_kib,
        "receiver_kib": receiver.peak_kib,
        "server_kib": servers,
        "dest": str(dest),
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Install magic-wormhole for bench/commands.py.")
    parser.add_argument("--install", type=Path, required=True, metavar="DIR", help="the venv")
    args = parser.parse_args()
    try:
        print(f"magic-wormhole: {ensure(args.install.resolve())}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise SystemExit(f"magic-wormhole: {exc}") from None


if __name__ == "__main__":
    main()
