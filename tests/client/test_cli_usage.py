"""Mistakes on the command line are named: an unknown flag (with the one meant, when
it is close), a path that does not exist, a path that is not a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomdrop.cli import main

SERVER = ["--server", "http://127.0.0.1:9", "--token", "t"]


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_mistyped_flag_is_named_with_the_one_meant(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = error_of(["send", "f.bin", "--to", "bob", "--rooom", "demo"], capsys)
    assert err == "roomdrop send: error: unknown option --rooom (did you mean --room?)"
    err = error_of(["receive", "--rooom=demo", "--yes"], capsys)
    assert err == "roomdrop receive: error: unknown option --rooom (did you mean --room?)"


def test_an_unknown_flag_far_from_any_is_named_alone(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["receive", "--room", "demo", "--frobnicate"], capsys)
    assert err == "roomdrop receive: error: unknown option --frobnicate"


def test_an_abbreviated_flag_is_not_taken_for_another(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["receive", "--ro", "demo"], capsys)
    assert err.startswith("roomdrop receive: error: unknown option --ro"), err


def test_a_missing_required_flag_is_still_reported(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["send", "f.bin", "--to", "bob"], capsys)
    assert err == "roomdrop send: error: the following arguments are required: --room"


def test_a_path_that_does_not_exist_is_no_such_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nosuchfile.bin"
    code = main(["send", str(missing), "--to", "bob", "--room", "demo", *SERVER])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"roomdrop: no such file: {missing}"


def test_a_directory_is_not_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["send", str(tmp_path), "--to", "bob", "--room", "demo", *SERVER])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"roomdrop: not a file: {tmp_path}"
