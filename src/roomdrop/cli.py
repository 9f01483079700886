"""The ``roomdrop`` command. It parses arguments and prints; the work is in the library."""

from __future__ import annotations

import argparse
import sys

from roomdrop import __version__

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomdrop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"roomdrop {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0
