"""The transfer record: what one transfer is, how far it has come, and its status.

:class:`Transfer` holds the seed's transfer object (its field names are kept exactly)
plus what verification and resume need (``sha256``, ``mime_type``). Its status changes
only through :meth:`Transfer.apply`, which goes through the state table. Times are
passed in as numbers (wall-clock seconds and monotonic seconds), so this module never
reads a clock itself.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from roomdrop.exceptions import EXPIRED, INACTIVE, FileTooLarge, IntegrityError, TooManyTransfers
from roomdrop.protocol.messages import E2E, Offer
from roomdrop.protocol.names import sanitize_filename
from roomdrop.protocol.state import FINAL_STATUSES, LIVE_STATUSES, Event, Status, apply_event

__all__ = ["Limits", "RateMeter", "Transfer", "TransferObject", "iso"]


def iso(epoch_seconds: float) -> str:
    """``2025-11-10T02:10:00Z``: the seed's timestamp format."""
    stamp = datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")
    return stamp.replace("+00:00", "Z")


class TransferObject(BaseModel):
    """The shape of :meth:`Transfer.snapshot`: the seed's transfer object (its field
    names exactly), plus ``error_code``, ``speed_bps``, ``eta_seconds``, ``saved_path``,
    and the offer's ``mime_type`` and ``sha256`` (so a client that restarted can tell its
    own content in ``room-state`` and resume it under the same transfer id)."""

    transfer_id: str
    room_id: str
    sender_id: str
    receiver_id: str
    filename: str
    file_size: int
    chunk_size: int
    total_chunks: int
    chunks_sent: int
    status: Status
    progress_percent: float
    bytes_transferred: int
    started_at: str | None
    completed_at: str | None
    error: str | None
    error_code: str | None = None
    speed_bps: float = 0.0
    eta_seconds: float | None = None
    saved_path: str | None = None
    mime_type: str = "application/octet-stream"
    sha256: str | None = None
    e2e: E2E | None = None
    """The offer's sealed content key (absent: a transfer in the clear), which lets a
    party that restarted take the transfer up."""
    store: bool = False
    """Kept in the server's store for a later delivery (the sender's ``--store``)."""
    stored_at: str | None = None
    """When every chunk was in the store; from then on it is a delivery from the store."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The plan's limits on offers and on how long a transfer may last."""

    max_file_size: int
    max_transfers_per_user: int
    max_transfers_per_room: int
    idle_timeout: float
    expiry: float
    store_ttl: float = 7 * 86_400.0

    def check_size(self, size: int) -> None:
        if size > self.max_file_size:
            raise FileTooLarge(f"file of {size} bytes exceeds the {self.max_file_size}-byte limit")

    def check_counts(self, live_per_user: dict[str, int], room_id: str, live_in_room: int) -> None:
        """Refuse a new transfer if one of its parties (``live_per_user``: how many live
        transfers each party of the new one has now) or its room is at its limit."""
        for user, live in live_per_user.items():
            if live >= self.max_transfers_per_user:
                raise TooManyTransfers(
                    f"{user} already has {self.max_transfers_per_user} transfers under way"
                )
        if live_in_room >= self.max_transfers_per_room:
            raise TooManyTransfers(
                f"room {room_id} already has {self.max_transfers_per_room} transfers under way"
            )

    def overdue(self, r: Transfer, now: float) -> tuple[Event, str, str] | None:
        """What ends ``r`` at monotonic time ``now``, if its time is up: any live transfer
        older than ``expiry`` fails (``expired``); an ``active`` one with no chunk or
        state change for ``idle_timeout`` is cancelled (``inactive``). The event, the
        error code and the message; None if neither applies."""
        if r.status is Status.STORED and now - (r.stored_mono or 0.0) > self.store_ttl:
            return Event.FAIL, EXPIRED, f"not taken from the store in {self.store_ttl:g} s"
        # a delivery from the store has its expiry from when it was stored
        start = r.created_mono if r.stored_mono is None else r.stored_mono
        if r.live and now - start > self.expiry:
            return Event.FAIL, EXPIRED, f"expired after {self.expiry:g} s"
        if r.status is Status.ACTIVE and now - r.last_activity > self.idle_timeout:
            return Event.CANCEL, INACTIVE, f"no activity for {self.idle_timeout:g} s"
        return None


class RateMeter:
    """Bytes per second over the last ``window`` seconds of samples."""

    __slots__ = ("_samples", "window")

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque(maxlen=256)

    def record(self, now: float, total_bytes: int) -> None:
        self._samples.append((now, total_bytes))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    def reset(self) -> None:
        self._samples.clear()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        # a count that went back (the receiver's report after the server's estimate of
        # what it delivered) is no negative speed
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0


@dataclass(slots=True)
class Transfer:
    transfer_id: str
    room_id: str
    sender_id: str
    receiver_id: str
    filename: str
    file_size: int
    chunk_size: int
    total_chunks: int
    sha256: str
    mime_type: str
    created_mono: float
    """Monotonic time of the offer (expiry counts from here)."""
    status: Status = Status.PENDING
    chunks_sent: int = 0
    bytes_transferred: int = 0
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    error_code: str | None = None
    saved_path: str | None = None
    e2e: E2E | None = None
    """The offer's end-to-end part (None: the chunks travel in the clear)."""
    store: bool = False
    """Kept in the server's store for the receiver (the offer's ``store``)."""
    stored_at: str | None = None
    stored_mono: float | None = None
    """Wall and monotonic time every chunk was in the store (the store's TTL, and a
    delivery's expiry, count from here); None before."""
    last_activity: float = 0.0
    """Monotonic time of the last state change or chunk (inactivity counts from here)."""
    meter: RateMeter = field(default_factory=RateMeter)

    def __post_init__(self) -> None:
        self.last_activity = self.created_mono

    @classmethod
    def from_offer(cls, offer: Offer, sender_id: str, room_id: str, *, mono: float) -> Transfer:
        """The pending record of an offer that arrived over the wire (its file name
        sanitised), offered at monotonic time ``mono``."""
        return cls(
            transfer_id=str(offer.transfer_id),
            room_id=room_id,
            sender_id=sender_id,
            receiver_id=offer.receiver_id,
            filename=sanitize_filename(offer.filename),
            file_size=offer.file_size,
            chunk_size=offer.chunk_size,
            total_chunks=offer.total_chunks,
            sha256=offer.sha256,
            mime_type=offer.mime_type,
            created_mono=mono,
            e2e=offer.e2e,
            store=offer.store,
        )

    def offer(self) -> Offer:
        """The ``file-share-offer`` payload of this transfer (``store`` as it was)."""
        return Offer(
            transfer_id=UUID(self.transfer_id),
            receiver_id=self.receiver_id,
            filename=self.filename,
            file_size=self.file_size,
            mime_type=self.mime_type,
            chunk_size=self.chunk_size,
            total_chunks=self.total_chunks,
            sha256=self.sha256,
            e2e=self.e2e,
            store=self.store,
        )

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def delivering(self) -> bool:
        """A stored transfer on its way from the store to the receiver."""
        return self.stored_at is not None and self.live

    def involves(self, user_id: str) -> bool:
        return user_id in (self.sender_id, self.receiver_id)

    def apply(self, event: Event, *, wall: float, mono: float) -> Status:
        """Change status through the state table; raise if the table forbids it."""
        self.status = apply_event(self.status, event, transfer_id=self.transfer_id)
        self.last_activity = mono
        if event is Event.ACCEPT:
            self.started_at = iso(wall)
        if event in (Event.PAUSE, Event.RESUME):
            self.meter.reset()
        if event is Event.STORE:
            self.stored_at, self.stored_mono = iso(wall), mono
        if self.stored_at is not None and event is Event.ACCEPT:
            self.set_progress(0, 0, mono=mono)  # the delivery counts from nothing
            self.meter.reset()
        if self.ended:
            self.completed_at = iso(wall)
        return self.status

    def fail(self, code: str, message: str, *, wall: float, mono: float) -> None:
        self.apply(Event.FAIL, wall=wall, mono=mono)
        self.error_code, self.error = code, message

    def change(
        self,
        event: Event,
        *,
        wall: float,
        mono: float,
        code: str | None = None,
        error: str | None = None,
        sha256: str | None = None,
    ) -> None:
        """Apply ``event`` as the server records it: ``reject`` and ``cancel`` keep
        ``error`` as their reason (and ``code`` as ``error_code``: the sweeper's
        ``inactive``), ``fail`` records ``code`` and ``error``, and ``complete`` needs
        the receiver's ``sha256`` to be the offer's, then counts every chunk as in."""
        if event is Event.FAIL:
            self.fail(code or "failed", error or "", wall=wall, mono=mono)
            return
        if event is Event.COMPLETE:
            self.check_reported_sha256(sha256 or "")
        self.apply(event, wall=wall, mono=mono)
        if event in (Event.REJECT, Event.CANCEL):
            self.error = error or None
            if code:
                self.error_code = code
        elif event is Event.COMPLETE:
            self.set_progress(self.total_chunks, self.file_size, mono=mono)

    def check_reported_sha256(self, sha256: str) -> None:
        """The receiver's word that the whole file verified must name the offer's sha256."""
        if sha256 != self.sha256:
            raise IntegrityError(
                self.transfer_id, f"receiver reports sha256 {sha256}, the offer has {self.sha256}"
            )

    def set_progress(self, chunks: int, nbytes: int, *, mono: float) -> None:
        self.chunks_sent, self.bytes_transferred = chunks, nbytes
        self.last_activity = mono
        self.meter.record(mono, nbytes)

    @property
    def progress_percent(self) -> float:
        if self.file_size == 0:
            return 100.0 if self.status is Status.COMPLETED else 0.0
        exact = Decimal(100 * self.bytes_transferred) / Decimal(self.file_size)
        return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))

    def snapshot(self) -> dict[str, Any]:
        """The seed's transfer object, plus ``error_code`` (machine-readable, beside the
        seed's ``error``), ``speed_bps``, ``eta_seconds``, ``saved_path`` (where a
        completed file was put; ``None`` elsewhere), and the offer's ``mime_type`` and
        ``sha256``, and its ``e2e`` part if it has one."""
        speed = self.meter.rate() if self.status is Status.ACTIVE else 0.0
        remaining = self.file_size - self.bytes_transferred
        eta = round(remaining / speed, 1) if speed > 0 else None
        return {
            "transfer_id": self.transfer_id,
            "room_id": self.room_id,
            "sender_id": self.sender_id,
            "receiver_id": self.receiver_id,
            "filename": self.filename,
            "file_size": self.file_size,
            "chunk_size": self.chunk_size,
            "total_chunks": self.total_chunks,
            "chunks_sent": self.chunks_sent,
            "status": self.status.value,
            "progress_percent": self.progress_percent,
            "bytes_transferred": self.bytes_transferred,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "error": self.error,
            "error_code": self.error_code,
            "speed_bps": round(speed, 1),
            "eta_seconds": eta if remaining > 0 else 0.0,
            "saved_path": self.saved_path,
            "mime_type": self.mime_type,
            "sha256": self.sha256,
            "e2e": self.e2e.model_dump(mode="json") if self.e2e is not None else None,
            "store": self.store,
            "stored_at": self.stored_at,
        }
