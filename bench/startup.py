"""Benchmark: the fixed costs around a transfer, as the commands show them.

    .venv/bin/python bench/startup.py [--size-mb 100] [--repeat 5] [--transport relay]

Run it inside a loopback-only namespace, as the tests are:
``unshare --net sh -c 'ip link set lo up && .venv/bin/python bench/startup.py'``.

* ``roomdrop --version`` (the console script next to this Python) and ``roomdrop send
  --help``: wall time from exec to exit, median of ``--repeat`` runs;
* a real ``roomdrop send FILE --json`` to a ``roomdrop receive --yes --count 1 --json``
  that already joined the room of a real ``roomdrop serve`` (all on 127.0.0.1): seconds
  from the sender's exec to each of its milestones as its stdout shows them, the moment
  each line is read (``joined room``, ``offered``, its first ``progress`` line, its
  ``result``) and to its exit; and the receiver's ``elapsed_s`` (from the accept to the
  verified end: the transfer itself). Median of ``--repeat`` runs, each with fresh
  commands (one server for all).

The load average is printed with the figures: on a loaded machine they are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import relay  # bench/relay.py: free ports, waiting for a server, random files

HOST = "127.0.0.1"
MIB = 1024 * 1024
ROOMDROP = [sys.executable, "-m", "roomdrop.cli"]
CONSOLE = str(Path(sys.executable).with_name("roomdrop"))
MILESTONES = ("joined", "offered", "first progress", "result", "exit")


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def milestone(line: dict[str, Any]) -> str | None:
    event, message = line.get("event"), str(line.get("message", ""))
    if event == "note" and message.startswith("joined room"):
        return "joined"
    if event == "note" and message.startswith("offered"):
        return "offered"
    if event == "progress":
        return "first progress"
    if event == "result":
        return "result"
    return None


def send_once(
    server: str, tokens: dict[str, str], source: Path, out: Path, transport: str, env: Any
) -> dict[str, float]:
    common = ["--server", server, "--room", "startup", "--json"]
    receiver = subprocess.Popen(
        [
            *ROOMDROP,
            "receive",
            *common,
            "--token",
            tokens["bob"],
            "--out",
            str(out),
            "--yes",
            "--count",
            "1",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert receiver.stdout is not None
        while milestone(json.loads(receiver.stdout.readline() or "{}")) != "joined":
            if receiver.poll() is not None:
                raise SystemExit("the receiver exited before joining")
        start = time.perf_counter()
        sender = subprocess.Popen(
            [
                *ROOMDROP,
                "send",
                str(source),
                *common,
                "--token",
                tokens["alice"],
                "--to",
                "bob",
                "--transport",
                transport,
            ],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert sender.stdout is not None
        seen: dict[str, float] = {}
        for raw in iter(sender.stdout.readline, b""):
            name = milestone(json.loads(raw))
            if name is not None and name not in seen:
                seen[name] = time.perf_counter() - start
        if sender.wait(120) != 0:
            raise SystemExit(f"the sender exited with {sender.returncode}")
        seen["exit"] = time.perf_counter() - start
        rest = receiver.communicate(timeout=60)[0].decode().splitlines()
        results = [json.loads(x) for x in rest if '"result"' in x]
        if receiver.returncode != 0 or not results or results[-1]["status"] != "completed":
            raise SystemExit(f"the receiver exited with {receiver.returncode}: {rest[-3:]}")
        seen["transfer (receiver's elapsed_s)"] = float(results[-1]["elapsed_s"])
        for received in out.iterdir():
            if received.is_file():
                received.unlink()
        return seen
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=5, help="runs (median)")
    parser.add_argument("--transport", choices=("relay", "p2p", "auto"), default="relay")
    args = parser.parse_args()
    load = load_average()
    version = wall([CONSOLE, "--version"], args.repeat)
    version_m = wall([*ROOMDROP, "--version"], args.repeat)
    help_s = wall([CONSOLE, "send", "--help"], args.repeat)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    env["ROOMDROP_ICE_HOSTS"] = HOST
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="roomdrop-startup-bench-") as tmp:
        source, out = Path(tmp) / "source.bin", Path(tmp) / "out"
        out.mkdir()
        relay.make_random_file(source, args.size_mb)
        secret, port = secrets.token_urlsafe(32), relay.free_port()
        serve_env = {**env, "ROOMDROP_SECRET": secret}
        serve_env["ROOMDROP_MAX_FILE_SIZE"] = str(max(args.size_mb * MIB, 500 * MIB))
        log = Path(tmp) / "server.log"
        with log.open("wb") as err:
            server = subprocess.Popen(
                [
                    *ROOMDROP,
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--data-dir",
                    str(Path(tmp) / "data"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=serve_env,
            )
        try:
            relay.wait_healthy(port, server, log)
            from roomdrop.server.auth import TokenAuthority

            authority = TokenAuthority(secret)
            tokens = {user: authority.issue(user, 3600) for user in ("alice", "bob")}
            url = f"http://{HOST}:{port}"
            for _ in range(args.repeat):
                runs.append(send_once(url, tokens, source, out, args.transport, env))
        finally:
            server.terminate()
            server.wait(30)
    print(
        f"roomdrop start-up and fixed costs: {args.size_mb} MiB file, --transport "
        f"{args.transport}, median of {args.repeat} run(s), Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPU(s), load average {load} at the start, {load_average()} at "
        "the end"
    )
    print(f"roomdrop --version (console script)  {version:.3f} s")
    print(f"python -m roomdrop.cli --version     {version_m:.3f} s")
    print(f"roomdrop send --help                 {help_s:.3f} s")
    print("roomdrop send, seconds from exec (the receiver already joined):")
    for name in (*MILESTONES, "transfer (receiver's elapsed_s)"):
        values = [r[name] for r in runs if name in r]
        if values:
            each = " ".join(f"{v:.3f}" for v in values)
            print(f"  {name:<32} {statistics.median(values):.3f}   ({each})")


if __name__ == "__main__":
    main()
