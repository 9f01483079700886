"""The ``roomdrop`` command. It parses arguments and prints; the work is in the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from roomdrop import __version__

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomdrop", description="Move files between the participants of a room."
    )
    parser.add_argument("--version", action="version", version=f"roomdrop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (settings: ROOMDROP_* variables)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--data-dir", type=Path, help="secret and relay staging (./roomdrop-data)")
    serve.add_argument(
        "--redis-url",
        metavar="URL",
        help="share rooms and transfers with other instances through Redis "
        "(redis://host:6379/0; default: in memory, this process only)",
    )

    token = commands.add_parser("token", help="print a token for USER, signed with the secret")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default 86400)")
    token.add_argument("--data-dir", type=Path, help="where the server keeps its secret")
    token.add_argument("--redis-url", metavar="URL", help="the Redis the servers share, if any")

    send = commands.add_parser("send", help="send files to a participant of a room")
    send.add_argument("paths", metavar="PATH", nargs="+", type=Path, help="files to send")
    send.add_argument("--to", required=True, metavar="USER", help="the participant to send to")
    send.add_argument(
        "--transport",
        choices=("auto", "p2p", "relay"),
        default="auto",
        help="auto: peer to peer, else through the server (default); p2p: never the "
        "server's relay; relay: always through the server",
    )
    receive = commands.add_parser("receive", help="receive files offered in a room")
    receive.add_argument("--out", type=Path, default=Path("."), help="where files go (default: .)")
    receive.add_argument("--yes", action="store_true", help="accept every offer without asking")
    receive.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="exit after N accepted transfers ended, arrived or not (the exit status says "
        "whether any failed; default: keep on)",
    )
    for client in (send, receive):
        client.add_argument(
            "--server",
            metavar="URL",
            action="append",
            help="server URL; several (comma-separated or repeated) are tried in order, "
            "and the next is used when one is lost ($ROOMDROP_SERVER)",
        )
        client.add_argument("--room", required=True, help="the room to join")
        client.add_argument("--token", help="your token ($ROOMDROP_TOKEN)")
        client.add_argument(
            "--json", action="store_true", help="one JSON object per line instead of bars"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("send", "receive"):
        return client_command(args)
    from roomdrop.server.settings import Settings

    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in ("host", "port", "data_dir", "redis_url") and value is not None
    }
    settings = Settings(**overrides)
    if args.command == "serve":
        from roomdrop.server.run import serve

        serve(settings)
        return 0
    from roomdrop.server.auth import TokenAuthority, load_secret

    ttl = args.ttl if args.ttl is not None else settings.token_ttl
    print(TokenAuthority(load_secret(settings)).issue(args.user, ttl))
    return 0


def client_command(args: argparse.Namespace) -> int:
    """``send`` and ``receive``: exit 0 only if every file arrived and verified."""
    from roomdrop.client.command import run_receive, run_send
    from roomdrop.client.settings import ClientSettings, split_servers

    settings = ClientSettings()
    servers = split_servers(args.server or [settings.server])
    token = args.token or (settings.token.get_secret_value() if settings.token else None)
    if not servers:
        return fail("no server: pass --server URL or set ROOMDROP_SERVER")
    if not token:
        return fail("no token: pass --token TOKEN or set ROOMDROP_TOKEN (see `roomdrop token`)")
    if args.command == "send":
        unreadable = [p for p in args.paths if not p.is_file()]
        if unreadable:
            return fail(f"not a file: {unreadable[0]}")
    elif args.count is not None and args.count < 1:
        return fail("--count must be at least 1")
    reporter: Any
    if args.json:
        from roomdrop.client.jsonlines import JsonReporter

        reporter = JsonReporter()
    else:
        from roomdrop.client.display import RichReporter

        reporter = RichReporter()
    common: dict[str, Any] = {
        "servers": servers,
        "room": args.room,
        "token": token,
        "settings": settings,
        "reporter": reporter,
    }
    try:
        if args.command == "send":
            outcome = run_send(args.paths, args.to, transport=args.transport, **common)
        else:
            outcome = run_receive(args.out, count=args.count, yes=args.yes, **common)
    finally:
        if not args.json:
            reporter.stop()
    if outcome.message:
        try:
            print(f"roomdrop: {outcome.message}", file=sys.stderr, flush=True)
        except BrokenPipeError:  # nobody reads stderr any more (client/output.py)
            from roomdrop.client.output import silence

            silence(sys.stderr)
    return outcome.exit_code


def fail(message: str, code: int = 2) -> int:
    print(f"roomdrop: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
