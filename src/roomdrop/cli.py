"""The ``roomdrop`` command. It parses arguments and prints; the work is in the library."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roomdrop import __version__

if TYPE_CHECKING:  # imported where used: the command starts faster without it
    from roomdrop.client.settings import ClientSettings

__all__ = ["main"]


class Parser(argparse.ArgumentParser):
    """No abbreviated flags (``--ro`` is not taken for ``--room``); the subcommands'
    parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="roomdrop", description="Move files between the participants of a room.")
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
    token.add_argument(
        "--data-dir",
        type=Path,
        help="the server's data directory, where it keeps its secret (default ./roomdrop-data)",
    )
    token.add_argument("--redis-url", metavar="URL", help="the Redis the servers share, if any")

    send = commands.add_parser("send", help="send files to a participant of a room")
    send.add_argument("paths", metavar="PATH", nargs="+", type=Path, help="files to send")
    send.add_argument(
        "--to",
        required=True,
        metavar="USER",
        help="the participant to send to; several, comma-separated (each gets its own "
        "transfer); @room: everyone else in the room",
    )
    send.add_argument(
        "--transport",
        choices=("auto", "direct", "p2p", "relay"),
        default="auto",
        help="auto: a direct connection to a roomdrop CLI, else a WebRTC data channel, "
        "else through the server (default); direct: only a direct connection; p2p: only "
        "a data channel; relay: always through the server",
    )
    send.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="give up (exit 1) if USER has not joined the room after SECONDS "
        "(default: keep waiting)",
    )
    send.add_argument(
        "--store",
        action="store_true",
        help="keep the files on the server for USER, who need not be online: end-to-end "
        "encrypted, delivered when they join, deleted then (or after the server's "
        "ROOMDROP_STORE_TTL); your consent to the server keeping them",
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
    receive.add_argument(
        "--scan",
        metavar="URL",
        help="scan each file for malware before it is saved, with the ClamAV daemon at "
        "unix:///PATH/TO/clamd.sock or tcp://HOST:PORT; an infected file is not saved, and "
        "one that cannot be scanned waits, unsaved, for the same command again "
        "($ROOMDROP_SCAN_URL)",
    )
    receive.add_argument(
        "--quarantine",
        metavar="DIR",
        type=Path,
        help="with --scan: keep an infected file in DIR as NAME.infected instead of "
        "deleting it ($ROOMDROP_QUARANTINE_DIR)",
    )
    kept = commands.add_parser(
        "kept",
        help="list the files the server keeps for you or that you keep for others "
        "(send --store), or withdraw one",
    )
    kept.add_argument(
        "--withdraw",
        metavar="ID",
        help="withdraw the kept file ID (the start of its id is enough): the server "
        "deletes it from its store (its receiver may discard one likewise)",
    )
    kept.add_argument(
        "--server", metavar="URL", action="append", help="server URL ($ROOMDROP_SERVER)"
    )
    kept.add_argument("--room", help="only the files kept in this room")
    kept.add_argument("--token", help="your token ($ROOMDROP_TOKEN)")
    kept.add_argument("--json", action="store_true", help="one JSON object per line")
    keys = commands.add_parser(
        "keys", help="show this device's key and the peers' keys it trusts, or trust a new one"
    )
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="{trust}")
    trust = keys_commands.add_parser(
        "trust",
        help="trust the new device key USER showed up with (one refused as key-changed)",
    )
    trust.add_argument("user", metavar="USER")
    trust.add_argument(
        "--server",
        metavar="URL",
        help="only on this server (default: every server where USER showed a new key)",
    )
    for client in (send, receive):
        client.add_argument(
            "--no-direct",
            action="store_true",
            help="no direct TCP connection to the peer: only WebRTC and the relay "
            "($ROOMDROP_DIRECT=0)",
        )
        client.add_argument(
            "--trust-new-key",
            action="store_true",
            help="trust a peer's device key that changed (after comparing safety numbers) "
            "instead of refusing it",
        )
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


def check_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Name an unknown ``--flag`` (and the one meant, if close) before argparse does
    anything else: it would report a required option missing first (``--rooom demo``
    would read "--room is required")."""
    sub = parser
    descending = True
    while descending:  # to the innermost subcommand named (``keys trust``)
        descending = False
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = next((a for a in argv if a in action.choices), None)
                if chosen is not None:
                    sub, descending = action.choices[chosen], True
                    break
    known = set(sub._option_string_actions)
    for arg in argv:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and len(flag) > 1 and flag not in known:
            close = difflib.get_close_matches(flag, sorted(known), n=1)
            meant = f" (did you mean {close[0]}?)" if close else ""
            sub.error(f"unknown option {flag}{meant}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    check_options(parser, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command == "send":  # hashing overlaps importing the client, connecting, joining
        from roomdrop.client import scans

        scans.begin(args.paths)
    if args.command in ("send", "receive"):
        return client_command(args)
    if args.command == "keys":
        return keys_command(args)
    if args.command == "kept":
        return kept_command(args)
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
    from roomdrop.server.auth import NoSecret, TokenAuthority, load_secret

    ttl = args.ttl if args.ttl is not None else settings.token_ttl
    try:
        secret = load_secret(settings, create=False)
    except NoSecret as missing:
        print(
            f"roomdrop: no server secret at {missing.path}: `roomdrop serve` makes it in its "
            "data directory on first start; run `roomdrop token` where the server runs, "
            "with the same --data-dir (default ./roomdrop-data) or ROOMDROP_SECRET",
            file=sys.stderr,
        )
        return 1
    print(TokenAuthority(secret).issue(args.user, ttl))
    return 0


def client_command(args: argparse.Namespace) -> int:
    """``send`` and ``receive``: exit 0 only if every file arrived and verified."""
    from roomdrop.client.command import run_receive, run_send
    from roomdrop.client.settings import ClientSettings

    settings = ClientSettings()
    if args.no_direct:
        settings.direct = False
    found = server_and_token(args, settings)
    if isinstance(found, int):
        return found
    servers, token = found
    if args.command == "send":
        for path in args.paths:
            if not path.exists():
                return fail(f"no such file: {path}")
            if not path.is_file():
                return fail(f"not a file: {path}")
        if args.wait is not None and args.wait < 0:
            return fail("--wait must be at least 0")
        receivers = [name.strip() for name in args.to.split(",")]
        if not all(receivers):
            return fail(f"--to {args.to!r}: an empty name (USER, USER,... or @room)")
        if len(set(receivers)) < len(receivers):
            return fail(f"--to {args.to!r}: a receiver named twice")
        if "@room" in receivers and len(receivers) > 1:
            return fail("--to @room means everyone else in the room: not with other names")
        if args.store and receivers == ["@room"]:
            return fail("--store keeps files for receivers named with --to: not with @room")
        if args.store and args.transport not in ("auto", "relay"):
            return fail(
                f"--store keeps the files on the server: not with --transport {args.transport}"
            )
    else:
        if args.count is not None and args.count < 1:
            return fail("--count must be at least 1")
        settings.scan_url = args.scan or settings.scan_url
        settings.quarantine_dir = args.quarantine or settings.quarantine_dir
        if args.quarantine is not None and not settings.scan_url:
            return fail("--quarantine keeps what --scan URL finds infected: pass --scan too")
        if settings.scan_url:
            from roomdrop.client.clamd import parse_url

            try:
                parse_url(settings.scan_url)
            except ValueError as exc:
                return fail(f"--scan: {exc}")
    reporter: Any
    if args.json:
        from roomdrop.client.jsonlines import JsonReporter

        reporter = JsonReporter()
    else:
        from roomdrop.client.display import RichReporter

        several = args.command == "send" and (len(receivers) > 1 or receivers == ["@room"])
        reporter = RichReporter(receivers=several)
    common: dict[str, Any] = {
        "servers": servers,
        "room": args.room,
        "token": token,
        "settings": settings,
        "reporter": reporter,
    }
    try:
        common["trust_new_key"] = args.trust_new_key
        if args.command == "send":
            outcome = run_send(
                args.paths,
                receivers,
                transport=args.transport,
                wait=args.wait,
                store=args.store,
                **common,
            )
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


def server_and_token(
    args: argparse.Namespace, settings: ClientSettings
) -> tuple[list[str], str] | int:
    """The servers and the token a client command uses (its flags, else ``ROOMDROP_*``),
    or the exit status after saying which is missing."""
    from roomdrop.client.settings import split_servers

    servers = split_servers(args.server or [settings.server])
    token = args.token or (settings.token.get_secret_value() if settings.token else None)
    if not servers:
        return fail("no server: pass --server URL or set ROOMDROP_SERVER")
    if not token:
        return fail("no token: pass --token TOKEN or set ROOMDROP_TOKEN (see `roomdrop token`)")
    return servers, token


def kept_command(args: argparse.Namespace) -> int:
    """``roomdrop kept``: one line per kept file; ``--withdraw ID``: withdraw it (1 if
    no kept file has that id or the server refuses, 3 if it cannot be reached)."""
    import asyncio
    import json

    from roomdrop.client.kept import list_kept, withdraw
    from roomdrop.client.settings import ClientSettings, user_of
    from roomdrop.exceptions import RoomdropError, ServerUnreachable, Unauthorized

    found = server_and_token(args, ClientSettings())
    if isinstance(found, int):
        return found
    servers, token = found
    try:
        user = user_of(token)
    except ValueError as exc:
        return fail(f"--token: {exc}")
    try:
        if args.withdraw is not None:
            done = asyncio.run(withdraw(servers, token, user, args.withdraw, room=args.room))
            t = done.transfer
            if args.json:
                print(json.dumps({"event": "withdrawn", **t.model_dump()}))
            else:
                how = (
                    f"withdrew {t.filename} (kept for {done.other})"
                    if done.mine
                    else (f"discarded {t.filename} (kept for you by {done.other})")
                )
                print(f"{how}: {t.status.value}, deleted from the server's store")
            return 0
        listed = asyncio.run(list_kept(servers, token, user, room=args.room))
    except (ServerUnreachable, Unauthorized) as exc:
        return fail(exc.message, 3)
    except RoomdropError as exc:
        return fail(f"{exc.code}: {exc.message}", 1)
    for kept in listed:
        t = kept.transfer
        if args.json:
            print(json.dumps({"event": "kept", **t.model_dump()}))
            continue
        whose = f"for {kept.other}" if kept.mine else f"from {kept.other}, for you"
        print(
            f"{t.transfer_id}  {t.filename}  {t.file_size:,} bytes  {whose}  "
            f"in room {t.room_id}  since {t.stored_at}"
        )
    if not listed and not args.json:
        print("nothing kept on the server for you or by you")
    return 0


def keys_command(args: argparse.Namespace) -> int:
    """``roomdrop keys``: the key file, the public key and the trusted peers;
    ``roomdrop keys trust USER``: trust the key USER was refused for (1 if none waits)."""
    from roomdrop.client.configdir import ConfigError, config_dir
    from roomdrop.client.keys import key_path, load_or_create
    from roomdrop.client.peerkeys import PeerKeys, server_id
    from roomdrop.client.settings import ClientSettings

    directory = config_dir(ClientSettings().config_dir)
    store = PeerKeys(directory)
    try:
        if args.keys_command == "trust":
            done = store.trust_pending(args.user, args.server)
            if not done:
                where = f" on {server_id(args.server)}" if args.server else ""
                return fail(
                    f"no new key of {args.user} waits to be trusted{where}: one is kept "
                    "when send or receive refuses it (key-changed)",
                    1,
                )
            for server, key in done:
                print(f"trusted the new device key of {args.user} on {server}: {key}")
            return 0
        device = load_or_create(directory)
        servers = store.all()
    except ConfigError as exc:
        return fail(str(exc))
    print(f"device key: {key_path(directory)}")
    print(f"public key: {device.public_text}")
    print(f"trusted keys: {store.path}")
    if not any(servers.values()):
        print("no peer's key trusted yet")
    for server, users in sorted(servers.items()):
        print(server)
        for user, entry in sorted(users.items()):
            for key in entry.trusted:
                print(f"  {user}  {key}")
            if entry.pending is not None:
                print(
                    f"  {user}  {entry.pending}  new, refused: `roomdrop keys trust {user}` "
                    "trusts it"
                )
    return 0


def fail(message: str, code: int = 2) -> int:
    print(f"roomdrop: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
