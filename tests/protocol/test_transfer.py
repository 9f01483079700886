"""The transfer record: its snapshot is the seed's transfer object, progress rounds as
the seed shows it, and speed and ETA come from the clock it is given."""

from __future__ import annotations

import pytest

from roomdrop.exceptions import InvalidTransition
from roomdrop.protocol.state import Event
from roomdrop.protocol.transfer import RateMeter, Transfer, TransferObject, iso


def record() -> Transfer:
    return Transfer(
        transfer_id="t1",
        room_id="room_123",
        sender_id="user1@example.com",
        receiver_id="user2@example.com",
        filename="document.pdf",
        file_size=10_485_760,
        chunk_size=65_536,
        total_chunks=160,
        sha256="ab" * 32,
        mime_type="application/pdf",
        created_mono=0.0,
    )


def test_the_snapshot_has_exactly_the_fields_of_the_transfer_object_model() -> None:
    snapshot = record().snapshot()
    assert list(snapshot) == list(TransferObject.model_fields)
    assert TransferObject.model_validate(snapshot).status.value == "pending"


def test_progress_matches_the_seeds_example_and_speed_and_eta_follow_the_clock() -> None:
    r = record()
    r.apply(Event.ACCEPT, wall=1_762_740_600.0, mono=0.0)
    r.set_progress(84, 84 * 65_536, mono=1.0)
    r.set_progress(85, 5_570_560, mono=2.0)
    snapshot = r.snapshot()
    assert snapshot["started_at"] == "2025-11-10T02:10:00Z" == iso(1_762_740_600.0)
    assert (snapshot["chunks_sent"], snapshot["progress_percent"]) == (85, 53.13)
    assert snapshot["speed_bps"] == 65_536.0
    assert snapshot["eta_seconds"] == pytest.approx((10_485_760 - 5_570_560) / 65_536, abs=0.1)


def test_a_final_transfer_keeps_its_end_time_and_refuses_to_change() -> None:
    r = record()
    r.apply(Event.CANCEL, wall=1_762_740_660.0, mono=1.0)
    assert r.snapshot()["completed_at"] == "2025-11-10T02:11:00Z"
    with pytest.raises(InvalidTransition):
        r.apply(Event.RESUME, wall=0.0, mono=2.0)


def test_a_byte_count_that_goes_back_is_no_negative_speed() -> None:
    """The server's estimate of what it relayed can run ahead of the receiver's report
    that follows it; the speed a progress message carries must stay >= 0."""
    meter = RateMeter()
    meter.record(0.0, 5_000_000)
    meter.record(1.0, 4_600_000)
    assert meter.rate() == 0.0
    meter.record(2.0, 6_600_000)
    assert meter.rate() == 800_000.0
