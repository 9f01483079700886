"""The relative paths of a set of files sent as one tree (a folder), checked the same
way by the sender before it offers the set and by the receiver before it creates
anything: a set with one bad entry is refused whole, with an error that names the
entry and what is wrong with it (:class:`UnsafePath`).

Unlike a single file's name (:mod:`.names`, which is *made* safe), a path in a tree is
not repaired: two entries repaired into one name, or a path quietly moved elsewhere,
would put files where their sender did not mean them. So every path must already be:

* relative, ``/``-separated, in NFC: no leading ``/``, no ``\\``, no drive letter or
  ``:`` (``C:``, NTFS streams), no empty, ``.`` or ``..`` component;
* made of names every common file system takes (``pathvalidate``, platform
  ``universal``): no NUL or control characters, none of ``<>:"|?*``, no reserved name
  (``CON``, ``NUL``, ``COM1``, ``LPT1``, with or without an extension), no name ending in
  a dot or a space, at most 255 bytes of UTF-8 a name; and no format characters such as
  U+202E (a name that displays as something it is not);
* at most :data:`MAX_PATH_BYTES` long and :data:`MAX_DEPTH` components deep;
* distinct from every other entry once case and Unicode normalisation are folded away
  (``Photo.jpg`` and ``photo.JPG`` would be one file on macOS and Windows), and not
  below an entry that is a file or a link;
* for a symbolic link: a relative target that stays inside the tree, resolved from the
  link's own directory (``a/l -> ../b`` is ``b``: inside; ``l -> ../x``: outside).

A set holds at most :data:`MAX_ENTRIES` entries. Nothing here touches a file system:
the receiver still creates each path below its output directory without following links
(the tree's own links are created last, after every file is in place).
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from pathvalidate import ValidationError, validate_filename

from roomdrop.exceptions import ProtocolError

__all__ = [
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_PATH_BYTES",
    "Entry",
    "UnsafePath",
    "check_path",
    "check_tree",
]

MAX_PATH_BYTES: Final = 1024
"""Longest path in UTF-8 bytes (Linux takes 4096, Windows' long paths 32767; 1024 leaves
room for the output directory in front of it)."""
MAX_DEPTH: Final = 64
MAX_ENTRIES: Final = 100_000
_MAX_NAME_BYTES: Final = 255

Kind = Literal["file", "dir", "link"]


class UnsafePath(ProtocolError):
    """An entry of a tree that may not be created as it is: the whole set is refused."""

    code = "unsafe-path"


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a tree: a file, an (empty) directory, or a symbolic link."""

    path: str
    kind: Kind = "file"
    target: str | None = None
    """A link's target, as the link holds it (relative)."""


def check_path(path: str) -> str:
    """``path`` if it is a safe relative path (module docstring), else
    :class:`UnsafePath` saying why."""
    if not isinstance(path, str) or not path:
        raise UnsafePath("an empty path")
    shown = repr(path[:120])
    if unicodedata.normalize("NFC", path) != path:
        raise UnsafePath(f"path {shown} is not in Unicode NFC")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise UnsafePath(f"path {shown}... is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise UnsafePath(f"path {shown} is absolute")
    if "\\" in path:
        raise UnsafePath(f"path {shown} holds a backslash ('/' separates its parts)")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise UnsafePath(f"path {shown} is deeper than {MAX_DEPTH} levels")
    for part in parts:
        _check_name(part, shown)
    return path


def _check_name(part: str, shown: str) -> None:
    if part in ("", ".", ".."):
        what = "an empty part" if not part else f"a {part!r} part"
        raise UnsafePath(f"path {shown} has {what}")
    if len(part) >= 2 and part[1] == ":" and part[0].isascii() and part[0].isalpha():
        raise UnsafePath(f"path {shown} starts with a drive letter")
    for char in part:
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise UnsafePath(
                f"path {shown} holds the control or format character U+{ord(char):04X}"
            )
    if len(part.encode()) > _MAX_NAME_BYTES:
        raise UnsafePath(f"path {shown} has a name longer than {_MAX_NAME_BYTES} bytes")
    try:
        validate_filename(part, platform="universal", max_len=_MAX_NAME_BYTES)
    except ValidationError as exc:
        why = exc.reason.name.lower().replace("_", " ")
        raise UnsafePath(
            f"path {shown}: {part!r} is not a name every system takes ({why})"
        ) from None


def _folded(path: str) -> str:
    """What two paths that would be one file on a case-insensitive, normalising file
    system have in common."""
    return unicodedata.normalize("NFKC", path).casefold()


def check_tree(entries: Iterable[Entry]) -> list[Entry]:
    """The entries, in order, if the set is safe to create as a whole (module
    docstring); else :class:`UnsafePath` for the first entry that is not."""
    listed = list(entries)
    if len(listed) > MAX_ENTRIES:
        raise UnsafePath(f"a set of {len(listed):,} entries: at most {MAX_ENTRIES:,}")
    by_fold: dict[str, Entry] = {}
    for entry in listed:
        check_path(entry.path)
        fold = _folded(entry.path)
        other = by_fold.get(fold)
        if other is not None:
            same = "twice" if other.path == entry.path else f"and as {other.path!r}"
            raise UnsafePath(f"path {entry.path!r} is in the set {same}")
        by_fold[fold] = entry
        if entry.kind == "link":
            _check_link(entry)
        elif entry.target is not None:
            raise UnsafePath(f"path {entry.path!r} is a {entry.kind} with a link target")
    for entry in listed:  # nothing may sit below a file or a link
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            parent = by_fold.get(_folded("/".join(parts[:depth])))
            if parent is not None and parent.kind != "dir":
                raise UnsafePath(
                    f"path {entry.path!r} is below {parent.path!r}, which is a {parent.kind}"
                )
    return listed


def _check_link(entry: Entry) -> None:
    target = entry.target
    if not target:
        raise UnsafePath(f"link {entry.path!r} has no target")
    shown = repr(target[:120])
    if target.startswith("/") or "\\" in target:
        raise UnsafePath(f"link {entry.path!r} points to {shown}, outside the set")
    for part in target.split("/"):
        if part not in ("..", "."):
            _check_name(part, shown)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafePath(f"link {entry.path!r} points to {shown}, outside the set")
    if resolved == ".":
        raise UnsafePath(f"link {entry.path!r} points to {shown}, the set's own top (a loop)")
