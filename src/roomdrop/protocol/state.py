"""The transfer state machine: one table, one function.

Theory of operation
-------------------
A transfer starts ``pending`` when it is offered. The receiver accepts (``active``)
or rejects (``rejected``). While active, either party may pause and resume; the
receiver completes it once every chunk is in and the whole file verified. Anything
not yet ended may be cancelled, or fail (integrity error, full disk, expiry).
``completed``, ``failed``, ``cancelled`` and ``rejected`` are final.

A transfer kept for a later delivery (``send --store``) is accepted by the server on the
store's behalf, and when every chunk is in the store it is ``stored``: neither live (it
counts toward no concurrency limit, only the store quotas) nor final. The receiver, once
it joins, accepts it (``active`` again: the delivery from the store) or rejects it; the
sender may withdraw it (``cancel``); its time in the store may run out (``fail``)::

                 accept              complete
    pending ─────────────▶ active ─────────────▶ completed
       │ reject            │  ▲
       ▼                   │  │ resume
    rejected         pause ▼  │
                          paused

    pending / active / paused ── cancel ──▶ cancelled
    pending / active / paused ── fail   ──▶ failed

                  store            accept (the receiver)
    active ───────────────▶ stored ──────────────▶ active ──▶ … completed
    (the upload)               │ reject ▶ rejected, cancel ▶ cancelled, fail ▶ failed

Nothing else in roomdrop assigns a status: every change goes through
:func:`apply_event`, and an event the table does not list raises
:class:`~roomdrop.exceptions.InvalidTransition`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from roomdrop.exceptions import InvalidTransition

__all__ = ["FINAL_STATUSES", "LIVE_STATUSES", "TRANSITIONS", "Event", "Status", "apply_event"]


class Status(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    STORED = "stored"


class Event(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    CANCEL = "cancel"
    FAIL = "fail"
    STORE = "store"


TRANSITIONS: Final[dict[tuple[Status, Event], Status]] = {
    (Status.PENDING, Event.ACCEPT): Status.ACTIVE,
    (Status.PENDING, Event.REJECT): Status.REJECTED,
    (Status.PENDING, Event.CANCEL): Status.CANCELLED,
    (Status.PENDING, Event.FAIL): Status.FAILED,
    (Status.ACTIVE, Event.PAUSE): Status.PAUSED,
    (Status.ACTIVE, Event.COMPLETE): Status.COMPLETED,
    (Status.ACTIVE, Event.CANCEL): Status.CANCELLED,
    (Status.ACTIVE, Event.FAIL): Status.FAILED,
    (Status.PAUSED, Event.RESUME): Status.ACTIVE,
    (Status.PAUSED, Event.CANCEL): Status.CANCELLED,
    (Status.PAUSED, Event.FAIL): Status.FAILED,
    (Status.ACTIVE, Event.STORE): Status.STORED,
    (Status.STORED, Event.ACCEPT): Status.ACTIVE,
    (Status.STORED, Event.REJECT): Status.REJECTED,
    (Status.STORED, Event.CANCEL): Status.CANCELLED,
    (Status.STORED, Event.FAIL): Status.FAILED,
}
"""Every legal (status, event) pair and the status it leads to."""

LIVE_STATUSES: Final = frozenset({Status.PENDING, Status.ACTIVE, Status.PAUSED})
"""Statuses that count toward the concurrency limits."""

FINAL_STATUSES: Final = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.REJECTED}
)
"""Statuses nothing leads out of."""


def apply_event(status: Status, event: Event, *, transfer_id: str = "") -> Status:
    """Return the status that ``event`` leads to from ``status``, or raise."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise InvalidTransition(transfer_id, status.value, event.value) from None
