"""Session-wide fixtures: one real redis-server for every test of the shared backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import pytest

from redistools import RedisServer, start_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 for the whole session; each roomdrop server (or group
    of instances) that uses it has a key prefix of its own."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


# The tests that change the namespace's links (the browser tests' veth pair, which
# Chromium's ICE and its network-change detection see) or that need them unchanged (pages
# told "no veth: no data channel") run one after another on one xdist worker; every other
# test pins ICE to its own loopback addresses and goes to whichever worker is free.
# (xdist's own ``--dist loadgroup`` cannot do this under pytest 9: it renames
# ``item._nodeid``, which pytest 9 no longer reads.)
LINKS_GROUP: Final = ("tests/browser/", "tests/test_bench_page.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class NamespaceLinks(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "namespace-links" if nodeid.startswith(LINKS_GROUP) else nodeid

    return NamespaceLinks(config, log)
