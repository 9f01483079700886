"""End-to-end encryption (roomdrop.e2e): the libraries against published vectors, then
what roomdrop builds from them: sealed content keys, chunk encryption, safety numbers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKeyPair

from roomdrop.e2e import (
    ChunkCipher,
    DeviceKey,
    Sealed,
    decode_key,
    encode_key,
    new_content_key,
    offer_binding,
    open_content_key,
    open_offer,
    safety_number,
    seal_content_key,
    seal_offer,
)
from roomdrop.exceptions import E2EError
from roomdrop.protocol.transfer import Transfer

VECTORS = Path(__file__).parent / "vectors"


def test_pyhpke_matches_rfc_9180_auth_mode_vectors() -> None:
    v = json.loads((VECTORS / "rfc9180-a13-auth.json").read_text())["vector"]
    suite = CipherSuite.new(KEMId(v["kem_id"]), KDFId(v["kdf_id"]), AEADId(v["aead_id"]))
    h = bytes.fromhex
    eks = KEMKeyPair(
        suite.kem.deserialize_private_key(h(v["skEm"])),
        suite.kem.deserialize_public_key(h(v["pkEm"])),
    )
    pkr = suite.kem.deserialize_public_key(h(v["pkRm"]))
    skr = suite.kem.deserialize_private_key(h(v["skRm"]))
    sks = suite.kem.deserialize_private_key(h(v["skSm"]))
    pks = suite.kem.deserialize_public_key(h(v["pkSm"]))
    enc, sender = suite.create_sender_context(pkr, h(v["info"]), sks, eks=eks)
    assert enc == h(v["enc"])
    for e in v["encryptions"][:3]:  # a context's sequence runs 0, 1, 2 in order
        assert sender.seal(h(e["pt"]), h(e["aad"])) == h(e["ct"])
    recipient = suite.create_recipient_context(h(v["enc"]), skr, h(v["info"]), pks)
    for e in v["encryptions"][:3]:
        assert recipient.open(h(e["ct"]), h(e["aad"])) == h(e["pt"])


def test_cryptography_aes_256_gcm_matches_the_gcm_test_vectors() -> None:
    for v in json.loads((VECTORS / "gcm-aes256.json").read_text())["vectors"]:
        h = bytes.fromhex
        out = AESGCM(h(v["key"])).encrypt(h(v["iv"]), h(v["pt"]), h(v["aad"]) or None)
        assert out == h(v["ct"]) + h(v["tag"])


def binding(**changes: object) -> bytes:
    fields: dict[str, object] = dict(
        transfer_id=str(uuid.UUID(int=7)),
        sender_id="alice",
        receiver_id="bob",
        file_size=1000,
        chunk_size=64,
        total_chunks=16,
        sha256="ab" * 32,
        mime_type="text/plain",
    )
    fields.update(changes)
    return offer_binding(**fields)  # type: ignore[arg-type]


def test_a_sealed_content_key_opens_only_for_its_receiver_its_sender_and_its_offer() -> None:
    alice, bob, mallory = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    key = new_content_key()
    sealed = seal_content_key(key, sender=alice, recipient=bob.public, binding=binding())
    assert open_content_key(sealed, recipient=bob, sender=alice.public, binding=binding()) == key
    with pytest.raises(E2EError):  # another device
        open_content_key(sealed, recipient=mallory, sender=alice.public, binding=binding())
    with pytest.raises(E2EError):  # claimed by another sender: auth mode
        open_content_key(sealed, recipient=bob, sender=mallory.public, binding=binding())
    with pytest.raises(E2EError):  # presented with another offer
        open_content_key(
            sealed, recipient=bob, sender=alice.public, binding=binding(file_size=1001)
        )
    forged = Sealed(sealed.enc, sealed.ct[:-1] + bytes([sealed.ct[-1] ^ 1]))
    with pytest.raises(E2EError):
        open_content_key(forged, recipient=bob, sender=alice.public, binding=binding())


def test_the_offer_binding_is_compact_utf8_json() -> None:
    assert (
        binding(receiver_id="zoë")
        == (
            '["roomdrop-offer-v1","00000000-0000-0000-0000-000000000007","alice","zoë",'
            '1000,64,16,"' + "ab" * 32 + '","text/plain"]'
        ).encode()
    )


def record(tid: str | None = None) -> Transfer:
    return Transfer(
        transfer_id=tid or str(uuid.uuid4()),
        room_id="r",
        sender_id="alice",
        receiver_id="bob",
        filename="f.txt",
        file_size=100,
        chunk_size=64,
        total_chunks=2,
        sha256="cd" * 32,
        mime_type="text/plain",
        created_mono=0.0,
    )


def test_an_offer_seals_one_key_to_the_receiver_and_to_the_sender_itself() -> None:
    alice, bob = DeviceKey.generate(), DeviceKey.generate()
    r = record()
    e2e, key = seal_offer(r, alice, bob.public_text)
    assert (e2e.sender_key, e2e.receiver_key) == (alice.public_text, bob.public_text)
    assert open_offer(r, e2e, bob) == key
    assert open_offer(r, e2e, alice, as_sender=True) == key
    with pytest.raises(E2EError, match="sealed to the receiver key"):
        open_offer(r, e2e, alice)
    other = record()
    with pytest.raises(E2EError):  # the same sealed key under another transfer id
        open_offer(other, e2e, bob)


def test_a_chunk_decrypts_only_at_its_own_index_transfer_and_length() -> None:
    tid = str(uuid.uuid4())
    key = new_content_key()
    cipher = ChunkCipher(key, tid)
    sealed = cipher.seal(3, b"x" * 100)
    assert len(sealed) == 116
    assert cipher.open(3, sealed) == b"x" * 100
    with pytest.raises(E2EError, match="chunk 4 does not decrypt"):
        cipher.open(4, sealed)  # replayed at another index
    with pytest.raises(E2EError):
        ChunkCipher(key, str(uuid.uuid4())).open(3, sealed)  # moved to another transfer
    with pytest.raises(E2EError):
        cipher.open(3, sealed[:-1])  # cut short
    flipped = bytearray(sealed)
    flipped[10] ^= 0x40
    with pytest.raises(E2EError):
        cipher.open(3, bytes(flipped))
    assert sealed != ChunkCipher(new_content_key(), tid).seal(3, b"x" * 100)


def test_the_same_chunk_sealed_twice_is_the_same_ciphertext() -> None:
    cipher = ChunkCipher(new_content_key(), str(uuid.uuid4()))
    assert cipher.seal(9, b"abc") == cipher.seal(9, b"abc")


def test_keys_travel_as_43_characters_of_unpadded_base64url() -> None:
    k = DeviceKey.generate()
    assert len(k.public_text) == 43 and "=" not in k.public_text
    assert decode_key(k.public_text) == k.public
    assert DeviceKey.from_private_bytes(k.private_bytes()).public == k.public
    for bad in ("", "abc", k.public_text + "A", k.public_text[:-1] + "!", "A" * 42 + "B"):
        with pytest.raises(E2EError):
            decode_key(bad)
    assert encode_key(bytes(32)) == "A" * 43


def test_a_safety_number_is_60_digits_the_same_from_either_side() -> None:
    a, b = DeviceKey.generate(), DeviceKey.generate()
    number = safety_number("alice", a.public, "bob", b.public)
    assert number == safety_number("bob", b.public, "alice", a.public)
    groups = number.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert number != safety_number("alice", a.public, "bob", DeviceKey.generate().public)
    assert number != safety_number("alice", a.public, "carol", b.public)


def test_a_safety_number_follows_signals_numeric_fingerprint() -> None:
    """Fixed keys give a fixed number (static/e2e.js must print the same one: the page
    test checks it against this figure)."""
    a = bytes(range(32))
    b = bytes(range(32, 64))
    assert safety_number("alice", a, "bob", b) == KNOWN_SAFETY_NUMBER


KNOWN_SAFETY_NUMBER = "30995 66850 10881 98914 36086 86589 42897 09292 78922 06503 11987 06478"
