"""The allocator settings `roomdrop serve`, `send` and `receive` start with."""

from __future__ import annotations

import sys

import pytest

from roomdrop.allocator import tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_allocator_settings() -> None:
    assert tune_allocator() is True
