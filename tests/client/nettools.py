"""Network conditions for the end-to-end tests, made inside the test's own network
namespace (scripts/test runs pytest in one that has only lo)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator

__all__ = ["mute"]


@contextlib.contextmanager
def mute(*sources: str) -> Iterator[None]:
    """Nothing sent from ``sources`` gets anywhere (EACCES), in this test's own network
    namespace: a prohibit rule for each, ahead of the local table (which moves from
    preference 0 to 1000 meanwhile, so the rules come first). The addresses stay local:
    sockets bind to them and receive."""
    interfaces = sorted(name for _, name in socket.if_nameindex())
    assert interfaces == ["lo"], (
        f"this test changes routing rules: run it in a network namespace of its own with "
        f"only lo (scripts/test does), not beside {interfaces}"
    )

    def ip(*args: str) -> None:
        subprocess.run(["ip", "rule", *args], check=True)

    ip("add", "pref", "1000", "lookup", "local")
    ip("del", "pref", "0", "lookup", "local")
    for source in sources:
        ip("add", "pref", "10", "from", source, "prohibit")
    try:
        yield
    finally:
        for source in sources:
            ip("del", "pref", "10", "from", source, "prohibit")
        ip("add", "pref", "0", "lookup", "local")
        ip("del", "pref", "1000", "lookup", "local")
