"""roomdrop: move files between the participants of a room in verified, resumable chunks."""

from __future__ import annotations

from roomdrop.clock import Clock, ManualClock, SystemClock
from roomdrop.exceptions import (
    BadChecksum,
    ChunkOutOfRange,
    ChunkRejected,
    ChunkSizeMismatch,
    FileTooLarge,
    IntegrityError,
    InvalidTransition,
    MimeTypeNotAllowed,
    PolicyError,
    ProtocolError,
    RoomdropError,
    StorageError,
    TooManyTransfers,
    TransferError,
    TransferNotActive,
    UnknownTransfer,
)
from roomdrop.manager import FileTransferManager
from roomdrop.protocol.state import Status

__version__ = "0.1.0"

__all__ = [
    "BadChecksum",
    "ChunkOutOfRange",
    "ChunkRejected",
    "ChunkSizeMismatch",
    "Clock",
    "FileTooLarge",
    "FileTransferManager",
    "IntegrityError",
    "InvalidTransition",
    "ManualClock",
    "MimeTypeNotAllowed",
    "PolicyError",
    "ProtocolError",
    "RoomdropError",
    "Status",
    "StorageError",
    "SystemClock",
    "TooManyTransfers",
    "TransferError",
    "TransferNotActive",
    "UnknownTransfer",
    "__version__",
]
