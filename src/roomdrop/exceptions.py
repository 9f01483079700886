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
    │   │   ├── ChunkOutOfRange      its index is not in 0..total_chunks-1
    │   │   ├── ChunkSizeMismatch    its length is not the one its index implies
    │   │   └── TransferNotActive    the transfer is not accepting chunks now
    │   ├── IntegrityError       the assembled file's sha256 does not match the offer
    │   └── StorageError         the disk refused (full, unwritable, vanished)
    └── PolicyError              refused by a configured limit (has .code)
        ├── FileTooLarge
        ├── TooManyTransfers
        └── MimeTypeNotAllowed

Every class carries a short machine-readable ``code`` that travels in ``error`` and
``file-share-error`` messages (see docs/protocol.md).
"""

from __future__ import annotations

__all__ = [
    "BadChecksum",
    "ChunkOutOfRange",
    "ChunkRejected",
    "ChunkSizeMismatch",
    "FileTooLarge",
    "IntegrityError",
    "InvalidTransition",
    "MimeTypeNotAllowed",
    "PolicyError",
    "ProtocolError",
    "RoomdropError",
    "StorageError",
    "TooManyTransfers",
    "TransferError",
    "TransferNotActive",
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
    code = "unknown-transfer"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(transfer_id, f"no transfer {transfer_id!r}")


class InvalidTransition(TransferError):
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
    code = "bad-checksum"


class ChunkOutOfRange(ChunkRejected):
    code = "chunk-out-of-range"


class ChunkSizeMismatch(ChunkRejected):
    code = "chunk-size-mismatch"


class TransferNotActive(ChunkRejected):
    code = "transfer-not-active"


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
    code = "file-too-large"


class TooManyTransfers(PolicyError):
    code = "too-many-transfers"


class MimeTypeNotAllowed(PolicyError):
    code = "mime-type-not-allowed"
