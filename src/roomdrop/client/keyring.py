"""A session's side of end-to-end encryption (docs/protocol.md §14): its device key, the
keys the room's participants published, whether the server requires encryption, its
MIME lists, and the checks a sender and a receiver make before a transfer starts.

* **Sending** (:meth:`Keyring.for_receiver`): the receiver's published key, trusted on
  first use (:mod:`.peerkeys`), is the one the content key is sealed to. A receiver
  that published none gets the file in the clear if the server allows it (a note says
  so), else :class:`~roomdrop.exceptions.E2ERequired`.
* **Receiving** (:meth:`Keyring.for_offer`): an offer is opened only if it is sealed to
  this device's key, by the key its sender published, and that key is trusted; else
  :class:`~roomdrop.exceptions.E2EError` or :class:`~roomdrop.exceptions.KeyChanged`.
* **Content** (:meth:`Keyring.check_content`): the first decrypted chunk must be what
  the offer declared, by the server's MIME lists (:class:`MimePolicy`).

The safety number of each pair is computed once and kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from roomdrop.client.peerkeys import PeerKeys, Seen, server_id
from roomdrop.e2e import DeviceKey, decode_key, safety_number
from roomdrop.exceptions import (
    E2EError,
    E2ERequired,
    KeyChanged,
    MimeTypeNotAllowed,
    UnknownReceiver,
)
from roomdrop.protocol.messages import Offer, RoomState
from roomdrop.protocol.policy import MimePolicy
from roomdrop.protocol.transfer import Transfer
from roomdrop.storage import sniff_mime_type

__all__ = ["Keyring", "Peer", "notes_on_keys"]


@dataclass(frozen=True, slots=True)
class Peer:
    """The other party of an end-to-end encrypted transfer."""

    user: str
    key: str
    safety_number: str
    note: str | None = None
    """Something to tell the person (a key trusted for the first time, or anew)."""


def notes_on_keys(peer: Peer | None, other: str, filename: str, *, sending: bool) -> list[str]:
    """What to tell the person as a transfer with ``other`` starts: its safety number
    (and whether the key was trusted just now), or that it goes in the clear."""
    if peer is None:
        if sending:
            return [
                f"{other} published no device key: {filename} goes in the clear, not "
                "end-to-end encrypted (the server allows it, and can read it)"
            ]
        return [
            f"{filename} from {other} is not end-to-end encrypted (the server allows it, "
            "and can read it)"
        ]
    direction = "to" if sending else "from"
    said = f"end-to-end encrypted {direction} {other}; safety number {peer.safety_number}"
    return [peer.note, said] if peer.note is not None else [said]


class Keyring:
    """The keys and checks of one session."""

    def __init__(
        self,
        user: str,
        device: DeviceKey,
        store: PeerKeys,
        *,
        server: Callable[[], str],
        trust_new_key: bool = False,
    ) -> None:
        self.user = user
        self.device = device
        self.store = store
        self.server = server
        """The server the session is connected to (trust is kept per server)."""
        self.trust_new_key = trust_new_key
        self.published: dict[str, str] = {}
        """Each participant's device key, as the server published it."""
        self.seen: dict[str, str] = {}
        """The key each one who has been in the room lately last published there (a
        file is kept for them under it; a kept file's sender is checked against it)."""
        self.require_e2e: bool | None = None
        self.policy = MimePolicy([], [])
        self._numbers: dict[tuple[str, str], str] = {}

    # --- what the server says ----------------------------------------------------------

    def on_room_state(self, state: RoomState) -> None:
        self.published = {user: key for user, key in state.keys.items() if user != self.user}
        seen = {user: s.key for user, s in state.seen.items() if s.key and user != self.user}
        self.seen = seen | self.published
        self.require_e2e = state.require_e2e
        if state.mime is not None:
            self.policy = MimePolicy(state.mime.allow, state.mime.deny)

    def on_joined(self, user: str, key: str | None) -> None:
        if user == self.user:
            return
        if key is None:
            self.published.pop(user, None)
            self.seen.pop(user, None)
        else:
            self.published[user] = self.seen[user] = key

    def on_left(self, user: str) -> None:
        self.published.pop(user, None)

    # --- the checks ------------------------------------------------------------------

    def for_receiver(self, receiver: str, *, kept: bool = False) -> Peer | None:
        """The receiver to seal a transfer to, None to send in the clear. Raises
        E2ERequired (no key, and the server requires encryption) or KeyChanged. ``kept``:
        a file kept for later, for someone who may have left (the key they last had)."""
        key = self.published.get(receiver) or (self.seen.get(receiver) if kept else None)
        if key is None and kept:
            raise UnknownReceiver(
                f"{receiver} has not been in this room with a device key lately: a file can be "
                "kept only for someone the server has seen (their key seals it)"
            )
        if key is None:
            if self.require_e2e:
                raise E2ERequired(
                    f"{receiver} published no device key (a client without end-to-end "
                    "encryption?), and this server carries only end-to-end encrypted "
                    "transfers"
                )
            return None
        return self._trusted(receiver, key)

    def for_offer(self, offer: Offer, sender: str, *, taking_up: bool = False) -> Peer | None:
        """The sender of an offer addressed to this end, None for an offer in the clear.
        Raises E2EError (not sealed to this device, or not by the key its sender
        published), E2ERequired or KeyChanged. ``taking_up``: a transfer this end
        restarted in the middle of, whose sender may have left the room (then its key
        must be trusted here, published or not)."""
        e2e = offer.e2e
        if e2e is None:
            if self.require_e2e:
                raise E2ERequired(
                    "the offer is not end-to-end encrypted, and this server carries only "
                    "end-to-end encrypted transfers"
                )
            return None
        if e2e.receiver_key != self.device.public_text:
            raise E2EError(
                f"the offer's content key is sealed to the device key {e2e.receiver_key}, "
                f"not to this device's {self.device.public_text}"
            )
        published = self.published.get(sender)
        if published is None and offer.store:  # kept for this end: its sender may be gone
            published = self.seen.get(sender)
        if published != e2e.sender_key and not (taking_up and published is None):
            what = f"published {published}" if published is not None else "published no key"
            raise E2EError(
                f"the offer is sealed by the device key {e2e.sender_key}, but {sender} {what}"
            )
        return self._trusted(sender, e2e.sender_key)

    def direct_key(self, peer: str) -> str | None:
        """The key a direct connection to ``peer`` must prove it holds: the one ``peer``
        published, unless it is not the one trusted here (then there is no direct path;
        an offer says why, with ``key-changed``). Trusting a first key is left to the
        offers."""
        key = self.published.get(peer)
        if key is None:
            return None
        trusted = self.store.get(self.server(), peer).trusted
        if trusted and key not in trusted and not self.trust_new_key:
            return None
        return key

    def check_content(self, record: Transfer, head: bytes | bytearray | memoryview) -> None:
        """The first chunk's plaintext must be the declared type, within the server's
        lists (MimeTypeNotAllowed, with the precise reason)."""
        objection = self.policy.objection(record.mime_type, sniff_mime_type(head))
        if objection is not None:
            raise MimeTypeNotAllowed(f"{record.filename}: {objection}")

    def safety_number(self, peer: str, key: str) -> str:
        """The safety number of this device and ``peer``'s ``key``."""
        number = self._numbers.get((peer, key))
        if number is None:
            number = safety_number(self.user, self.device.public, peer, decode_key(key))
            self._numbers[(peer, key)] = number
        return number

    def _trusted(self, peer: str, key: str) -> Peer:
        decode_key(key)  # a published key is well formed (the server checked it too)
        server = self.server()
        number = self.safety_number(peer, key)
        seen = self.store.check(server, peer, key)
        note = None
        if seen is Seen.FIRST:
            note = (
                f"first time {peer} is seen on {server_id(server)}: their device key is "
                "trusted from now on (compare the safety number with them to be sure)"
            )
        elif seen is Seen.CHANGED:
            if not self.trust_new_key:
                raise self._changed(server, peer, key)
            self.store.trust(server, peer, key)
            note = f"trusting the new device key of {peer} (--trust-new-key)"
        return Peer(peer, key, number, note)

    def _changed(self, server: str, peer: str, key: str) -> KeyChanged:
        known = self.store.get(server, peer).trusted
        before = "; ".join(f"{k} (safety number {self.safety_number(peer, k)})" for k in known)
        message = (
            f"the device key of {peer} on {server_id(server)} changed: trusted here is "
            f"{before}; {peer} now shows {key} (safety number "
            f"{self.safety_number(peer, key)}). A new device or a reinstall changes the "
            "key, and so does someone in the middle: compare the new safety number with "
            f"{peer}, then run `roomdrop keys trust {peer}` or pass --trust-new-key"
        )
        return KeyChanged(peer, known, key, message)
