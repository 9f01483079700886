"""Server settings, from ``ROOMDROP_*`` environment variables (pydantic-settings).

Every field can be set as ``ROOMDROP_<FIELD>`` (``ROOMDROP_MAX_FILE_SIZE=1000000``);
lists and the ICE server list take JSON (``ROOMDROP_MIME_DENY='["application/x-msdownload"]'``).
The README's settings table is generated from this class's descriptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]

MB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMDROP_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    data_dir: Path = Field(
        Path("roomdrop-data"),
        description="Where the server keeps its secret and the relay's encrypted staging.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL (redis://host:6379/0) shared by several instances: rooms, "
        "transfers and relayed chunks go through it; unset: in memory, this process only.",
    )
    redis_prefix: str = Field(
        "roomdrop",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Namespace of the keys and channels in Redis: instances of one "
        "deployment share it.",
    )
    instance_timeout: float = Field(
        10.0,
        gt=0,
        description="With Redis: an instance silent this long is taken as gone, and its "
        "participants as disconnected.",
    )
    secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="HS256 secret for JWTs (32 bytes or more); if unset, one is generated "
        "once and kept in DATA_DIR/secret.key.",
    )
    token_ttl: int = Field(
        86_400, gt=0, description="Lifetime in seconds of tokens `roomdrop token` prints."
    )
    chunk_size: int = Field(64 * 1024, gt=0, le=MB, description="Default chunk size (bytes).")
    max_file_size: int = Field(500 * MB, gt=0, description="Largest file that may be offered.")
    max_transfers_per_user: int = Field(
        5, gt=0, description="Live transfers a user may be a party to at once."
    )
    max_transfers_per_room: int = Field(10, gt=0, description="Live transfers per room.")
    room_bandwidth: int = Field(
        0, ge=0, description="Relay bytes per second per room (token bucket); 0 for no limit."
    )
    max_message_bytes: int = Field(
        256 * 1024, gt=0, description="Largest control message (JSON) accepted."
    )
    control_rate: float = Field(
        50.0, gt=0, description="Control messages per second a connection may send (sustained)."
    )
    control_burst: int = Field(100, gt=0, description="Control messages a connection may burst.")
    idle_timeout: float = Field(
        30.0, gt=0, description="An active transfer with no activity this long is cancelled."
    )
    expiry: float = Field(3600.0, gt=0, description="A transfer older than this expires.")
    reconnect_grace: float = Field(
        60.0, ge=0, description="How long a dropped participant's transfers wait for it."
    )
    send_timeout: float = Field(
        15.0,
        gt=0,
        description="A connection that takes nothing for this long while messages wait "
        "for it is closed as too slow (4408).",
    )
    progress_interval: float = Field(
        0.25, ge=0, description="Least time between two progress broadcasts of one transfer."
    )
    require_e2e: bool = Field(
        True,
        description="Carry only end-to-end encrypted transfers: an offer without its sealed "
        "content key (`e2e`) is refused with `e2e-required`; 0 lets chunks travel in the clear.",
    )
    require_scan: bool = Field(
        False,
        description="Let only receivers that scan each file for malware before saving it "
        "accept (`roomdrop receive --scan URL`, a ClamAV daemon): an accept that does not say "
        "so is refused with `scan-required`, and pages cannot receive. The server cannot "
        "check the receiver's word (it never sees the plaintext).",
    )
    allow_direct: bool = Field(
        True,
        description="Forward `direct-hints`, so two CLIs may open a direct TCP connection "
        "to each other (end-to-end authenticated, docs/protocol.md §15); 0 refuses them with "
        "`direct-disabled`, keeping every byte on WebRTC or the relay.",
    )
    store_url: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        description="Where files kept for a later delivery (`send --store`) go: "
        "`s3://bucket/prefix` (an S3-compatible store; credentials and region from the "
        "standard `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`); unset: "
        "DATA_DIR/store. Either way they stay end-to-end encrypted.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="The S3 endpoint of a store other than AWS "
        "(SeaweedFS, MinIO, Ceph: http://127.0.0.1:8333).",
    )
    store_ttl: float = Field(
        7 * 86_400.0,
        gt=0,
        description="Seconds a stored file waits for its receiver before it is deleted.",
    )
    store_quota_user: int = Field(
        2 * 1024 * MB,
        ge=0,
        description="Bytes a user may have stored for others at once (0: none).",
    )
    store_quota_room: int = Field(
        10 * 1024 * MB,
        ge=0,
        description="Bytes stored for later delivery per room at once (0: none).",
    )
    mime_allow: list[str] = Field(
        default_factory=list, description="If set, only these MIME types may be offered."
    )
    mime_deny: list[str] = Field(
        default_factory=list, description="MIME types that may never be offered."
    )
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list,
        description='ICE servers for clients, as RTCIceServer JSON ([{"urls": [...]}]).',
    )
    turn_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated TURN URLs handed to clients with time-limited "
        "credentials (turn:host:3478,turns:host:5349).",
    )
    turn_secret: SecretStr | None = Field(
        None, description="The secret shared with the TURN server (coturn static-auth-secret)."
    )
    turn_ttl: int = Field(3600, gt=0, description="Seconds a client's TURN credentials stay valid.")
    guests: bool | None = Field(
        None,
        description="Allow guest sign-in on the page (a display name instead of a token); "
        "unset: only when HOST is a loopback address.",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")

    @field_validator("turn_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
