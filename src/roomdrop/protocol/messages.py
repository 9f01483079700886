"""Control messages: the envelope and every payload, parsed and validated in one place.

Every control message is a JSON object ``{type, payload, sender_id, room_id,
timestamp}`` (the seed platform's envelope). ``type`` is one of :class:`MessageType`;
``payload`` is validated against the model :data:`PAYLOADS` names for that type. The
server overwrites ``sender_id``, ``room_id`` and ``timestamp`` on everything it
forwards. :func:`parse_message` turns text into a :class:`Message` or raises
:class:`~roomdrop.exceptions.ProtocolError` naming the field at fault.

The models are strict about JSON types: an integer field takes a JSON integer only
(not ``"10"``, ``10.0`` or ``true``), a string field a JSON string only, a number field
an integer or a float but not a boolean or a string. Only UUIDs are parsed from
strings (they have no JSON type of their own).
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from roomdrop.exceptions import ProtocolError
from roomdrop.protocol.chunks import count_chunks
from roomdrop.protocol.frames import MAX_CHUNK_SIZE, JsonChunk
from roomdrop.protocol.state import Status

__all__ = [
    "E2E",
    "MAX_CHUNK_MESSAGE_BYTES",
    "MAX_CHUNK_SIZE",
    "MAX_MESSAGE_BYTES",
    "PAYLOADS",
    "ChunkRequest",
    "DirectCandidate",
    "DirectHints",
    "ErrorPayload",
    "FileShareError",
    "Message",
    "MessageType",
    "MimeLists",
    "Offer",
    "Progress",
    "PublicKey",
    "SealedKey",
    "SeenUser",
    "TransferRef",
    "parse_message",
]

MAX_MESSAGE_BYTES: Final = 256 * 1024
"""Largest control message accepted, in UTF-8 bytes."""
MAX_DEPTH: Final = 32
"""Deepest JSON nesting a message may have."""
MAX_CHUNK_MESSAGE_BYTES: Final = 4 * -(-MAX_CHUNK_SIZE // 3) + 4096
"""Largest ``file-share-chunk`` message: a base64 chunk of MAX_CHUNK_SIZE and its fields."""
Sha256Hex = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
PublicKey = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
"""A device's X25519 public key: 32 bytes in unpadded base64url (43 characters)."""
B64Url = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,512}$")]
UserId = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Count = Annotated[StrictInt, Field(ge=0)]
Range = tuple[Count, Count]


class MessageType(StrEnum):
    # room and WebRTC signalling (the seed platform's types)
    OFFER = "offer"
    ANSWER = "answer"
    ICE_CANDIDATE = "ice-candidate"
    USER_JOINED = "user-joined"
    USER_LEFT = "user-left"
    ROOM_STATE = "room-state"
    ERROR = "error"
    # file sharing (the seed's five, then what the protocol needs)
    FILE_SHARE_OFFER = "file-share-offer"
    FILE_SHARE_ACCEPT = "file-share-accept"
    FILE_SHARE_REJECT = "file-share-reject"
    FILE_SHARE_PROGRESS = "file-share-progress"
    FILE_SHARE_COMPLETE = "file-share-complete"
    FILE_SHARE_PAUSE = "file-share-pause"
    FILE_SHARE_RESUME = "file-share-resume"
    FILE_SHARE_CANCEL = "file-share-cancel"
    FILE_SHARE_CHUNK_REQUEST = "file-share-chunk-request"
    FILE_SHARE_CHUNK = "file-share-chunk"
    FILE_SHARE_ERROR = "file-share-error"
    FILE_SHARE_STORED = "file-share-stored"
    """Every chunk of a file kept for later is in the server's store (§16)."""
    # the direct path between two CLIs (docs/protocol.md §15)
    DIRECT_HINTS = "direct-hints"


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SealedKey(_Payload):
    """A content key sealed to one device key (HPKE auth mode): the encapsulated key
    and the ciphertext, unpadded base64url."""

    enc: PublicKey
    ct: B64Url


class E2E(_Payload):
    """The end-to-end part of an offer (:mod:`roomdrop.e2e`, docs/protocol.md): the two
    device keys and the transfer's content key sealed to each of them."""

    v: Literal[1] = 1
    sender_key: PublicKey
    receiver_key: PublicKey
    for_receiver: SealedKey
    for_sender: SealedKey
    """Sealed to the sender's own key, so a sender that restarted can take it up."""


class Offer(_Payload):
    """``file-share-offer``: what the receiver needs to decide, verify and resume;
    ``e2e`` (absent only where the server allows transfers in the clear) seals the
    content key the chunks are encrypted under."""

    transfer_id: UUID
    receiver_id: UserId
    filename: StrictStr = Field(min_length=1, max_length=1024)
    file_size: Count
    mime_type: StrictStr = Field(default="application/octet-stream", max_length=255)
    chunk_size: StrictInt = Field(ge=1, le=MAX_CHUNK_SIZE)
    total_chunks: Count
    sha256: Sha256Hex
    e2e: E2E | None = None
    store: StrictBool = False
    """Keep it for the receiver (``send --store``: the sender's consent): the server takes
    the chunks into its store and delivers them when the receiver joins (§16)."""

    @model_validator(mode="after")
    def _chunk_count_matches(self) -> Self:
        expected = count_chunks(self.file_size, self.chunk_size)
        if self.total_chunks != expected:
            raise ValueError(
                f"total_chunks {self.total_chunks} does not match file_size {self.file_size} "
                f"and chunk_size {self.chunk_size} (expected {expected})"
            )
        return self


class TransferRef(_Payload):
    """Payload of pause, resume, cancel and reject: which transfer, and optionally why."""

    transfer_id: UUID
    reason: StrictStr | None = Field(default=None, max_length=1024)


class Accept(_Payload):
    """``file-share-accept``; ``missing`` lists the chunks the receiver still needs
    (absent: all of them), which is how a resumed transfer skips what arrived before;
    ``scan``: the receiver says it scans the file for malware before saving it (a claim
    the server cannot check; a room with ``require_scan`` takes no accept without it)."""

    transfer_id: UUID
    missing: list[Range] | None = None
    scan: StrictBool | None = None

    @field_validator("missing")
    @classmethod
    def _ranges_ordered(cls, value: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        return _check_ranges(value) if value is not None else None


class ChunkRequest(_Payload):
    """``file-share-chunk-request``: send these chunks (again)."""

    transfer_id: UUID
    ranges: list[Range] = Field(min_length=1)
    reason: Literal["missing", "bad-checksum", "resume"] = "missing"

    @field_validator("ranges")
    @classmethod
    def _ranges_ordered(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return _check_ranges(value)


class Progress(_Payload):
    """``file-share-progress``: a snapshot of how far a transfer has come."""

    transfer_id: UUID
    chunks_sent: Count
    bytes_transferred: Count
    progress_percent: StrictFloat = Field(ge=0, le=100)
    status: Status | None = None
    speed_bps: StrictFloat | None = Field(default=None, ge=0)
    eta_seconds: StrictFloat | None = Field(default=None, ge=0)


class Complete(_Payload):
    """``file-share-complete``: the receiver holds the whole file and verified it."""

    transfer_id: UUID
    sha256: Sha256Hex


class FileShareError(_Payload):
    """``file-share-error``: one transfer failed (it is ``failed`` now)."""

    transfer_id: UUID
    code: StrictStr = Field(min_length=1, max_length=64)
    message: StrictStr = Field(max_length=2048)


class ErrorPayload(_Payload):
    """``error``: the last message was refused and changed nothing; the connection carries
    on. ``transfer_id`` names the transfer it was about, if any."""

    code: StrictStr = Field(min_length=1, max_length=64)
    message: StrictStr = Field(max_length=2048)
    transfer_id: UUID | None = None


class Signal(BaseModel):
    """``offer``, ``answer``, ``ice-candidate``: WebRTC signalling for one participant.
    ``target_id`` names the recipient; the rest (sdp, candidate, ...) passes through."""

    model_config = ConfigDict(frozen=True, extra="allow")

    target_id: UserId


Token = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{21}[AQgw]$")]
"""16 random bytes in unpadded base64url (22 characters)."""
MAX_DIRECT_CANDIDATES: Final = 16


class DirectCandidate(_Payload):
    """An address and port a client listens on for the direct path: an IP literal (a
    name would make the peer resolve it), never a wildcard."""

    host: StrictStr
    port: Annotated[StrictInt, Field(ge=1, le=65535)]

    @field_validator("host")
    @classmethod
    def _ip_literal(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        if address.is_unspecified or address.is_multicast:
            raise ValueError(f"{value} cannot be connected to")
        return str(address)


class DirectHints(_Payload):
    """``direct-hints``: where the sending client listens for a direct TCP connection
    from ``target_id`` and the fresh ``token`` that binds its handshake to this attempt;
    ``answers`` is the peer's token when this replies to the peer's hints."""

    target_id: UserId
    token: Token
    answers: Token | None = None
    candidates: list[DirectCandidate] = Field(max_length=MAX_DIRECT_CANDIDATES)


class UserEvent(_Payload):
    """``user-joined`` and ``user-left``; a joining participant's device ``key``."""

    user_id: UserId
    key: PublicKey | None = None


class MimeLists(_Payload):
    """The server's MIME allow and deny lists (shell-style patterns), which a receiver
    applies to what the first decrypted chunk shows the content to be."""

    allow: list[StrictStr] = Field(default_factory=list)
    deny: list[StrictStr] = Field(default_factory=list)


class SeenUser(_Payload):
    """Someone who has been in the room lately: the device key they last published
    there, and when they were last there (ISO 8601, UTC)."""

    key: PublicKey | None = None
    last_seen: StrictStr = Field(max_length=64)


class RoomState(_Payload):
    """``room-state``: who is in the room (and each one's device key), sent to a
    newcomer; the transfers it is a party to; the server's MIME lists and whether it
    requires end-to-end encryption."""

    participants: list[UserId]
    transfers: list[dict[str, Any]] = Field(default_factory=list)
    keys: dict[UserId, PublicKey] = Field(default_factory=dict)
    mime: MimeLists | None = None
    require_e2e: StrictBool | None = None
    direct: StrictBool | None = None
    """Whether the server forwards ``direct-hints`` (``None``: a server from before)."""
    require_scan: StrictBool | None = None
    """Whether only receivers that scan files for malware may accept (``Accept.scan``)."""
    seen: dict[UserId, SeenUser] = Field(default_factory=dict)
    """Who has been in the room within the store's TTL, those here now among them: whom
    a file may be kept for (``Offer.store``), under the key they last published."""
    max_transfers_per_user: StrictInt | None = None
    """How many transfers one user may have under way at once (a sender to several
    receivers offers at most that many at a time; ``None``: a server from before)."""


PAYLOADS: Final[dict[MessageType, type[BaseModel]]] = {
    MessageType.OFFER: Signal,
    MessageType.ANSWER: Signal,
    MessageType.ICE_CANDIDATE: Signal,
    MessageType.USER_JOINED: UserEvent,
    MessageType.USER_LEFT: UserEvent,
    MessageType.ROOM_STATE: RoomState,
    MessageType.ERROR: ErrorPayload,
    MessageType.FILE_SHARE_OFFER: Offer,
    MessageType.FILE_SHARE_ACCEPT: Accept,
    MessageType.FILE_SHARE_REJECT: TransferRef,
    MessageType.FILE_SHARE_PROGRESS: Progress,
    MessageType.FILE_SHARE_COMPLETE: Complete,
    MessageType.FILE_SHARE_PAUSE: TransferRef,
    MessageType.FILE_SHARE_RESUME: TransferRef,
    MessageType.FILE_SHARE_CANCEL: TransferRef,
    MessageType.FILE_SHARE_CHUNK_REQUEST: ChunkRequest,
    MessageType.FILE_SHARE_CHUNK: JsonChunk,
    MessageType.FILE_SHARE_ERROR: FileShareError,
    MessageType.FILE_SHARE_STORED: TransferRef,
    MessageType.DIRECT_HINTS: DirectHints,
}


def _check_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    previous_end = -1
    for start, end in ranges:
        if start >= end:
            raise ValueError(f"range [{start}, {end}) is empty")
        if start <= previous_end:
            raise ValueError("ranges must be sorted and must not overlap")
        previous_end = end
    return ranges


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: MessageType
    payload: dict[str, Any] = Field(default_factory=dict)
    sender_id: StrictStr | None = None
    room_id: StrictStr | None = None
    timestamp: StrictStr | None = None


class Message(BaseModel):
    """A parsed control message whose payload is the model for its type."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: MessageType
    payload: BaseModel
    sender_id: str | None = None
    room_id: str | None = None
    timestamp: str | None = None

    @classmethod
    def build(
        cls,
        type: MessageType,
        payload: BaseModel | dict[str, Any],
        *,
        sender_id: str | None = None,
        room_id: str | None = None,
        timestamp: str | None = None,
    ) -> Message:
        """Make a message, validating ``payload`` (a model or a plain dict)."""
        model = payload if isinstance(payload, BaseModel) else _validate_payload(type, payload)
        if not isinstance(model, PAYLOADS[type]):
            expected = PAYLOADS[type].__name__
            raise TypeError(f"{type.value} takes {expected}, not {model.__class__.__name__}")
        return cls(
            type=type,
            payload=model,
            sender_id=sender_id,
            room_id=room_id,
            timestamp=timestamp or now_iso(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            # signalling passes through as sent (nulls included); our payloads omit None
            "payload": self.payload.model_dump(
                mode="json", exclude_none=not isinstance(self.payload, Signal)
            ),
            "sender_id": self.sender_id,
            "room_id": self.room_id,
            "timestamp": self.timestamp,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def stamped(self, *, sender_id: str, room_id: str, timestamp: str | None = None) -> Message:
        """A copy with the fields the server sets on everything it forwards."""
        return self.model_copy(
            update={"sender_id": sender_id, "room_id": room_id, "timestamp": timestamp or now_iso()}
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def _validate_payload(type: MessageType, payload: dict[str, Any]) -> BaseModel:
    try:
        return PAYLOADS[type].model_validate(payload)
    except ValidationError as exc:
        detail = _first_error(exc)
        where = "payload." if exc.errors()[0]["loc"] else "payload: "
        raise ProtocolError(f"{type.value}: {where}{detail}") from None


def _check_depth(obj: Any) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        children = (
            value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    raise ProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels")
                stack.append((child, depth + 1))


def parse_message(
    raw: str | bytes | dict[str, Any], *, max_bytes: int = MAX_MESSAGE_BYTES
) -> Message:
    """Parse and validate one control message.

    A message may be ``max_bytes`` long in UTF-8; a ``file-share-chunk`` may be up to
    MAX_CHUNK_MESSAGE_BYTES (a base64 chunk of the largest chunk size)."""
    size = 0
    if isinstance(raw, str | bytes):
        size = len(raw.encode()) if isinstance(raw, str) else len(raw)
        limit = max(max_bytes, MAX_CHUNK_MESSAGE_BYTES)
        if size > limit:
            raise ProtocolError(f"message of {size} bytes exceeds the {limit}-byte limit")
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"invalid JSON: {exc}") from None
        except RecursionError:
            raise ProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    else:
        obj = raw
    _check_depth(obj)
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message is a JSON object, not {type(obj).__name__}")
    if "type" in obj and obj["type"] not in MessageType._value2member_map_:
        raise ProtocolError(f"unknown message type {obj['type']!r}")
    try:
        envelope = _Envelope.model_validate(obj)
    except ValidationError as exc:
        raise ProtocolError(f"envelope: {_first_error(exc)}") from None
    if size > max_bytes and envelope.type is not MessageType.FILE_SHARE_CHUNK:
        raise ProtocolError(f"message of {size} bytes exceeds the {max_bytes}-byte limit")
    return Message(
        type=envelope.type,
        payload=_validate_payload(envelope.type, envelope.payload),
        sender_id=envelope.sender_id,
        room_id=envelope.room_id,
        timestamp=envelope.timestamp,
    )
