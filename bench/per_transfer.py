"""roomdrop relay memory per active transfer: the server's own peak memory with one
end-to-end encrypted transfer, then with N at once, each in a room of its own.

Every run is a fresh ``roomdrop serve`` on 127.0.0.1 and, per transfer, one receiver
and one sender process speaking the protocol as bench/relay.py's roomdrop clients do
(offer with the content key sealed to the receiver, one sealed binary frame per chunk,
the receiver opening, writing and verifying). All receivers are joined before any sender
starts, so the N transfers overlap. The server's peak is its own VmHWM; what each extra
active transfer costs it is (peak with N - peak with 1) / (N - 1), printed with the
seed's budget (under 10 MB per active transfer) as the goal::

    unshare --net sh -c 'ip link set lo up && .venv/bin/python bench/per_transfer.py'
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import relay  # bench/relay.py: its clients (relay.py --child), processes and helpers
from roomdrop.server.auth import TokenAuthority

MIB = 1024 * 1024
BUDGET_MIB = 10_000_000 / MIB  # the seed: under 10 MB of server memory per transfer


@dataclass
class Sample:
    transfers: int
    server_kib: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    client_kib: list[int] = field(default_factory=list)
    overlapped: list[bool] = field(default_factory=list)


def run(
    bench: relay.Bench, tmp: Path, source: Path, transfers: int
) -> tuple[int, float, int, bool]:
    """``transfers`` overlapping transfers of ``source`` through one fresh server: its
    VmHWM (KiB), the seconds from the first sender's start to the last receiver's end,
    the highest client VmHWM (KiB), and whether every transfer was under way at once (the
    last sender started before the first receiver ended)."""
    bench.count += 1
    size = source.stat().st_size
    workdir = tmp / f"run-{bench.count}-x{transfers}"
    workdir.mkdir()
    port = relay.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    env["ROOMDROP_SECRET"] = bench.secret
    env["ROOMDROP_MAX_FILE_SIZE"] = str(max(size, 500 * MIB))
    # the same two user names in every room (relay.py's clients): their limit of
    # concurrent transfers (5 by default) raised to N
    env["ROOMDROP_MAX_TRANSFERS_PER_USER"] = str(max(5, transfers))
    procs = relay.Processes()
    log = workdir / "server.log"
    try:
        server = procs.start(
            bench.server_cmd("roomdrop", port, workdir / "data", size), log, env, pipe=False
        )
        relay.wait_healthy(port, server, log)
        authority = TokenAuthority(bench.secret)
        receivers, senders = [], []
        for i in range(transfers):
            base = f"ws://{relay.HOST}:{port}/webrtc/ws/{relay.ROOM}-{i}?token="
            url = base + authority.issue(relay.RECEIVER, 3600)
            dest = workdir / f"received-{i}.bin"
            cmd = bench.child_cmd("roomdrop-receive", url, dest, size)
            receiver = procs.start(cmd, workdir / f"receiver-{i}.log")
            receivers.append((receiver, base))
        for i, (receiver, _) in enumerate(receivers):
            if (line := procs.wait_line(receiver, f"receiver {i}", 30)) != "ready":
                raise relay.Failed(f"receiver {i} printed {line!r}")
        for i, (_, base) in enumerate(receivers):
            url = base + authority.issue(relay.SENDER, 3600)
            cmd = bench.child_cmd("roomdrop-send", url, source, size)
            senders.append(procs.start(cmd, workdir / f"sender-{i}.log"))
        try:
            sent = [procs.result(s, f"sender {i}", bench.timeout) for i, s in enumerate(senders)]
            got = [
                procs.result(r, f"receiver {i}", bench.timeout)
                for i, (r, _) in enumerate(receivers)
            ]
        except relay.Failed as exc:
            raise relay.Failed(f"{exc}\n--- server:\n{relay.tail(log)}") from None
        server_kib = relay.vm_hwm_kib(server.pid)
        text = log.read_text(errors="replace")
        if '"level": "error"' in text or "Traceback" in text:
            raise relay.Failed(f"the server logged errors:\n{relay.tail(log)}")
    finally:
        procs.stop_all()
    seconds = max(r["end"] for r in got) - min(s["start"] for s in sent)
    clients = max(r["peak_kib"] for r in [*sent, *got])
    overlapped = max(s["start"] for s in sent) < min(r["end"] for r in got)
    return server_kib, seconds, clients, overlapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=25, help="each transfer's file (MiB)")
    parser.add_argument("--transfers", type=int, default=8, help="N, the transfers at once")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.transfers < 2:
        parser.error("--transfers must be at least 2")
    samples = [Sample(1), Sample(args.transfers)]
    with relay.sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="roomdrop-conc-") as t:
        tmp = Path(t)
        source = tmp / "source.bin"
        relay.make_random_file(source, args.size_mb)
        bench = relay.Bench(tmp, secrets.token_urlsafe(32), max(120.0, 4.0 * args.size_mb), None)
        try:
            for _ in range(args.repeat):
                for sample in samples:  # interleaved, so drift touches both alike
                    server_kib, seconds, client_kib, overlapped = run(
                        bench, tmp, source, sample.transfers
                    )
                    sample.overlapped.append(overlapped)
                    sample.server_kib.append(server_kib)
                    sample.seconds.append(seconds)
                    sample.client_kib.append(client_kib)
        except relay.Failed as exc:
            raise SystemExit(f"benchmark failed: {exc}") from None
    size = args.size_mb * MIB
    print(
        f"roomdrop relay memory per active transfer: {args.size_mb} MiB per transfer, "
        f"1 and {args.transfers} end-to-end encrypted transfers at once (each its own room, "
        f"sender and receiver processes), median of {args.repeat} run(s), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPU(s), load average "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        + " at the end"
    )
    print(
        "server peak: roomdrop serve's own VmHWM, median over fresh servers (its settings at "
        "their defaults but ROOMDROP_MAX_TRANSFERS_PER_USER = N: the same two users in every "
        "room); clients: the highest client VmHWM (bench/peak.py); MB = 10^6 bytes"
    )
    print()
    heads = ("transfers", "server peak MiB", "x one", "MB/s, all", "client peak MiB")
    widths = (-12, 15, 6, 9, 15)
    print(
        "  ".join(
            f"{h:{'<' if w < 0 else '>'}{abs(w)}}" for h, w in zip(heads, widths, strict=True)
        )
    )
    one = statistics.median(samples[0].server_kib) / 1024
    for s in samples:
        peak = statistics.median(s.server_kib) / 1024
        speed = s.transfers * size / statistics.median(s.seconds) / 1e6
        clients = max(s.client_kib) / 1024
        label = "1 transfer" if s.transfers == 1 else f"{s.transfers} at once"
        print(f"{label:<12}  {peak:>15.1f}  {peak / one:>5.2f}x  {speed:>9.1f}  {clients:>15.1f}")
    many = statistics.median(samples[1].server_kib) / 1024
    per = (many - one) / (args.transfers - 1)
    runs = "; ".join(
        f"x{s.transfers}: " + ", ".join(f"{k / 1024:.1f}" for k in s.server_kib) for s in samples
    )
    print()
    print(f"server peak per run (MiB): {runs}")
    many_now = statistics.median(samples[1].server_kib) / 1024
    print(
        f"peak memory against one transfer, same run: {args.transfers} at once: server "
        f"{many_now:.1f} / {one:.1f} MiB = {many_now / one:.2f}x"
    )
    at_once = samples[1].overlapped
    print(
        f"runs of {args.transfers} whose transfers were all under way at once: "
        f"{sum(at_once)} of {len(at_once)}"
    )
    verdict = "met" if per < BUDGET_MIB else "NOT met"
    print(
        f"goal server memory per active transfer < {BUDGET_MIB:.1f} MiB (the seed's 10 MB): "
        f"({many:.1f} - {one:.1f}) / {args.transfers - 1} = {per:.2f} MiB per transfer "
        f"({verdict})"
    )


if __name__ == "__main__":
    main()
