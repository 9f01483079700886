"""Names from the wire become safe single-component file names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomdrop.protocol.names import (
    MAX_NAME_BYTES,
    numbered_names,
    sanitize_filename,
    split_extension,
)


@pytest.mark.parametrize(
    ("hostile", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/absolute/path/report.pdf", "report.pdf"),
        ("..", "unnamed"),
        (".", "unnamed"),
        ("", "unnamed"),
        (".bashrc", "bashrc"),
        ("a\x00b\x1fc\x7f.txt", "abc.txt"),
        ("photo\u202egpj.exe", "photogpj.exe"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ('what?<is>:this|*".txt', "whatisthis.txt"),
        ("CON", "CON_"),
        ("trailing dots... ", "trailing dots"),
        ("résumé.pdf", "résumé.pdf"),
    ],
)
def test_hostile_names_are_made_safe(hostile: str, safe: str) -> None:
    assert sanitize_filename(hostile) == safe


def test_long_names_are_cut_to_the_byte_limit_keeping_the_extension() -> None:
    name = sanitize_filename("é" * 300 + ".tar.gz")
    assert name.endswith(".gz")
    assert len(name.encode()) <= MAX_NAME_BYTES


@given(st.text(max_size=400))
def test_any_text_gives_one_nonempty_safe_component(raw: str) -> None:
    name = sanitize_filename(raw)
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert all(ord(ch) >= 32 and ch != "\x7f" for ch in name)
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert sanitize_filename(name) == name


def test_numbered_names_count_up_before_the_extension() -> None:
    names = numbered_names("report.pdf")
    assert [next(names) for _ in range(3)] == ["report.pdf", "report (1).pdf", "report (2).pdf"]
    assert split_extension("archive") == ("archive", "")
