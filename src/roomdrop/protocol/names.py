"""File names from the wire, made safe to create in a download directory.

A name that arrives in an offer is only a hint. :func:`sanitize_filename` keeps its
last path component, drops control and format characters (including bidirectional
overrides such as U+202E, used to disguise ``gpj.exe`` as ``exe.jpg``), strips leading
dots and spaces (no hidden files, no ``..``), lets ``pathvalidate`` remove what no
common file system accepts (``<>:"|?*``, reserved names like ``CON``), and bounds
the UTF-8 length while keeping the extension. The result is never empty, never
contains a separator and is never ``.`` or ``..``.

:func:`numbered_names` yields the names tried, in order, when the sanitised one is
taken: ``report.pdf``, ``report (1).pdf``, ``report (2).pdf``, ...
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Final

from pathvalidate import sanitize_filename as _pathvalidate_sanitize

__all__ = ["MAX_NAME_BYTES", "numbered_names", "sanitize_filename", "split_extension"]

MAX_NAME_BYTES: Final = 200
"""Longest sanitised name in UTF-8 bytes. File systems allow 255; the rest is room for
``.part.jsonl`` and `` (NNN)``."""

FALLBACK_NAME: Final = "unnamed"
_MAX_EXTENSION_BYTES: Final = 32


def split_extension(name: str) -> tuple[str, str]:
    """``"a.tar.gz"`` → ``("a.tar", ".gz")``; no extension → ``(name, "")``."""
    dot = name.rfind(".")
    if dot <= 0 or len(name[dot:].encode()) > _MAX_EXTENSION_BYTES:
        return name, ""
    return name[:dot], name[dot:]


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode(errors="ignore")


def sanitize_filename(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Return a safe, non-empty, single-component file name derived from ``name``.

    Sanitising a sanitised name changes nothing (removing a character can leave a
    sequence that NFC composes, so the steps repeat until the name is stable)."""
    for _ in range(4):
        cleaned = _sanitize_once(name, max_bytes)
        if cleaned == name:
            break
        name = cleaned
    return name


def _sanitize_once(name: str, max_bytes: int) -> str:
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    stem, ext = split_extension(name)
    if len(name.encode()) > max_bytes:
        name = _truncate_utf8(stem, max_bytes - len(ext.encode())) + ext
    # pathvalidate only removes characters, so the name stays within max_bytes
    name = _pathvalidate_sanitize(name, platform="universal", max_len=max_bytes)
    name = name.strip().lstrip(". ").rstrip(". ")
    stem, ext = split_extension(name)
    return name if stem else FALLBACK_NAME + ext


def numbered_names(name: str) -> Iterator[str]:
    """Yield ``name``, then ``stem (1)ext``, ``stem (2)ext``, ... forever."""
    yield name
    stem, ext = split_extension(name)
    n = 1
    while True:
        yield f"{stem} ({n}){ext}"
        n += 1
