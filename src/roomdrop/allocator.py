"""The process's memory allocator, tuned for chunk-sized buffers (glibc only)."""

from __future__ import annotations

import ctypes
import sys

__all__ = ["tune_allocator"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_BUFFERS_UP_TO = 4 * 1024 * 1024
KEEP_FREED_HEAP = 16 * 1024 * 1024


def tune_allocator() -> bool:
    """glibc's malloc: serve buffers up to 4 MiB from the heap, and keep up to 16 MiB of
    freed heap instead of handing it back to the kernel at once. True if glibc took it.

    A chunk passes through buffers of 64 KiB to a few hundred KiB (the WebSocket reader's,
    the frame's, the relay staging's), in the server and in the clients alike. Past
    glibc's default threshold (128 KiB) each one was a fresh mmap, page-faulted in and
    unmapped again: thousands of page faults per 100 MB. The memory kept is bounded (it
    does not grow with what is moved).
    Elsewhere (another libc, another OS) this does nothing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BUFFERS_UP_TO)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_FREED_HEAP)
    )
