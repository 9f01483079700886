"""Every exception roomdrop raises, in one place.

The hierarchy separates "the other side sent something bad" from "this transfer
cannot go on" from "policy says no"::

    RoomdropError
    ├── ProtocolError            the peer sent a malformed message or frame
    ├── TransferError            something is wrong with one transfer (has .transfer_id)
    │   ├── UnknownTransfer      no transfer with that id here
    │   ├── InvalidTransition    the state table forbids this change
    │   ├── ChunkRejected        a chunk was refused and not counted (has .reason)
    │   │   ├── BadChecksum          its sha256 does not match its data
    │   │   │   └── DamagedChunks    the whole file is wrong: these held chunks fail theirs
    │   │   ├── ChunkOutOfRange      its index is not in 0..total_chunks-1
    │   │   ├── ChunkSizeMismatch    its length is not the one its index implies
    │   │   └── TransferNotActive    the transfer is not accepting chunks now
    │   ├── RelayClosed          the server's relay of this transfer was closed
    │   ├── IntegrityError       the assembled file's sha256 does not match the offer
    │   └── StorageError         the disk refused (full, unwritable, vanished)
    ├── PolicyError              refused by a configured limit (has .code)
    │   ├── FileTooLarge
    │   ├── StoreQuotaExceeded   the user's or the room's stored bytes would pass its quota
    │   ├── UnknownReceiver      a file kept for someone the server has never seen
    │   ├── TooManyTransfers
    │   ├── MimeTypeNotAllowed
    │   ├── Infected             the receiver's malware scanner found something in the file
    │   ├── ScanRequired         a room (``ROOMDROP_REQUIRE_SCAN``) takes only receivers that scan
    │   └── RateLimited
    ├── Unauthorized             no valid token (HTTP 401, WebSocket close 4401)
    ├── Forbidden                a valid user who may not do this (HTTP 403, ``error``)
    ├── BackendUnavailable       the state instances share is out of reach (HTTP 503)
    ├── ScanUnavailable          the receiver's malware scanner cannot be reached or failed
    ├── StoreError               the store of files kept for later refused or is out of reach
    │   ├── StoreUnavailable         unreachable (connection refused, timed out)
    │   ├── StoreRefused             it answered no: credentials, bucket missing, permission
    │   └── StoreFull                no room left in the store (or on its disk)
    └── ServerUnreachable        a client cannot reach the server

Every class carries a short machine-readable ``code`` that travels in ``error`` and
``file-share-error`` messages and in a transfer's ``error_code``; :data:`ERROR_CODES`
lists them all, with the two that no exception carries (a transfer ended by the sweeper).
"""

from __future__ import annotations

__all__ = [
    "ERROR_CODES",
    "EXPIRED",
    "INACTIVE",
    "BackendUnavailable",
    "BadChecksum",
    "ChunkOutOfRange",
    "ChunkRejected",
    "ChunkSizeMismatch",
    "DamagedChunks",
    "DirectDisabled",
    "DirectRefused",
    "E2EError",
    "E2ERequired",
    "FileTooLarge",
    "Forbidden",
    "Infected",
    "IntegrityError",
    "InvalidTransition",
    "KeyChanged",
    "MimeTypeNotAllowed",
    "PolicyError",
    "ProtocolError",
    "RateLimited",
    "RelayClosed",
    "RoomdropError",
    "ScanRequired",
    "ScanUnavailable",
    "ServerUnreachable",
    "StorageError",
    "StoreError",
    "StoreFull",
    "StoreQuotaExceeded",
    "StoreRefused",
    "StoreUnavailable",
    "TooManyTransfers",
    "TransferError",
    "TransferNotActive",
    "Unauthorized",
    "UnknownReceiver",
    "UnknownTransfer",
]


class RoomdropError(Exception):
    """Base class of every roomdrop error."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(RoomdropError):
    """The other side sent a message or frame that does not follow the protocol."""

    code = "protocol-error"


class TransferError(RoomdropError):
    """Something is wrong with one transfer."""

    code = "transfer-error"

    def __init__(self, transfer_id: str, message: str) -> None:
        super().__init__(message)
        self.transfer_id = transfer_id


class UnknownTransfer(TransferError):
    """No transfer with that id here."""

    code = "unknown-transfer"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(transfer_id, f"no transfer {transfer_id!r}")


class InvalidTransition(TransferError):
    """The state table forbids this change."""

    code = "invalid-transition"

    def __init__(self, transfer_id: str, status: str, event: str) -> None:
        super().__init__(transfer_id, f"transfer {transfer_id} is {status}: cannot {event}")
        self.status = status
        self.event = event


class ChunkRejected(TransferError):
    """A chunk was refused; it is not counted as received."""

    code = "chunk-rejected"

    def __init__(self, transfer_id: str, chunk_index: int, reason: str) -> None:
        super().__init__(transfer_id, f"chunk {chunk_index} of {transfer_id} rejected: {reason}")
        self.chunk_index = chunk_index
        self.reason = reason


class BadChecksum(ChunkRejected):
    """The chunk's sha256 does not match its data."""

    code = "bad-checksum"


class DamagedChunks(BadChecksum):
    """The whole file's sha256 is wrong and these chunks of the part file fail their own
    (or have none): they were dropped, to be asked for again (reason ``bad-checksum``).
    The chunk whose arrival completed the file was stored."""

    def __init__(self, transfer_id: str, chunk_indexes: list[int], reason: str) -> None:
        super().__init__(transfer_id, chunk_indexes[0], reason)
        self.chunk_indexes = chunk_indexes
        self.message = reason
        self.args = (reason,)


class ChunkOutOfRange(ChunkRejected):
    """The chunk's index is not in 0..total_chunks-1."""

    code = "chunk-out-of-range"


class ChunkSizeMismatch(ChunkRejected):
    """The chunk's length is not the one its index implies."""

    code = "chunk-size-mismatch"


class TransferNotActive(ChunkRejected):
    """The transfer is not taking chunks now."""

    code = "transfer-not-active"


class RelayClosed(TransferError):
    """The relay staging of this transfer is closed; nothing more goes in or comes out."""

    code = "relay-closed"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(transfer_id, f"relay staging of transfer {transfer_id} is closed")


class IntegrityError(TransferError):
    """The whole file's sha256 does not match the one in the offer."""

    code = "integrity-error"


class StorageError(TransferError):
    """The file system refused a read or write (disk full, permissions, ...)."""

    code = "storage-error"


class PolicyError(RoomdropError):
    """A configured limit refuses the request."""

    code = "policy"


class FileTooLarge(PolicyError):
    """The file exceeds the maximum file size."""

    code = "file-too-large"


class TooManyTransfers(PolicyError):
    """A concurrent-transfer limit (per user or per room) is reached."""

    code = "too-many-transfers"


class RateLimited(PolicyError):
    """Too many messages or bytes in too short a time."""

    code = "rate-limited"


class Unauthorized(RoomdropError):
    """No token, or a token that is forged, expired or names no user."""

    code = "unauthorized"


class Forbidden(RoomdropError):
    """The user is known but may not do this (not in the room, not a party, ...)."""

    code = "forbidden"


class ServerUnreachable(RoomdropError):
    """A client could not reach the server, or lost it for longer than it waits."""

    code = "server-unreachable"


class BackendUnavailable(RoomdropError):
    """The state that server instances share (Redis) is out of reach: try again later."""

    code = "backend-unavailable"


class MimeTypeNotAllowed(PolicyError):
    """The file's type is not allowed here."""

    code = "mime-type-not-allowed"


class E2ERequired(PolicyError):
    """This server carries only end-to-end encrypted transfers (``ROOMDROP_REQUIRE_E2E``)."""

    code = "e2e-required"


class DirectDisabled(PolicyError):
    """This server does not forward ``direct-hints`` (``ROOMDROP_ALLOW_DIRECT=false``):
    every byte goes over WebRTC or the relay."""

    code = "direct-disabled"


class Infected(PolicyError):
    """The receiver's malware scanner found something in the file: it was not saved."""

    code = "infected"

    def __init__(self, transfer_id: str, signature: str, message: str) -> None:
        super().__init__(message)
        self.transfer_id = transfer_id
        self.signature = signature
        """What the scanner named (clamd's signature name)."""


class ScanRequired(PolicyError):
    """This room takes only receivers that scan files for malware (``ROOMDROP_REQUIRE_SCAN``)."""

    code = "scan-required"

    def __init__(self, message: str, transfer_id: str | None = None) -> None:
        super().__init__(message)
        self.transfer_id = transfer_id
        """The transfer whose accept was refused (None: not about one)."""


class ScanUnavailable(RoomdropError):
    """The receiver's malware scanner cannot be reached or failed: the file waits, unsaved."""

    code = "scan-unavailable"


class DirectRefused(RoomdropError):
    """A direct connection that is not, or cannot prove it is, the expected peer: dropped."""

    code = "direct-refused"


class StoreError(RoomdropError):
    """The store of files kept for a later delivery failed."""

    code = "store-failed"


class StoreUnavailable(StoreError):
    """The store of files kept for later cannot be reached (refused, timed out)."""

    code = "store-unavailable"


class StoreRefused(StoreError):
    """The store of files kept for later refused (credentials, bucket missing, access)."""

    code = "store-refused"


class StoreFull(StoreError):
    """The store of files kept for later has no room left."""

    code = "store-full"


class StoreQuotaExceeded(PolicyError):
    """Keeping this file would pass the user's or the room's stored-bytes quota."""

    code = "store-quota-exceeded"


class UnknownReceiver(PolicyError):
    """A file kept for a receiver the server has never seen (no device key to seal to)."""

    code = "unknown-receiver"


class E2EError(RoomdropError):
    """A device key, sealed content key or encrypted chunk does not check out."""

    code = "e2e-failed"


class KeyChanged(RoomdropError):
    """A user this client knows showed up with a device key it has not trusted."""

    code = "key-changed"

    def __init__(self, user_id: str, known: list[str], seen: str, message: str) -> None:
        super().__init__(message)
        self.user_id, self.known, self.seen = user_id, known, seen


EXPIRED = "expired"
"""error_code of a transfer that outlived its expiry (1 hour by default)."""
INACTIVE = "inactive"
"""error_code of an active transfer cancelled after its idle timeout (30 s by default)."""


def _codes() -> dict[str, str]:
    codes: dict[str, str] = {}
    pending: list[type[RoomdropError]] = [RoomdropError]
    while pending:
        cls = pending.pop()
        # a subclass sharing its parent's code (DamagedChunks) keeps the parent's line
        codes.setdefault(cls.code, (cls.__doc__ or cls.__name__).strip().splitlines()[0])
        pending.extend(cls.__subclasses__())
    codes[EXPIRED] = "the transfer outlived its expiry"
    codes[INACTIVE] = "the transfer was idle past its timeout and was cancelled"
    return codes


ERROR_CODES: dict[str, str] = _codes()
"""Every error code and what it means."""
