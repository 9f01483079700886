"""The paths of a tree sent as one set (protocol/tree.py): every hostile case refused
whole, with an error naming the entry; ordinary trees pass unchanged."""

from __future__ import annotations

import posixpath
import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomdrop.protocol.tree import (
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_PATH_BYTES,
    Entry,
    UnsafePath,
    check_path,
    check_tree,
)


def test_an_ordinary_tree_passes_as_it_is() -> None:
    tree = [
        Entry("project", "dir"),
        Entry("project/README.md"),
        Entry("project/src/main.py"),
        Entry("project/empty", "dir"),
        Entry("project/docs/日本語 notes.txt"),
        Entry("project/latest", "link", target="src/main.py"),
        Entry("project/src/up", "link", target="../README.md"),
        Entry(".hidden/config"),
    ]
    assert check_tree(tree) == tree


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "an empty path"),
        ("/etc/passwd", "is absolute"),
        ("../outside", "has a '..' part"),
        ("a/../../b", "has a '..' part"),
        ("a/./b", "has a '.' part"),
        ("a//b", "has an empty part"),
        ("a/", "has an empty part"),
        ("a\\..\\b", "holds a backslash"),
        ("C:/Windows/win.ini", "starts with a drive letter"),
        ("c:evil", "starts with a drive letter"),
        ("file.txt:stream", "is not a name every system takes"),
        ("a\x00b", "control or format character U+0000"),
        ("line\nbreak", "control or format character U+000A"),
        ("gpj\u202eexe.txt", "control or format character U+202E"),
        ("docs/CON", "reserved name"),
        ("docs/nul.txt", "reserved name"),
        ("LPT1", "reserved name"),
        ("trailing.", "not a name every system takes"),
        ("trailing ", "not a name every system takes"),
        ("a?b", "invalid character"),
        ("x" * 256, "a name longer than 255 bytes"),
        ("é" * 128, "a name longer than 255 bytes"),
        ("/".join(["d"] * (MAX_DEPTH + 1)), f"deeper than {MAX_DEPTH} levels"),
        ("/".join(["d" * 200] * 6), f"longer than {MAX_PATH_BYTES} bytes"),
        (unicodedata.normalize("NFD", "café"), "not in Unicode NFC"),
    ],
)
def test_a_hostile_path_is_refused_saying_why(path: str, why: str) -> None:
    with pytest.raises(UnsafePath, match=re.escape(why)) as caught:
        check_path(path)
    assert caught.value.code == "unsafe-path"
    with pytest.raises(UnsafePath):  # and a set holding it is refused whole
        check_tree([Entry("fine.txt"), Entry(path)])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Photo.jpg", "photo.JPG"),  # one file on macOS and Windows
        ("a/B/c", "a/b/c"),
        ("ﬁle", "file"),  # a ligature folds to its letters (NFKC)
        ("straße", "STRASSE"),  # casefold, not lower
        ("same", "same"),
    ],
)
def test_two_entries_that_would_be_one_file_are_refused(first: str, second: str) -> None:
    with pytest.raises(UnsafePath, match=f"path {second!r} is in the set"):
        check_tree([Entry(first), Entry(second)])


def test_nothing_may_sit_below_a_file_or_a_link() -> None:
    with pytest.raises(UnsafePath, match="'a/b' is below 'a', which is a file"):
        check_tree([Entry("a"), Entry("a/b")])
    with pytest.raises(UnsafePath, match="below 'l', which is a link"):
        check_tree([Entry("l", "link", target="d"), Entry("d", "dir"), Entry("l/x")])
    # below a directory, named with another case: still below a file
    with pytest.raises(UnsafePath, match="below 'A', which is a file"):
        check_tree([Entry("A"), Entry("a/x")])


@pytest.mark.parametrize(
    ("link", "target", "why"),
    [
        ("l", "../x", "outside the set"),
        ("a/l", "../../x", "outside the set"),
        ("a/l", "b/../../../x", "outside the set"),
        ("l", "/etc/passwd", "outside the set"),
        ("l", "..\\x", "outside the set"),
        ("l", ".", "the set's own top"),
        ("a/l", "..", "the set's own top"),
        ("l", "", "has no target"),
        ("l", "CON", "reserved name"),
    ],
)
def test_a_link_must_point_inside_the_tree(link: str, target: str, why: str) -> None:
    with pytest.raises(UnsafePath, match=re.escape(why)):
        check_tree([Entry("a", "dir"), Entry(link, "link", target=target)])


def test_only_a_link_has_a_target() -> None:
    with pytest.raises(UnsafePath, match="is a file with a link target"):
        check_tree([Entry("f", "file", target="x")])


def test_a_set_has_a_bounded_number_of_entries() -> None:
    many = (Entry(f"f{i}") for i in range(MAX_ENTRIES + 1))
    with pytest.raises(UnsafePath, match="at most 100,000"):
        check_tree(many)


_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs")), min_size=1, max_size=20
)


@given(st.lists(_NAME, min_size=1, max_size=6))
def test_a_path_that_passes_is_relative_and_stays_inside(parts: list[str]) -> None:
    path = "/".join(parts)
    try:
        check_path(path)
    except UnsafePath:
        return
    assert not path.startswith("/") and "\\" not in path
    assert all(part not in ("", ".", "..") and ":" not in part for part in path.split("/"))
    joined = f"/out/{path}"
    assert posixpath.normpath(joined).startswith("/out/")
