"""Client settings, from ``ROOMDROP_*`` environment variables (pydantic-settings).

``ROOMDROP_SERVER`` and ``ROOMDROP_TOKEN`` stand in for ``--server`` and ``--token``
(``ROOMDROP_SERVER`` and ``--server`` may name several servers, comma-separated:
:func:`split_servers`); ``ROOMDROP_ICE_HOSTS`` (comma-separated) restricts the local
addresses ICE gathers candidates on; ``ROOMDROP_CONFIG_DIR`` moves the device key and
the trusted keys (:mod:`.keys`, :mod:`.peerkeys`) out of ``~/.config/roomdrop``;
``ROOMDROP_SCAN_URL`` and ``ROOMDROP_QUARANTINE_DIR`` stand in for ``receive --scan`` and
``--quarantine`` (:mod:`.malware`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ClientSettings", "split_servers", "user_of"]


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMDROP_", extra="ignore")

    server: str | None = Field(
        None,
        description="Server URL for `send`/`receive` (e.g. http://127.0.0.1:8000), or "
        "several, comma-separated, tried in order and failed over to "
        "(http://a:8000,http://b:8000).",
    )
    token: SecretStr | None = Field(None, description="JWT for `send`/`receive`.")
    config_dir: Path | None = Field(
        None,
        description="Directory of the device key and the trusted keys (default "
        "$XDG_CONFIG_HOME/roomdrop, else ~/.config/roomdrop).",
    )
    ice_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated local addresses ICE may use (e.g. 127.0.0.1); "
        "empty: every address of the machine.",
    )
    ice_policy: Literal["all", "relay"] = Field(
        "all",
        description="ICE transport policy: relay uses only TURN relay candidates "
        "(all traffic through the TURN server).",
    )
    ice_gather_wait: float = Field(
        0.1,
        ge=0,
        description="Seconds a client waits for its STUN/TURN candidates before it sends "
        "its offer or answer with the host candidates; later ones follow as ice-candidate "
        "messages.",
    )
    direct: bool = Field(
        True,
        description="Try a direct TCP connection to a peer that is a roomdrop CLI too "
        "(on the ICE addresses); 0 (or --no-direct): only WebRTC and the relay.",
    )
    ice_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a client waits for a direct connection or a data channel "
        "before the relay.",
    )
    reconnect_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds a client keeps trying to reach the server after losing it; "
        "then it ends (exit status 3).",
    )
    ping_timeout: float = Field(
        20.0,
        gt=0,
        description="Seconds a client waits for the server to answer a ping (one every "
        "half of this) before it counts the connection as lost, unless data moved "
        "meanwhile.",
    )
    stall_timeout: float = Field(
        2.0,
        gt=0,
        description="Seconds with no chunk before a receiver asks again for what it lacks.",
    )
    scan_url: str | None = Field(
        None,
        description="`receive`: the ClamAV daemon (clamd) that scans each file before it is "
        "saved, unix:///PATH/TO/clamd.sock or tcp://HOST:PORT (or --scan URL); unset: no scan.",
    )
    quarantine_dir: Path | None = Field(
        None,
        description="`receive --scan`: where an infected file is kept, as NAME.infected "
        "(or --quarantine DIR); unset: it is deleted.",
    )
    scan_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds clamd may take to answer for one file (sending it included) "
        "before the scan counts as failed (the file is kept unsaved).",
    )

    @field_validator("ice_hosts", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


def split_servers(values: Iterable[str | None]) -> list[str]:
    """The server URLs named by ``values`` (each a ``--server`` or ``ROOMDROP_SERVER``
    value: one URL or several, comma-separated), in order, blanks and repeats dropped."""
    servers: list[str] = []
    for value in values:
        for part in (value or "").split(","):
            url = part.strip()
            if url and url not in servers:
                servers.append(url)
    return servers


def user_of(token: str) -> str:
    """The user id (``sub``) a token names. The signature is the server's to check, so
    the claims are only read (base64url JSON), without a JWT library: importing PyJWT
    (and cryptography) cost the command more than the rest of its start-up."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT: not three dot-separated segments")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a JWT: its claims do not decode: {exc}") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: its claims are not a JSON object")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ValueError("the token names no user (no 'sub' claim)")
    return sub
