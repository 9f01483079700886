"""Benchmark: one file to several receivers at once over the relay (``roomdrop send FILE
--to @room``), against one receiver and a bare WebSocket relay in the same run.

    unshare --net --mount sh -c 'ip link set lo up && exec .venv/bin/python bench/receivers.py'
        [--size-mb 50] [--receivers 1,5,10] [--repeat 1]

Creates a random file of ``--size-mb`` MiB in a temp dir; then, for each run (the rows
interleaved, ``--repeat`` times, so that drift touches every row alike):

* bare ws relay: ``bench/commands.py``'s bare WebSocket relay, one sender, one receiver,
  no hashing, no encryption: the relay's floor on this machine.
* N receivers (each of ``--receivers``): a fresh ``roomdrop serve``; N ``roomdrop receive
  --yes --count 1 --json``, each as a user of its own with its own device key
  (``ROOMDROP_CONFIG_DIR``), all joined (each said ``joined room``); then one ``roomdrop
  send FILE --to @room --transport relay --json``. Every receiver's copy must be the
  source, and the sender must print one ``completed`` result per receiver.

Printed per row: the sender's upload (the relay bytes of its results, summed: the chunks
it sent, re-sends included) as a multiple of the file; the aggregate delivered MB/s (N x
the file / the slowest receiver's transfer phase, accept -> verified end, as
``bench/commands.py`` measures it) and its ratio to the bare relay's one-receiver MB/s;
the whole command's seconds (the sender's start -> every command exited); each process's
own peak memory (the sender's and each receiver's VmHWM as it exits, ``bench/peak.py``;
the server's from /proc at the end), the receivers' highest; and the ratio of each to the
one-receiver row's.

The issue's goal is that the sender uploads one file's worth whatever the number of
receivers (the server fanning each chunk out). Today each receiver's transfer is sealed
with a content key of its own, so the chunks differ per receiver and the sender uploads
each receiver's: the goal line says so with the figure. MB = 10^6 bytes, MiB = 2^20.
Only 127.0.0.1 is used. Every process is stopped and the temp dir deleted at the end,
on error too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import commands  # bench/commands.py: processes, the bare ws relay, the checks
import relay  # bench/relay.py: ports, files, /proc readings

MB, MIB = commands.MB, commands.MIB
HOST, ROOM, SENDER = commands.HOST, commands.ROOM, commands.SENDER
Failed = commands.Failed


@dataclass
class Run:
    transfer_s: float
    whole_s: float
    upload_bytes: int
    sender_kib: int
    receiver_kib: int
    server_kib: int


@dataclass
class Row:
    receivers: int  # 0: the bare relay
    size: int
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        if not self.receivers:
            return "bare ws relay"
        return f"{self.receivers} receiver{'s' if self.receivers > 1 else ''}"

    @property
    def aggregate(self) -> float:
        n = max(self.receivers, 1)
        return n * self.size / MB / statistics.median(r.transfer_s for r in self.runs)

    @property
    def uploads(self) -> float:
        return statistics.median(r.upload_bytes for r in self.runs) / self.size

    def peak(self, attr: str) -> int:
        return max(getattr(r, attr) for r in self.runs)


class Bench(commands.Bench):
    def receivers(self, n: int, source: Path) -> Run:
        self.count += 1
        workdir = self.tmp / f"run-{self.count}-{n}"
        workdir.mkdir()
        group = commands.Group()
        try:
            return self._receivers(group, n, source, workdir)
        except Failed as exc:
            raise group.fail(f"{n} receivers, run {self.count}", exc) from None
        finally:
            group.stop_all()
            for received in workdir.rglob("*"):  # keep the temp dir small between runs
                if received.is_file() and received.stat().st_size > MIB:
                    received.unlink()

    def _receivers(self, group: commands.Group, n: int, source: Path, workdir: Path) -> Run:
        from roomdrop.server.auth import TokenAuthority

        size = source.stat().st_size
        port = relay.free_port()
        env = commands.clean_env(
            ROOMDROP_SECRET=self.secret, ROOMDROP_MAX_FILE_SIZE=str(max(size, 500 * MIB))
        )
        serve = ["serve", "--host", HOST, "--port", str(port), "--data-dir", str(workdir / "data")]
        server = self.start_server(group, [*commands.ROOMDROP, *serve], workdir, env)
        authority = TokenAuthority(self.secret)
        common = ["--server", f"http://{HOST}:{port}", "--room", ROOM, "--json"]
        receivers = []
        for i in range(n):
            user = f"r{i}"
            out = workdir / user
            out.mkdir()
            cmd = [*commands.ROOMDROP, "receive", *common, "--token", authority.issue(user, 3600)]
            cmd += ["--out", str(out), "--yes", "--count", "1"]
            child_env = commands.clean_env(
                ROOMDROP_ICE_HOSTS=HOST, ROOMDROP_CONFIG_DIR=str(workdir / "config" / user)
            )
            receivers.append(
                group.start(
                    user,
                    cmd,
                    workdir / f"{user}.log",
                    env=child_env,
                    stdout=workdir / f"{user}.out",
                )
            )
        for receiver in receivers:
            joined(receiver)
        send = [*commands.ROOMDROP, "send", str(source), *common, "--to", "@room"]
        send += ["--token", authority.issue(SENDER, 3600), "--transport", "relay"]
        start = commands.now()
        sender = group.start(
            "sender",
            send,
            workdir / "sender.log",
            env=commands.clean_env(
                ROOMDROP_ICE_HOSTS=HOST, ROOMDROP_CONFIG_DIR=str(workdir / "config" / SENDER)
            ),
            stdout=workdir / "sender.out",
        )
        group.wait_exit([sender, *receivers], self.timeout)
        server_kib = self.server_peak(server)
        sent = results_of(sender)
        if sorted(r["peer"] for r in sent) != sorted(c.name for c in receivers):
            raise Failed(f"the sender's results name {[r['peer'] for r in sent]}")
        elapsed = []
        for receiver in receivers:
            [got] = results_of(receiver)
            elapsed.append(float(got["elapsed_s"]))
            self.check_copy(source, workdir / receiver.name / source.name)
        bad = [r for r in sent if r["status"] != "completed"]
        if bad:
            raise Failed(f"not completed: {bad}")
        return Run(
            max(elapsed),
            max(c.ended for c in (sender, *receivers)) - start,
            sum(int(r["bytes_via"].get("relay", 0)) for r in sent),
            sender.peak_kib,
            max(c.peak_kib for c in receivers),
            server_kib,
        )


def joined(receiver: commands.Child, timeout: float = 60) -> None:
    """Until ``receiver`` says it joined the room."""
    assert receiver.stdout_path is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not receiver.running:
            raise Failed(f"{receiver.name} exited with {receiver.exit_code} before joining")
        for line in receiver.stdout_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                said = json.loads(line)
                if said.get("event") == "note" and said["message"].startswith("joined room"):
                    return
        time.sleep(0.02)
    raise Failed(f"{receiver.name} did not join the room in {timeout:.0f} s")


def results_of(child: commands.Child) -> list[dict[str, Any]]:
    assert child.stdout_path is not None
    found = []
    for line in child.stdout_path.read_text(errors="replace").splitlines():
        obj = json.loads(line)
        if isinstance(obj, dict) and obj.get("event") == "result":
            found.append(obj)
    return found


def print_table(rows: list[Row], load: str) -> None:
    bare = rows[0]
    one = next((r for r in rows if r.receivers == 1), None)
    print(f"load average at the start: {load}; at the end: {commands.load_average()}")
    head = (
        f"{'row':<15} {'file':>8} {'upload':>7} {'MB/s':>8} {'x bare':>7} "
        f"{'sender':>7} {'server':>7} {'recv max':>8} {'s':>6}"
    )
    print(head)
    print(f"{'':<15} {'':>8} {'x file':>7} {'(all)':>8} {'':>7} {'MiB':>7} {'MiB':>7} {'MiB':>8}")
    for row in rows:
        upload = "-" if not row.receivers else f"{row.uploads:.2f}"
        whole = statistics.median(r.whole_s for r in row.runs)
        print(
            f"{row.label:<15} {row.size // MIB:>4} MiB {upload:>7} {row.aggregate:>8.1f} "
            f"{row.aggregate / bare.aggregate:>6.2f}x {commands.mib(row.peak('sender_kib')):>7} "
            f"{commands.mib(row.peak('server_kib')):>7} "
            f"{commands.mib(row.peak('receiver_kib')):>8} {whole:>6.2f}"
        )
    print("\nseconds per run (transfer phase of the slowest receiver):")
    for row in rows:
        print(f"  {row.label:<15} " + ", ".join(f"{r.transfer_s:.2f}" for r in row.runs))
    if one is not None:
        parts = []
        for row in rows:
            if row.receivers <= 1:
                continue
            for who, attr in (("sender", "sender_kib"), ("server", "server_kib")):
                ratio = row.peak(attr) / one.peak(attr)
                parts.append(
                    f"{row.label} {who} {commands.mib(row.peak(attr))} / "
                    f"{commands.mib(one.peak(attr))} MiB = {ratio:.2f}x"
                )
        print("peak memory against the one receiver, same run: " + ("; ".join(parts) or "-"))
    most = max(rows[1:], key=lambda r: r.receivers)
    met = all(r.uploads <= 1.05 for r in rows[1:])
    print(
        f"goal: the sender uploads one file's worth whatever the receivers: "
        f"{'met' if met else 'NOT met'} ({most.label}: the sender uploaded "
        f"{most.uploads:.2f}x the file; each receiver's chunks are sealed with its own "
        "content key, so the server cannot fan one upload out)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--receivers", default="1,5,10")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    try:
        counts = sorted({int(x) for x in args.receivers.split(",")})
    except ValueError:
        parser.error("--receivers: comma-separated whole numbers, e.g. 1,5,10")
    if not counts or counts[0] < 1:
        parser.error("--receivers: at least 1 each")
    load = commands.load_average()
    with tempfile.TemporaryDirectory(prefix="roomdrop-bench-receivers-") as tmp:
        root = Path(tmp)
        source = root / "file.bin"
        relay.make_random_file(source, args.size_mb)
        size = source.stat().st_size
        bench = Bench(root, secrets.token_urlsafe(32), args.timeout)
        rows = [Row(0, size), *(Row(n, size) for n in counts)]
        try:
            for _ in range(args.repeat):
                for row in rows:
                    if row.receivers:
                        row.runs.append(bench.receivers(row.receivers, source))
                    else:
                        bare = bench.run("bare-ws", source)
                        row.runs.append(
                            Run(
                                bare.transfer_s,
                                bare.whole_s,
                                size,
                                bare.sender_kib,
                                bare.receiver_kib,
                                bare.server_kib,
                            )
                        )
        except Failed as exc:
            print(f"failed: {exc}", file=sys.stderr)
            sys.exit(1)
        print_table(rows, load)
    os.sync()


if __name__ == "__main__":
    main()
