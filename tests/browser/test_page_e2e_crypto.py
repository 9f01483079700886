"""The page's end-to-end crypto (``static/e2e.js``, ``static/keys.js``) against the
Python core (:mod:`roomdrop.e2e`), run in this test process, byte for byte: a content
key sealed in Python opens in the page and one sealed in the page opens in Python; the
offer binding with non-ASCII ids and type is the same bytes; the chunk cipher makes the
same ciphertext on both sides and each opens the other's; the safety number is the same
digits. And the page's device key: a non-extractable X25519 CryptoKey in IndexedDB,
the same across reloads.

The page is the real one (``GET /`` of a real ``roomdrop serve`` in real Chromium); its
modules are imported into it with ``import()``, as the page imports them.
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from pagetools import Harness, RoomPage

from roomdrop.e2e import (
    ChunkCipher,
    DeviceKey,
    E2EError,
    decode_key,
    offer_binding,
    open_offer,
    safety_number,
    seal_offer,
)
from roomdrop.protocol.messages import E2E
from roomdrop.protocol.transfer import Transfer

pytestmark = pytest.mark.browser

VECTORS = Path(__file__).parent.parent / "vectors"

# a page that has loaded its modules: e2e.js and keys.js as `m` and `k` in every script
IMPORTS = """
const m = await import('/static/e2e.js');
const k = await import('/static/keys.js');
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const unhex = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
"""


async def run(page: RoomPage, body: str, arg: Any = None) -> Any:
    """``body`` (an async function's body, its argument ``arg``) in ``page``."""
    return await page.page.evaluate(f"async (arg) => {{ {IMPORTS}\n{body} }}", arg)


async def loaded(rd: Harness, label: str = "crypto") -> RoomPage:
    page = await rd.open(label)
    await page.page.goto(rd.server.url)
    await page.page.wait_for_function("() => document.body.dataset.ready === 'true'")
    return page


def record(**fields: Any) -> Transfer:
    base: dict[str, Any] = {
        "transfer_id": str(uuid.uuid4()),
        "room_id": "room-1",
        "sender_id": "Zoë#1a2b",
        "receiver_id": "Jürgen 日本#ffff",
        "filename": "naïve.txt",
        "file_size": 200_000,
        "chunk_size": 65_536,
        "total_chunks": 4,
        "sha256": secrets.token_hex(32),
        "mime_type": 'text/plain; charset="ünïcödé"',
        "created_mono": 0.0,
    }
    base.update(fields)
    return Transfer(**base)


def offer_fields(r: Transfer) -> dict[str, Any]:
    return {
        "transfer_id": r.transfer_id,
        "sender_id": r.sender_id,
        "receiver_id": r.receiver_id,
        "file_size": r.file_size,
        "chunk_size": r.chunk_size,
        "total_chunks": r.total_chunks,
        "sha256": r.sha256,
        "mime_type": r.mime_type,
    }


async def test_the_pages_hpke_kem_and_aes_gcm_match_the_published_vectors(rd: Harness) -> None:
    """The vendored @hpke/core's DHKEM(X25519, HKDF-SHA256), in auth mode as the page uses
    it, against RFC 9180 A.1.3 (key derivation, encap with the vector's ephemeral key,
    decap), and WebCrypto's AES-256-GCM (the chunk cipher) against the GCM test cases.
    (A.1.3's AEAD is AES-128-GCM, which the page's bundle leaves out; its key schedule is
    checked in Python, tests/test_e2e.py, and the page's sealing against Python's below.)"""
    page = await loaded(rd)
    hpke = json.loads((VECTORS / "rfc9180-a13-auth.json").read_text())["vector"]
    gcm = json.loads((VECTORS / "gcm-aes256.json").read_text())["vectors"]
    got = await run(
        page,
        """const {DhkemX25519HkdfSha256} = await import('/static/vendor/hpke/hpke.js');
        const v = arg.hpke, kem = new DhkemX25519HkdfSha256();
        const ser = async (key) => hex(new Uint8Array(await kem.serializePublicKey(key)));
        const r = await kem.deriveKeyPair(unhex(v.ikmR).buffer);
        const s = await kem.deriveKeyPair(unhex(v.ikmS).buffer);
        const e = await kem.deriveKeyPair(unhex(v.ikmE).buffer);
        const out = {pkR: await ser(r.publicKey), pkS: await ser(s.publicKey),
                     pkE: await ser(e.publicKey)};
        const sealed = await kem.encap({recipientPublicKey: r.publicKey, senderKey: s, ekm: e});
        out.enc = hex(new Uint8Array(sealed.enc));
        out.encapSecret = hex(new Uint8Array(sealed.sharedSecret));
        const skR = await kem.deserializePrivateKey(unhex(v.skRm).buffer);
        const pkS = await kem.deserializePublicKey(unhex(v.pkSm).buffer);
        out.decapSecret = hex(new Uint8Array(await kem.decap(
            {enc: unhex(v.enc).buffer, recipientKey: skR, senderPublicKey: pkS})));
        out.gcm = [];
        for (const c of arg.gcm) {
            const key = await crypto.subtle.importKey('raw', unhex(c.key), 'AES-GCM', false,
                                                      ['encrypt']);
            out.gcm.push(hex(new Uint8Array(await crypto.subtle.encrypt(
                {name: 'AES-GCM', iv: unhex(c.iv), additionalData: unhex(c.aad)}, key,
                unhex(c.pt)))));
        }
        return out;""",
        {"hpke": hpke, "gcm": gcm},
    )
    assert (got["pkR"], got["pkS"], got["pkE"]) == (hpke["pkRm"], hpke["pkSm"], hpke["pkEm"])
    assert got["enc"] == hpke["enc"]
    assert got["encapSecret"] == got["decapSecret"] == hpke["shared_secret"]
    assert got["gcm"] == [c["ct"] + c["tag"] for c in gcm]


async def test_the_offer_binding_is_the_same_bytes_with_non_ascii_ids_and_type(
    rd: Harness,
) -> None:
    page = await loaded(rd)
    for r in (
        record(),
        record(transfer_id=str(uuid.uuid4()).upper(), mime_type="image/png"),
        record(
            sender_id='a"b\\c\n\t\u2028', receiver_id="\U0001f600#0001", file_size=0, total_chunks=0
        ),
    ):
        fields = offer_fields(r)
        python = offer_binding(**fields).hex()
        page_hex = await run(page, "return hex(m.offerBinding(arg));", fields)
        assert page_hex == python, (bytes.fromhex(page_hex), bytes.fromhex(python))
    # non-ASCII is UTF-8, not \\u escapes; an uppercase id is bound in lowercase
    assert "ünïcödé".encode() in offer_binding(**offer_fields(record()))
    upper = record(transfer_id=str(uuid.uuid4()).upper())
    assert upper.transfer_id.lower().encode() in offer_binding(**offer_fields(upper))


async def test_a_content_key_sealed_in_python_opens_in_the_page_and_back(rd: Harness) -> None:
    page = await loaded(rd)
    page_key = await run(page, "return (await k.deviceKey()).publicText;")
    assert len(page_key) == 43
    python = DeviceKey.generate()

    # Python (the sender) seals to the page's device key; the page opens it
    r = record()
    e2e, key = seal_offer(r, python, page_key)
    opened = await run(
        page,
        """const d = await k.deviceKey();
        return hex(await m.openOffer(arg.r, arg.e2e, d));""",
        {"r": offer_fields(r), "e2e": e2e.model_dump()},
    )
    assert opened == key.hex()

    # ... and it does not open for another offer (the type changed) nor as the sender
    refused = await run(
        page,
        """const d = await k.deviceKey();
        const out = [];
        for (const [r, opts] of [[{...arg.r, mime_type: 'application/x-msdownload'}, {}],
                                 [arg.r, {asSender: true}]]) {
          try { await m.openOffer(r, arg.e2e, d, opts); out.push('opened'); }
          catch (e) { out.push(e instanceof m.E2EError ? e.code : String(e)); }
        }
        return out;""",
        {"r": offer_fields(r), "e2e": e2e.model_dump()},
    )
    assert refused == ["e2e-failed", "e2e-failed"]

    # the page (the sender) seals to Python's key; Python opens the receiver's copy and
    # the page its own (for_sender)
    r2 = record(sender_id="Jürgen 日本#ffff", receiver_id="Zoë#1a2b")
    sealed = await run(
        page,
        """const d = await k.deviceKey();
        const {e2e, key} = await m.sealOffer(arg.r, d, arg.to);
        const own = await m.openOffer(arg.r, e2e, d, {asSender: true});
        return {e2e, key: hex(key), own: hex(own)};""",
        {"r": offer_fields(r2), "to": python.public_text},
    )
    part = E2E.model_validate(sealed["e2e"])
    assert part.sender_key == page_key and part.receiver_key == python.public_text
    assert open_offer(r2, part, python).hex() == sealed["key"] == sealed["own"]
    with pytest.raises(E2EError):
        open_offer(record(**{**offer_fields(r2), "file_size": 200_001}), part, python)
    with pytest.raises(E2EError):  # sealed by the page's key, not by another one
        forged = part.model_copy(update={"sender_key": DeviceKey.generate().public_text})
        open_offer(r2, forged, python)


async def test_the_chunk_cipher_is_the_same_both_ways(rd: Harness) -> None:
    page = await loaded(rd)
    key = secrets.token_bytes(32)
    tid = str(uuid.uuid4())
    cipher = ChunkCipher(key, tid)
    chunks = {0: secrets.token_bytes(65_536), 3: b"hello", 70_000: secrets.token_bytes(1)}
    python_sealed = {i: cipher.seal(i, data).hex() for i, data in chunks.items()}
    result = await run(
        page,
        """const key = await m.importContentKey(unhex(arg.key));
        const c = new m.ChunkCipher(key, arg.tid);
        const sealed = {}, opened = {}, refused = [];
        for (const [i, data] of Object.entries(arg.chunks)) {
          sealed[i] = hex(await c.seal(Number(i), unhex(data)));
          opened[i] = hex(await c.open(Number(i), unhex(arg.python[i])));
        }
        const ct = unhex(arg.python[3]);
        const tries = [[4, ct], [3, ct.subarray(0, ct.length - 1)],
                       [3, Uint8Array.from(ct, (b, j) => j === 0 ? b ^ 1 : b)]];
        for (const [i, data] of tries) {
          try { await c.open(i, data); refused.push('opened'); }
          catch (e) { refused.push(e.code); }
        }
        const other = new m.ChunkCipher(key, crypto.randomUUID());
        try { await other.open(3, ct); refused.push('opened'); } catch (e) { refused.push(e.code); }
        return {sealed, opened, refused};""",
        {
            "key": key.hex(),
            "tid": tid,
            "chunks": {str(i): d.hex() for i, d in chunks.items()},
            "python": {str(i): s for i, s in python_sealed.items()},
        },
    )
    for i, data in chunks.items():
        # the same key, nonce and associated data: the same ciphertext, byte for byte
        assert result["sealed"][str(i)] == python_sealed[i]
        assert result["opened"][str(i)] == data.hex()
        assert cipher.open(i, bytes.fromhex(result["sealed"][str(i)])) == data
        assert len(bytes.fromhex(python_sealed[i])) == len(data) + 16
    # another index, cut short, a flipped byte, another transfer: none decrypts
    assert result["refused"] == ["e2e-failed"] * 4


async def test_the_safety_number_is_the_same_digits(rd: Harness) -> None:
    page = await loaded(rd)
    a, b = DeviceKey.generate(), DeviceKey.generate()
    for user_a, user_b in (("alice#0001", "bob#0002"), ("Zoë#1a2b", "日本語#ffff")):
        python = safety_number(user_a, a.public, user_b, b.public)
        shown = await run(
            page,
            """const ka = m.decodeKey(arg.ka), kb = m.decodeKey(arg.kb);
            return [await m.safetyNumber(arg.ua, ka, arg.ub, kb),
                    await m.safetyNumber(arg.ub, kb, arg.ua, ka)];""",
            {"ua": user_a, "ka": a.public_text, "ub": user_b, "kb": b.public_text},
        )
        assert shown == [python, python]
        assert len(python) == 71 and python.replace(" ", "").isdigit()


async def test_the_device_key_is_non_extractable_and_the_same_after_a_reload(
    rd: Harness,
) -> None:
    page = await loaded(rd)
    probe = """const d = await k.deviceKey();
    const p = d.pair.privateKey;
    const out = {key: d.publicText, extractable: p.extractable, type: p.type,
                 algorithm: p.algorithm.name, usages: p.usages, exports: []};
    for (const format of ['pkcs8', 'jwk', 'raw']) {
      try { await crypto.subtle.exportKey(format, p); out.exports.push(format + ': exported'); }
      catch (e) { out.exports.push(format + ': ' + e.name); }
    }
    // what IndexedDB holds is the CryptoKey itself, as non-extractable
    const db = await new Promise((ok, no) => {
      const r = indexedDB.open('roomdrop-keys');
      r.onsuccess = () => ok(r.result); r.onerror = no; });
    const stored = await new Promise((ok, no) => {
      const r = db.transaction('device').objectStore('device').get('key');
      r.onsuccess = () => ok(r.result); r.onerror = no; });
    db.close();
    out.stored = stored.privateKey instanceof CryptoKey && stored.privateKey.extractable === false;
    return out;"""
    first = await run(page, probe)
    assert first["extractable"] is False
    assert first["type"] == "private" and first["algorithm"] == "X25519"
    assert first["usages"] == ["deriveBits"]
    assert first["exports"] == [f"{f}: InvalidAccessError" for f in ("pkcs8", "jwk", "raw")]
    assert first["stored"] is True
    decode_key(first["key"])

    await page.page.reload()
    await page.page.wait_for_function("() => document.body.dataset.ready === 'true'")
    again = await run(page, probe)
    assert again["key"] == first["key"], json.dumps([first, again])
    # and it works after the reload: Python seals to it, the page opens
    python = DeviceKey.generate()
    r = record()
    e2e, key = seal_offer(r, python, again["key"])
    opened = await run(
        page,
        "return hex(await m.openOffer(arg.r, arg.e2e, await k.deviceKey()));",
        {"r": offer_fields(r), "e2e": e2e.model_dump()},
    )
    assert opened == key.hex()
    # another browser profile has another key
    other = await loaded(rd, "other")
    assert await run(other, "return (await k.deviceKey()).publicText;") != first["key"]
