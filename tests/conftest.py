"""Session-wide fixtures: one real redis-server for every test of the shared backend, one
real S3-compatible server (SeaweedFS) for every test of the S3 store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import pytest

from redistools import RedisServer, start_redis

if TYPE_CHECKING:
    from seaweedtools import SeaweedServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 for the whole session; each roomdrop server (or group
    of instances) that uses it has a key prefix of its own."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """SeaweedFS's ``weed mini`` on free ports of 127.0.0.1 for the whole session (started
    by the first test that asks); each test has buckets of its own (:func:`s3_bucket`).
    Imported here, not above: botocore is for the tests that use it."""
    from seaweedtools import start_seaweed

    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: SeaweedServer) -> str:
    """A new, empty bucket on the session's S3 server, for this test alone."""
    return s3_server.create_bucket()


# The tests that change the namespace's links (the browser tests' veth pair, which
# Chromium's ICE and its network-change detection see) or that need them unchanged (pages
# told "no veth: no data channel", or the tests that change routing rules) run one after
# another on one xdist worker; every other
# test pins ICE to its own loopback addresses and goes to whichever worker is free.
# (xdist's own ``--dist loadgroup`` cannot do this under pytest 9: it renames
# ``item._nodeid``, which pytest 9 no longer reads.)
LINKS_GROUP: Final = (
    "tests/browser/",
    "tests/test_bench_page.py",
    "tests/client/test_cli_reporting.py",  # routing rules of its own (nettools.py)
    "tests/client/test_cli_turn.py",
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class NamespaceLinks(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "namespace-links" if nodeid.startswith(LINKS_GROUP) else nodeid

    return NamespaceLinks(config, log)
