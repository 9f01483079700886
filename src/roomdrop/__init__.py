"""roomdrop: move files between the participants of a room in verified, resumable chunks.

The names below are imported when first used (PEP 562), so that ``import roomdrop``
(which every ``roomdrop`` command does, ``--version`` included) costs nothing: the
engine pulls in pydantic, and a command imports what it needs when it needs it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    **dict.fromkeys(("Clock", "ManualClock", "SystemClock"), "roomdrop.clock"),
    **dict.fromkeys(
        (
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
        ),
        "roomdrop.exceptions",
    ),
    "FileTransferManager": "roomdrop.manager",
    "Status": "roomdrop.protocol.state",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'roomdrop' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
