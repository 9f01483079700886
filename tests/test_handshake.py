"""The direct path's handshake (:mod:`roomdrop.handshake`), as pure computation: two
peers holding their device keys end with channels that carry records both ways; any
other key, another room, user or token, a replayed or changed record fails."""

from __future__ import annotations

import pytest

from roomdrop.e2e import DeviceKey
from roomdrop.handshake import (
    GO,
    HELLO_SIZE,
    LENGTH,
    MAX_RECORD,
    Channel,
    DirectRefused,
    Handshake,
    leader,
    record_length,
)

TOKENS = ("A" * 21 + "Q", "B" * 21 + "w")


def handshakes(
    alice: DeviceKey,
    bob: DeviceKey,
    *,
    bob_thinks_alice_is: DeviceKey | None = None,
    bob_room: str = "room",
    bob_tokens: tuple[str, str] = TOKENS,
) -> tuple[Handshake, Handshake]:
    a = Handshake(
        alice,
        bob.public_text,
        room="room",
        me="alice",
        peer="bob",
        my_token=TOKENS[0],
        peer_token=TOKENS[1],
    )
    b = Handshake(
        bob,
        (bob_thinks_alice_is or alice).public_text,
        room=bob_room,
        me="bob",
        peer="alice",
        my_token=bob_tokens[1],
        peer_token=bob_tokens[0],
    )
    return a, b


def body(record: bytes) -> bytes:
    """A record's sealed bytes, after its length."""
    assert record_length(record[: LENGTH.size]) == len(record) - LENGTH.size
    return record[LENGTH.size :]


def run(a: Handshake, b: Handshake) -> tuple[Channel, Channel]:
    assert len(a.hello) == len(b.hello) == HELLO_SIZE
    a_confirm, b_confirm = a.confirm(b.hello), b.confirm(a.hello)
    return a.finish(body(b_confirm)), b.finish(body(a_confirm))


def test_two_peers_end_with_channels_that_carry_records_both_ways_in_order() -> None:
    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    to_bob, to_alice = run(*handshakes(alice, bob))
    records = [to_bob.seal(GO), to_bob.seal(b"frame 1"), to_bob.seal(bytes(70_000))]
    assert [to_alice.open(body(r)) for r in records] == [GO, b"frame 1", bytes(70_000)]
    assert to_bob.open(body(to_alice.seal(b"back"))) == b"back"


def test_a_peer_without_the_expected_device_key_cannot_finish() -> None:
    alice, bob, mallory = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    a, b = handshakes(mallory, bob, bob_thinks_alice_is=alice)  # mallory says she is alice
    a_confirm = a.confirm(b.hello)
    b.confirm(a.hello)
    with pytest.raises(DirectRefused, match="cannot prove it holds the expected peer's"):
        b.finish(body(a_confirm))


@pytest.mark.parametrize(
    "change",
    [{"bob_room": "another room"}, {"bob_tokens": (TOKENS[0], "C" * 21 + "g")}],
    ids=["room", "token"],
)
def test_a_handshake_bound_to_another_room_or_attempt_fails(change: dict[str, object]) -> None:
    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    a, b = handshakes(alice, bob, **change)  # type: ignore[arg-type]
    a_confirm = a.confirm(b.hello)
    b.confirm(a.hello)
    with pytest.raises(DirectRefused):
        b.finish(body(a_confirm))


def test_a_confirmation_replayed_on_another_connection_is_refused() -> None:
    """A recording of alice's first connection, played to bob on a second one: alice's
    hello opens (the same keys, info and tokens), but her confirmation names the first
    connection's key of bob's, not this one's."""
    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    a1, b1 = handshakes(alice, bob)
    recorded_hello, recorded_confirm = a1.hello, a1.confirm(b1.hello)
    _, b2 = handshakes(alice, bob)
    b2.confirm(recorded_hello)
    with pytest.raises(DirectRefused, match="another connection"):
        b2.finish(body(recorded_confirm))


def test_changed_dropped_or_repeated_records_do_not_open() -> None:
    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    to_bob, to_alice = run(*handshakes(alice, bob))
    changed = bytearray(body(to_bob.seal(bytes(100))))
    changed[5] ^= 1
    with pytest.raises(DirectRefused):
        to_alice.open(bytes(changed))
    to_bob2, to_alice2 = run(*handshakes(alice, bob))
    a, _, c = (body(to_bob2.seal(bytes([i]))) for i in range(3))
    assert to_alice2.open(a) == b"\x00"
    with pytest.raises(DirectRefused):
        to_alice2.open(c)  # b was dropped: c is not the next record
    to_bob3, to_alice3 = run(*handshakes(alice, bob))
    x = body(to_bob3.seal(b"x"))
    assert to_alice3.open(x) == b"x"
    with pytest.raises(DirectRefused):
        to_alice3.open(x)  # repeated


def test_not_a_hello_and_oversized_records_are_refused() -> None:
    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    a, _ = handshakes(alice, bob)
    with pytest.raises(DirectRefused, match="no hello"):
        a.confirm(b"GET / HTTP/1.1\r\n" + bytes(HELLO_SIZE - 16))
    with pytest.raises(DirectRefused, match="no hello"):
        a.confirm(a.hello[:-1])
    with pytest.raises(DirectRefused, match="record of"):
        record_length(LENGTH.pack(MAX_RECORD + 1))
    with pytest.raises(DirectRefused, match="record of"):
        record_length(LENGTH.pack(0))


def test_exactly_one_of_two_peers_leads() -> None:
    assert leader("alice", "bob") and not leader("bob", "alice")
