"""Settings from ROOMDROP_* variables, the secret kept in the data directory, and
`roomdrop token`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from redistools import RedisServer
from roomdrop.exceptions import Unauthorized
from roomdrop.server.auth import TokenAuthority, load_secret
from roomdrop.server.settings import Settings

SECRET = "a test secret that is at least 32 bytes long"
README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    for name in Settings.model_fields:
        assert f"`ROOMDROP_{name.upper()}`" in text, name


def test_settings_come_from_roomdrop_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMDROP_MAX_FILE_SIZE", "1234")
    monkeypatch.setenv("ROOMDROP_MIME_DENY", '["application/x-msdownload"]')
    monkeypatch.setenv("ROOMDROP_ICE_SERVERS", '[{"urls": ["stun:127.0.0.1:3478"]}]')
    settings = Settings()
    assert settings.max_file_size == 1234
    assert settings.mime_deny == ["application/x-msdownload"]
    assert settings.ice_servers == [{"urls": ["stun:127.0.0.1:3478"]}]


def test_a_secret_is_generated_once_kept_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = load_secret(settings)
    assert len(first) >= 32
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(settings) == first


def test_roomdrop_token_prints_a_token_the_server_accepts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    load_secret(Settings(data_dir=data_dir))  # the server made its secret on first start
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "roomdrop.cli",
            "token",
            "alice",
            "--ttl",
            "60",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    authority = TokenAuthority(load_secret(Settings(data_dir=data_dir)))
    assert authority.verify(printed) == "alice"
    claims = jwt.decode(printed, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60


def test_roomdrop_token_never_makes_a_secret_and_says_where_it_looked(tmp_path: Path) -> None:
    # run anywhere but the server's data directory, it used to make a new secret there
    # and print a token the server then refused ("token signature is invalid")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    done = subprocess.run(
        [sys.executable, "-m", "roomdrop.cli", "token", "alice"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    where = tmp_path / "roomdrop-data" / "secret.key"
    assert done.stderr.startswith(f"roomdrop: no server secret at {where}: "), done.stderr
    assert "--data-dir" in done.stderr
    assert "ROOMDROP_SECRET" in done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be created"


def test_with_redis_and_no_secret_every_instance_and_roomdrop_token_share_one_secret(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = redis_server.prefix()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMDROP_")}
    env["ROOMDROP_REDIS_PREFIX"] = prefix
    command = [sys.executable, "-m", "roomdrop.cli", "token", "alice", "--redis-url"]
    printed = subprocess.run(
        [*command, redis_server.url, "--data-dir", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    # another machine's instance: another data directory, the same Redis and prefix
    elsewhere = Settings(data_dir=tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix)
    assert TokenAuthority(load_secret(elsewhere)).verify(printed) == "alice"
    assert not (tmp_path / "a" / "secret.key").exists(), "the secret lives in Redis only"
    with redis_server.client() as client:
        assert len(client.get(f"{prefix}:secret") or b"") >= 32


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("not.a.jwt", "invalid token"),
        (
            TokenAuthority("another secret of at least thirty-two bytes").issue("mallory", 60),
            "signature is invalid",
        ),
        (TokenAuthority(SECRET).issue("alice", -10), "token expired"),
        (jwt.encode({"exp": 9999999999}, SECRET, algorithm="HS256"), "no 'sub' claim"),
        (jwt.encode({"sub": "", "exp": 9999999999}, SECRET, algorithm="HS256"), "not a user"),
    ],
)
def test_bad_tokens_are_refused_with_a_precise_reason(token: str | None, reason: str) -> None:
    with pytest.raises(Unauthorized, match=reason):
        TokenAuthority(SECRET).verify(token)


def test_turn_urls_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMDROP_TURN_URLS", "turn:127.0.0.1:3478?transport=udp, turns:t:5349")
    monkeypatch.setenv("ROOMDROP_TURN_SECRET", "shared")
    settings = Settings()
    assert settings.turn_urls == ["turn:127.0.0.1:3478?transport=udp", "turns:t:5349"]
    assert settings.turn_secret is not None
    assert settings.turn_secret.get_secret_value() == "shared"
