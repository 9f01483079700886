"""The direct path's handshake and records: pure computation (no I/O); the asyncio
adapter that listens, dials and races is :mod:`roomdrop.client.direct`, the wire format
is docs/protocol.md §15.

Two roomdrop CLIs that can reach each other over TCP open a direct connection beside
the WebRTC data channel. Each side listens, sends its addresses and a fresh random
token through the server (``direct-hints``), and dials the other's; every connection
that forms, in either direction, runs this handshake, and the first one to complete it
carries the chunks.

**Threat model.**

*What it protects against.* Anyone who can reach a listening port (another host on the
LAN, another user of the machine), anyone on the path between the peers, and the
server, which carries the hints: none of them holds either peer's device private key,
so none can complete the handshake as either peer, read what travels on an
established connection, or change, drop, reorder, replay or inject a byte of it
unnoticed. A connection that fails any check is dropped; the transfer goes on over the
other paths. A handshake recorded earlier does not complete again: it is bound to both
peers' fresh tokens of this attempt, and each side's confirmation to the other side's
fresh encapsulated key of this connection.

*What it does not protect against.* Whoever sees the packets learns that the two
addresses talk and how much; one who can reset TCP connections can take the direct
path away (the transfer then goes on over the data channel or the relay). The peer's
device key comes from the server: trust on first use and safety numbers
(:mod:`roomdrop.e2e`) are what catch a server that swaps keys, here as for the offers.

**Construction** (no hand-made primitives; HPKE from ``pyhpke``, as in :mod:`roomdrop.e2e`,
DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM in auth mode):

* each side, on every connection, creates an HPKE *sender* context to the peer's device
  key, authenticated by its own device key, with :func:`info` (the room, both users
  in the direction of the context, both tokens) and sends ``MAGIC`` and the
  encapsulated key (``hello``);
* with the peer's hello it creates the *recipient* context for the other direction
  (the peer's device key as the authenticating sender key), and sends its first record:
  ``CONFIRM`` + the peer's encapsulated key + its own (``confirm``);
* the peer's first record must open and must read ``CONFIRM`` + this side's
  encapsulated key + the peer's: the peer holds its device key and took part in this
  very connection. Only then is the connection authenticated;
* every later record in one direction is sealed by that direction's context, whose
  nonces are RFC 9180's sequence numbers (§5.2): a record dropped, repeated or moved
  makes every later one fail to open.

Records on the stream are a 4-byte big-endian length and the sealed bytes; a record
carries one roomdrop binary frame (the same end-to-end encrypted frames as every other
path) or one of the control words :data:`GO` (the leader chose this connection).
"""

from __future__ import annotations

import json
import struct
from typing import Final

from pyhpke import ContextInterface, PyHPKEError

from roomdrop.e2e import SUITE, DeviceKey, decode_key, hpke_public
from roomdrop.exceptions import DirectRefused

__all__ = [
    "GO",
    "HELLO_SIZE",
    "LENGTH",
    "MAGIC",
    "MAX_RECORD",
    "Channel",
    "DirectRefused",
    "Handshake",
    "info",
    "leader",
    "record_length",
]

MAGIC: Final = b"roomdrop-direct/1\n"
ENC_SIZE: Final = 32
HELLO_SIZE: Final = len(MAGIC) + ENC_SIZE
CONFIRM: Final = b"roomdrop-direct-confirm"
GO: Final = b"roomdrop-direct-go"
LENGTH: Final = struct.Struct(">I")
#: The largest record accepted: a frame of the largest chunk, its header and tag.
MAX_RECORD: Final = 1024 * 1024 + 4096


def info(room: str, sender: str, receiver: str, sender_token: str, receiver_token: str) -> bytes:
    """The HPKE ``info`` of the context from ``sender`` to ``receiver``: a compact JSON
    array in UTF-8, so no field can run into the next."""
    fields = ["roomdrop-direct-v1", room, sender, receiver, sender_token, receiver_token]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def leader(me: str, peer: str) -> bool:
    """Whether ``me`` picks the connection (the lower user id does; the other follows)."""
    return me < peer


def record_length(header: bytes) -> int:
    """The length a record's 4-byte header announces; DirectRefused past MAX_RECORD."""
    (length,) = LENGTH.unpack(header)
    if not 0 < length <= MAX_RECORD:
        raise DirectRefused(f"a record of {length} bytes (at most {MAX_RECORD})")
    return int(length)


def frame_record(sealed: bytes) -> bytes:
    return LENGTH.pack(len(sealed)) + sealed


class Channel:
    """An authenticated connection's two directions: :meth:`seal` what this side sends,
    :meth:`open` what it receives, in order."""

    def __init__(self, out: ContextInterface, into: ContextInterface) -> None:
        self._out, self._in = out, into

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """The record (length and ciphertext) that carries ``plaintext``."""
        return frame_record(self._out.seal(bytes(plaintext)))

    def open(self, sealed: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of the next record's sealed bytes; DirectRefused if it does not
        open (changed, dropped, repeated or not from the peer)."""
        try:
            return bytes(self._in.open(bytes(sealed)))
        except (PyHPKEError, ValueError):
            raise DirectRefused(
                "a record that does not open: changed, out of order, or not from the peer"
            ) from None


class Handshake:
    """One connection's handshake, from this side: send :attr:`hello`, give the peer's
    hello to :meth:`confirm` and send what it returns, give the peer's first record's
    sealed bytes to :meth:`finish`, which returns the :class:`Channel`."""

    def __init__(
        self,
        device: DeviceKey,
        peer_key: str,
        *,
        room: str,
        me: str,
        peer: str,
        my_token: str,
        peer_token: str,
    ) -> None:
        self._device = device
        self._peer_public = hpke_public(decode_key(peer_key))
        self._info_in = info(room, peer, me, peer_token, my_token)
        self._enc, self._out = SUITE.create_sender_context(
            self._peer_public,
            info(room, me, peer, my_token, peer_token),
            sks=device.hpke_private(),
        )
        self.hello: bytes = MAGIC + self._enc
        self._peer_enc: bytes | None = None
        self._in: ContextInterface | None = None

    def confirm(self, peer_hello: bytes) -> bytes:
        """The confirm record for the peer's ``hello``; DirectRefused if it is not one."""
        if len(peer_hello) != HELLO_SIZE or not peer_hello.startswith(MAGIC):
            raise DirectRefused("not a roomdrop direct connection (no hello)")
        peer_enc = peer_hello[len(MAGIC) :]
        try:
            self._in = SUITE.create_recipient_context(
                peer_enc, self._device.hpke_private(), self._info_in, pks=self._peer_public
            )
        except (PyHPKEError, ValueError) as exc:
            raise DirectRefused(f"a hello whose key does not decode: {exc}") from None
        self._peer_enc = peer_enc
        return frame_record(self._out.seal(CONFIRM + peer_enc + self._enc))

    def finish(self, peer_confirm: bytes) -> Channel:
        """The channel, once the peer's confirm record's sealed bytes check out."""
        if self._in is None or self._peer_enc is None:
            raise DirectRefused("a confirm before the hello")
        channel = Channel(self._out, self._in)
        try:
            confirmed = channel.open(peer_confirm)
        except DirectRefused:
            raise DirectRefused(
                "the other end cannot prove it holds the expected peer's device key"
            ) from None
        if confirmed != CONFIRM + self._enc + self._peer_enc:
            raise DirectRefused("the peer's confirmation is for another connection")
        return channel
