"""The ``roomdrop`` command. It parses arguments and prints; the work is in the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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

    token = commands.add_parser("token", help="print a token for USER, signed with the secret")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default 86400)")
    token.add_argument("--data-dir", type=Path, help="where the server keeps its secret")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from roomdrop.server.settings import Settings

    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in ("host", "port", "data_dir") and value is not None
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


if __name__ == "__main__":
    sys.exit(main())
