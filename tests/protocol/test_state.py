"""The state table: every legal change is listed; everything else is refused."""

from __future__ import annotations

import itertools

import pytest

from roomdrop.exceptions import InvalidTransition
from roomdrop.protocol.state import (
    FINAL_STATUSES,
    LIVE_STATUSES,
    TRANSITIONS,
    Event,
    Status,
    apply_event,
)


def test_the_seed_lifecycle_pending_active_paused_active_completed() -> None:
    status = Status.PENDING
    for event in (Event.ACCEPT, Event.PAUSE, Event.RESUME, Event.COMPLETE):
        status = apply_event(status, event)
    assert status is Status.COMPLETED


@pytest.mark.parametrize(("status", "event"), list(itertools.product(Status, Event)))
def test_every_pair_outside_the_table_raises_and_every_pair_inside_follows_it(
    status: Status, event: Event
) -> None:
    if (status, event) in TRANSITIONS:
        assert apply_event(status, event) is TRANSITIONS[(status, event)]
    else:
        with pytest.raises(InvalidTransition) as info:
            apply_event(status, event, transfer_id="t1")
        assert info.value.transfer_id == "t1"
        assert status.value in str(info.value) and event.value in str(info.value)


def test_final_statuses_have_no_way_out() -> None:
    assert {s for (s, _e) in TRANSITIONS} == set(LIVE_STATUSES) | {Status.STORED}
    assert {
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
        Status.REJECTED,
    } == FINAL_STATUSES


def test_only_a_pending_or_a_stored_transfer_can_be_accepted_or_rejected() -> None:
    accepts = {s for (s, e) in TRANSITIONS if e in (Event.ACCEPT, Event.REJECT)}
    assert accepts == {Status.PENDING, Status.STORED}


def test_a_stored_transfer_is_neither_live_nor_final() -> None:
    assert Status.STORED not in LIVE_STATUSES | FINAL_STATUSES
    assert set(Status) == LIVE_STATUSES | FINAL_STATUSES | {Status.STORED}


def test_a_kept_file_is_uploaded_stored_then_delivered_or_withdrawn_or_expired() -> None:
    status = apply_event(Status.PENDING, Event.ACCEPT)  # the server, on the store's behalf
    status = apply_event(apply_event(status, Event.PAUSE), Event.RESUME)  # the sender dropped
    assert apply_event(status, Event.STORE) is Status.STORED
    assert apply_event(Status.STORED, Event.ACCEPT) is Status.ACTIVE  # the receiver joined
    assert apply_event(Status.STORED, Event.CANCEL) is Status.CANCELLED  # withdrawn
    assert apply_event(Status.STORED, Event.FAIL) is Status.FAILED  # expired
    with pytest.raises(InvalidTransition):
        apply_event(Status.STORED, Event.PAUSE)
    with pytest.raises(InvalidTransition):
        apply_event(Status.PAUSED, Event.STORE)  # only a running upload ends stored


def test_only_an_active_transfer_completes() -> None:
    assert [s for (s, e) in TRANSITIONS if e is Event.COMPLETE] == [Status.ACTIVE]
