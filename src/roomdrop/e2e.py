"""End-to-end encryption: device keys, the sealed content key, chunk encryption and
safety numbers. Pure computation (no I/O); the CLI keeps its device key with
:mod:`roomdrop.client.keys`, the page in IndexedDB (``static/e2e.js`` mirrors this module).

**Threat model** (the README says it for users; docs/protocol.md has the wire format).

*What it protects against.* Whoever runs or breaks into the server, its Redis, a TURN
server, its disk or the network between the parties sees chunks only as AES-256-GCM
ciphertext under a key they never hold, and cannot change a byte of them unnoticed: a
chunk that fails to decrypt is dropped and asked for again like a bad checksum. The
content key travels sealed with HPKE (RFC 9180, auth mode) to the receiver's device key,
so only that device can open it, and the auth mode proves it was sealed by the holder
of the sender's device key. The sealed key's associated data binds the offer's ids,
size, chunk size, type and whole-file digest, so the server cannot present the same
sealed key with another offer.

*What it does not protect against.* The server still learns the metadata listed in
docs/protocol.md (names, sizes, declared types, timing, who sends to whom, the
whole-file sha256). It hands out the device keys, so an active server can swap keys:
trust on first use (:mod:`roomdrop.client.keys`) catches a key that changes later, and
comparing :func:`safety_number` out of band catches one swapped from the start; users
who do neither are not protected from that. A browser runs the page the server sends
it: a server that serves a tampered page defeats all of this for browser users (the
CLI, or a page pinned by its users, is not exposed to that). And since the server never
sees the plaintext it cannot scan files for malware: the receiving client does
(:mod:`roomdrop.client.malware`), and a server that requires it (``ROOMDROP_REQUIRE_SCAN``)
takes the receiver's word for it, which a modified client can give falsely.

**Construction** (no hand-made primitives: HPKE from ``pyhpke``, AES-GCM and X25519
from ``cryptography``, checked against RFC 9180's published vectors in the tests):

* a device key is an X25519 key pair; its public half travels as 43 characters of
  unpadded base64url;
* each transfer has a fresh random 32-byte content key, sealed with
  DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM in auth mode, once to the
  receiver's device key and once to the sender's own (so a sender that restarted can
  take the transfer up), with :data:`INFO` and :func:`offer_binding` as associated data;
* chunk ``i`` is AES-256-GCM under the content key with the 96-bit big-endian ``i`` as
  its nonce (each index is encrypted once per key: a chunk sent again is the same
  plaintext, hence the same ciphertext) and, as associated data, the transfer id's 16
  bytes, ``i`` and the plaintext length (4 bytes each, big-endian): a chunk moved to
  another index or transfer, or cut short, fails to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import struct
import uuid
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyInterface, PyHPKEError

from roomdrop.exceptions import E2EError
from roomdrop.protocol.frames import TAG_SIZE
from roomdrop.protocol.messages import E2E, SealedKey
from roomdrop.protocol.transfer import Transfer

__all__ = [
    "CONTENT_KEY_SIZE",
    "INFO",
    "KEY_CHARS",
    "TAG_SIZE",
    "ChunkCipher",
    "DeviceKey",
    "E2EError",
    "Sealed",
    "decode_bytes",
    "decode_key",
    "encode_key",
    "hpke_public",
    "new_content_key",
    "offer_binding",
    "open_content_key",
    "open_offer",
    "safety_number",
    "seal_content_key",
    "seal_offer",
]

SUITE: Final = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
INFO: Final = b"roomdrop e2e v1: content key"
"""HPKE ``info``: the purpose the sealed key is for, so it opens for nothing else."""
CONTENT_KEY_SIZE: Final = 32
KEY_SIZE: Final = 32
KEY_CHARS: Final = 43
"""Length of a device public key in unpadded base64url."""
_CHUNK_AAD: Final = struct.Struct(">16sII")
_FINGERPRINT_VERSION: Final = b"\x00\x00"
_FINGERPRINT_ITERATIONS: Final = 5200


def encode_key(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_bytes(text: str) -> bytes:
    """Unpadded base64url, else E2EError."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise E2EError(f"{text[:16]!r}... is not base64url") from None


def decode_key(text: str, *, size: int = KEY_SIZE) -> bytes:
    """Unpadded base64url of exactly ``size`` bytes, else E2EError."""
    raw = decode_bytes(text)
    if len(raw) != size or encode_key(raw) != text:
        raise E2EError(f"a key of {size} bytes in unpadded base64url was expected")
    return raw


class DeviceKey:
    """A device's long-lived X25519 identity key pair."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public: Final = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> DeviceKey:
        if len(raw) != KEY_SIZE:
            raise E2EError(f"a device key is {KEY_SIZE} bytes, not {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def public_text(self) -> str:
        return encode_key(self.public)

    def hpke_private(self) -> KEMKeyInterface:
        return KEMKey.from_pyca_cryptography_key(self._private)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A content key sealed to one device: HPKE's encapsulated key and ciphertext."""

    enc: bytes
    ct: bytes


def new_content_key() -> bytes:
    return secrets.token_bytes(CONTENT_KEY_SIZE)


def offer_binding(
    *,
    transfer_id: str,
    sender_id: str,
    receiver_id: str,
    file_size: int,
    chunk_size: int,
    total_chunks: int,
    sha256: str,
    mime_type: str,
) -> bytes:
    """The associated data of a sealed content key: the offer's fields the receiver
    relies on, as a compact JSON array in UTF-8 (``static/e2e.js`` builds the same
    bytes with ``JSON.stringify``). The file name is not bound: the server sanitises it."""
    fields = [
        "roomdrop-offer-v1",
        str(uuid.UUID(transfer_id)),
        sender_id,
        receiver_id,
        file_size,
        chunk_size,
        total_chunks,
        sha256,
        mime_type,
    ]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def hpke_public(raw: bytes) -> KEMKeyInterface:
    try:
        X25519PublicKey.from_public_bytes(raw)
        return SUITE.kem.deserialize_public_key(raw)
    except (ValueError, PyHPKEError) as exc:
        raise E2EError(f"not an X25519 public key: {exc}") from None


def seal_content_key(
    content_key: bytes, *, sender: DeviceKey, recipient: bytes, binding: bytes
) -> Sealed:
    """Seal ``content_key`` to the device whose public key is ``recipient``,
    authenticated by ``sender``'s key (HPKE auth mode, single shot)."""
    enc, context = SUITE.create_sender_context(
        hpke_public(recipient), INFO, sks=sender.hpke_private()
    )
    return Sealed(enc, context.seal(content_key, binding))


def open_content_key(
    sealed: Sealed, *, recipient: DeviceKey, sender: bytes, binding: bytes
) -> bytes:
    """Open a content key sealed to ``recipient`` by the holder of ``sender``'s key,
    for the offer ``binding`` describes; E2EError if any of them does not match."""
    try:
        context = SUITE.create_recipient_context(
            sealed.enc, recipient.hpke_private(), INFO, pks=hpke_public(sender)
        )
        key = context.open(sealed.ct, binding)
    except (PyHPKEError, ValueError) as exc:
        raise E2EError(
            "the content key does not open: it was not sealed to this device by that "
            "sender for this offer"
        ) from exc
    if len(key) != CONTENT_KEY_SIZE:
        raise E2EError(f"a content key is {CONTENT_KEY_SIZE} bytes, not {len(key)}")
    return bytes(key)


class ChunkCipher:
    """AES-256-GCM for one transfer's chunks (see the module's construction notes)."""

    __slots__ = ("_aead", "_tid")

    def __init__(self, content_key: bytes, transfer_id: str) -> None:
        if len(content_key) != CONTENT_KEY_SIZE:
            raise E2EError(f"a content key is {CONTENT_KEY_SIZE} bytes, not {len(content_key)}")
        self._aead = AESGCM(content_key)
        self._tid = uuid.UUID(transfer_id).bytes

    def _aad(self, index: int, length: int) -> bytes:
        return _CHUNK_AAD.pack(self._tid, index, length)

    def seal(self, index: int, plaintext: bytes | bytearray | memoryview) -> bytes:
        return self._aead.encrypt(
            index.to_bytes(12, "big"), plaintext, self._aad(index, len(plaintext))
        )

    def open(self, index: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of chunk ``index``; E2EError if it is not exactly what the
        sender sealed for this index of this transfer."""
        length = len(ciphertext) - TAG_SIZE
        if length < 0:
            raise E2EError(f"{len(ciphertext)} bytes is shorter than the GCM tag")
        try:
            return self._aead.decrypt(
                index.to_bytes(12, "big"), ciphertext, self._aad(index, length)
            )
        except InvalidTag:
            raise E2EError(f"chunk {index} does not decrypt (tampered, moved or cut)") from None


def _fingerprint(user_id: str, key: bytes) -> str:
    """Signal's numeric fingerprint of one identity: 5200 rounds of SHA-512 over
    version, key and id, the first 30 bytes read as six 5-digit numbers."""
    digest = _FINGERPRINT_VERSION + key + user_id.encode()
    for _ in range(_FINGERPRINT_ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def safety_number(user_a: str, key_a: bytes, user_b: str, key_b: bytes) -> str:
    """The 60-digit safety number of two identities (user id and device public key),
    the same whichever side computes it (Signal's construction), in groups of five."""
    parts = sorted([_fingerprint(user_a, key_a), _fingerprint(user_b, key_b)])
    digits = "".join(parts)
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


# --- offers ---------------------------------------------------------------------------


def binding_of(r: Transfer) -> bytes:
    """:func:`offer_binding` of a transfer record."""
    return offer_binding(
        transfer_id=r.transfer_id,
        sender_id=r.sender_id,
        receiver_id=r.receiver_id,
        file_size=r.file_size,
        chunk_size=r.chunk_size,
        total_chunks=r.total_chunks,
        sha256=r.sha256,
        mime_type=r.mime_type,
    )


def _sealed_key(s: Sealed) -> SealedKey:
    return SealedKey(enc=encode_key(s.enc), ct=encode_key(s.ct))


def _sealed(s: SealedKey) -> Sealed:
    return Sealed(decode_key(s.enc), decode_bytes(s.ct))


def seal_offer(r: Transfer, device: DeviceKey, receiver_key: str) -> tuple[E2E, bytes]:
    """A new content key for transfer ``r``, sealed to the receiver's device key and to
    the sender's own: the offer's ``e2e`` part and the key."""
    key = new_content_key()
    binding = binding_of(r)
    peer = decode_key(receiver_key)
    e2e = E2E(
        sender_key=device.public_text,
        receiver_key=receiver_key,
        for_receiver=_sealed_key(
            seal_content_key(key, sender=device, recipient=peer, binding=binding)
        ),
        for_sender=_sealed_key(
            seal_content_key(key, sender=device, recipient=device.public, binding=binding)
        ),
    )
    return e2e, key


def open_offer(r: Transfer, e2e: E2E, device: DeviceKey, *, as_sender: bool = False) -> bytes:
    """The content key of transfer ``r`` for this device (its receiver's, or with
    ``as_sender`` its sender's own copy). E2EError if the offer names another device
    key for this side, or the sealed key does not open for this offer."""
    mine = e2e.sender_key if as_sender else e2e.receiver_key
    if mine != device.public_text:
        side = "sender" if as_sender else "receiver"
        raise E2EError(
            f"the transfer's content key is sealed to the {side} key {mine}, "
            f"not to this device's {device.public_text}"
        )
    sealed = e2e.for_sender if as_sender else e2e.for_receiver
    return open_content_key(
        _sealed(sealed), recipient=device, sender=decode_key(e2e.sender_key), binding=binding_of(r)
    )
