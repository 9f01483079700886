"""Session-wide fixtures: one real redis-server for every test of the shared backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redistools import RedisServer, start_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 for the whole session; each roomdrop server (or group
    of instances) that uses it has a key prefix of its own."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
