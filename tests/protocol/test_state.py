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
    assert {s for (s, _e) in TRANSITIONS} == set(LIVE_STATUSES)
    assert {
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
        Status.REJECTED,
    } == FINAL_STATUSES


def test_only_a_pending_transfer_can_be_accepted_or_rejected() -> None:
    assert {s for (s, e) in TRANSITIONS if e in (Event.ACCEPT, Event.REJECT)} == {Status.PENDING}


def test_only_an_active_transfer_completes() -> None:
    assert [s for (s, e) in TRANSITIONS if e is Event.COMPLETE] == [Status.ACTIVE]
