// End-to-end encryption, the page's side: the crypto mirror of src/roomdrop/e2e.py (the
// same bytes on the wire, byte for byte: docs/protocol.md §14). Pure computation; the
// device key and the trusted keys live in IndexedDB (keys.js), the session's checks in
// keyring.js.
//
// THREAT MODEL (the README says it for users)
//
// What it protects against. Whoever runs or breaks into the server, its Redis, a TURN
// server, its disk or the network between the parties sees chunks only as AES-256-GCM
// ciphertext under a key they never hold, and cannot change a byte of them unnoticed
// (a chunk that does not decrypt is dropped and asked for again, like a bad checksum).
// The content key travels sealed with HPKE (RFC 9180, auth mode) to the receiver's
// device key, so only that device opens it, and auth mode proves it was sealed by the
// holder of the sender's device key; its associated data binds the offer's ids, sizes,
// type and whole-file digest, so it opens for no other offer. The device key is a
// non-extractable WebCrypto key: a script cannot read its private half out, only use it
// while it runs in this origin.
//
// What it does not protect against. THE PAGE IS ONLY AS TRUSTWORTHY AS THE SERVER THAT
// SERVES IT: this very code comes from the server, and a server that serves a tampered
// page (one that leaks the content key, or seals to a key of its own) defeats all of
// this for browser users, with nothing on the page to show it. The CLI, or a page its
// users pin (loaded from a copy they checked, not from the server), is safe from a
// tampered page. The server also hands out the device keys, so an active server can
// swap them: trust on first use (keys.js) catches a key that changes later, comparing
// the safety number out of band catches one swapped from the start; users who do
// neither are not protected from that. The server still learns the metadata of
// docs/protocol.md §14.7 (names, sizes, declared types, timing, who sends to whom, the
// whole-file sha256).
//
// Construction (no hand-made primitives: HPKE from @hpke/core, vendor/hpke; AES-GCM,
// X25519 and SHA-512 from WebCrypto):
//  * a device key is an X25519 key pair; its public half travels as 43 characters of
//    unpadded base64url;
//  * each transfer has a fresh random 32-byte content key, sealed with
//    DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM in auth mode, once to the
//    receiver's device key and once to the sender's own, with INFO as info and
//    offerBinding() as associated data;
//  * chunk i is AES-256-GCM under the content key, nonce = i as 12 bytes big-endian,
//    associated data = the transfer id's 16 bytes || i (u32) || plaintext length (u32);
//  * the safety number is Signal's numeric fingerprint of the two identities.

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "./vendor/hpke/hpke.js";
import { canonicalUuid, uuidBytes } from "./protocol.js";

export const INFO = new TextEncoder().encode("roomdrop e2e v1: content key");
export const CONTENT_KEY_SIZE = 32;
export const KEY_SIZE = 32;
export const KEY_CHARS = 43;
export const TAG_SIZE = 16;
const FINGERPRINT_ITERATIONS = 5200;
const utf8 = new TextEncoder();

/** Raised for anything that does not open, decode or match: the code e2e-failed. */
export class E2EError extends Error {
  constructor(message) {
    super(message);
    this.name = "E2EError";
    this.code = "e2e-failed";
  }
}

let suite = null;
function hpke() {
  if (!suite) {
    suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
  }
  return suite;
}

// --- base64url -------------------------------------------------------------------------

export function encodeKey(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let bin = "";
  for (let i = 0; i < u8.length; i += 0x8000) bin += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Unpadded base64url → bytes, else E2EError. */
export function decodeBytes(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new E2EError(`${JSON.stringify(String(text).slice(0, 16))}... is not base64url`);
  }
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** Unpadded base64url of exactly `size` bytes (canonical), else E2EError. */
export function decodeKey(text, size = KEY_SIZE) {
  const raw = decodeBytes(text);
  if (raw.length !== size || encodeKey(raw) !== text) {
    throw new E2EError(`a key of ${size} bytes in unpadded base64url was expected`);
  }
  return raw;
}

// --- keys ------------------------------------------------------------------------------

/** A new device key pair: the private half non-extractable (keys.js stores it). */
export function generateDeviceKey() {
  return crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
}

/** {pair, public (32 bytes), publicText} of a CryptoKeyPair. */
export async function deviceOf(pair) {
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { pair, public: raw, publicText: encodeKey(raw) };
}

async function importPublic(raw) {
  try {
    return await crypto.subtle.importKey("raw", raw, { name: "X25519" }, true, []);
  } catch (e) {
    throw new E2EError(`not an X25519 public key: ${e.message || e}`);
  }
}

export function newContentKey() {
  return crypto.getRandomValues(new Uint8Array(CONTENT_KEY_SIZE));
}

/** The content key as a non-extractable AES-256-GCM key (it can be posted to a worker). */
export function importContentKey(raw) {
  if (raw.byteLength !== CONTENT_KEY_SIZE) {
    throw new E2EError(`a content key is ${CONTENT_KEY_SIZE} bytes, not ${raw.byteLength}`);
  }
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

// --- the offer binding and the sealed content key ----------------------------------------

/** The associated data of a sealed content key: UTF-8 of the compact JSON array of the
 * offer's fields the receiver relies on (e2e.py's offer_binding: no spaces, non-ASCII
 * unescaped, the transfer id as a lowercase canonical UUID). The file name is not bound. */
export function offerBinding(r) {
  const tid = canonicalUuid(r.transfer_id);
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(tid)) {
    throw new E2EError(`${r.transfer_id} is not a UUID`);
  }
  for (const n of [r.file_size, r.chunk_size, r.total_chunks]) {
    if (!Number.isSafeInteger(n)) throw new E2EError(`${n} is not an integer`);
  }
  const fields = [
    "roomdrop-offer-v1",
    tid,
    String(r.sender_id),
    String(r.receiver_id),
    r.file_size,
    r.chunk_size,
    r.total_chunks,
    String(r.sha256),
    String(r.mime_type),
  ];
  const text = JSON.stringify(fields);
  if (/[\ud800-\udfff]/.test(text.replace(/[\ud800-\udbff][\udc00-\udfff]/g, ""))) {
    throw new E2EError("a field of the offer is not valid Unicode"); // Python cannot encode it either
  }
  return utf8.encode(text);
}

/** Seal `contentKey` to the device whose public key is `recipient` (32 bytes),
 * authenticated by the `sender` device ({pair}): {enc, ct} as bytes. */
export async function sealContentKey(contentKey, { sender, recipient, binding }) {
  const recipientPublicKey = await importPublic(recipient);
  const { enc, ct } = await hpke().seal({ recipientPublicKey, senderKey: sender.pair, info: INFO }, contentKey, binding);
  return { enc: new Uint8Array(enc), ct: new Uint8Array(ct) };
}

/** Open a content key sealed to `recipient` ({pair}) by the holder of `sender`'s key
 * (32 bytes) for the offer `binding` describes; E2EError if any of them does not match. */
export async function openContentKey(sealed, { recipient, sender, binding }) {
  const senderPublicKey = await importPublic(sender);
  let key;
  try {
    key = new Uint8Array(
      await hpke().open({ recipientKey: recipient.pair, enc: sealed.enc, senderPublicKey, info: INFO }, sealed.ct, binding),
    );
  } catch {
    throw new E2EError("the content key does not open: it was not sealed to this device by that sender for this offer");
  }
  if (key.length !== CONTENT_KEY_SIZE) throw new E2EError(`a content key is ${CONTENT_KEY_SIZE} bytes, not ${key.length}`);
  return key;
}

const sealedKey = (s) => ({ enc: encodeKey(s.enc), ct: encodeKey(s.ct) });

function sealedOf(s) {
  if (!s || typeof s !== "object") throw new E2EError("a sealed key is missing");
  return { enc: decodeKey(s.enc), ct: decodeBytes(s.ct) };
}

/** A new content key for transfer `r` (its offer's fields and sender_id), sealed to the
 * receiver's device key (text) and to the sender's own: {e2e (the offer's part), key
 * (the raw content key)}. */
export async function sealOffer(r, device, receiverKey) {
  const key = newContentKey();
  const binding = offerBinding(r);
  const peer = decodeKey(receiverKey);
  const e2e = {
    v: 1,
    sender_key: device.publicText,
    receiver_key: receiverKey,
    for_receiver: sealedKey(await sealContentKey(key, { sender: device, recipient: peer, binding })),
    for_sender: sealedKey(await sealContentKey(key, { sender: device, recipient: device.public, binding })),
  };
  return { e2e, key };
}

/** The raw content key of transfer `r` for this device: its receiver's copy, or with
 * asSender its sender's own. E2EError if the offer names another device key for this
 * side, or the sealed key does not open for this offer. */
export async function openOffer(r, e2e, device, { asSender = false } = {}) {
  if (!e2e || e2e.v !== 1) throw new E2EError("the offer's e2e part is missing or of an unknown version");
  const mine = asSender ? e2e.sender_key : e2e.receiver_key;
  if (mine !== device.publicText) {
    const side = asSender ? "sender" : "receiver";
    throw new E2EError(`the transfer's content key is sealed to the ${side} key ${mine}, not to this device's ${device.publicText}`);
  }
  const sealed = sealedOf(asSender ? e2e.for_sender : e2e.for_receiver);
  return openContentKey(sealed, { recipient: device, sender: decodeKey(e2e.sender_key), binding: offerBinding(r) });
}

// --- chunks ----------------------------------------------------------------------------

/** AES-256-GCM for one transfer's chunks, under its content key (a CryptoKey from
 * importContentKey). Also used in opfs-worker.js (a CryptoKey can be posted). */
export class ChunkCipher {
  constructor(key, transferId) {
    this.key = key;
    this.tid = uuidBytes(canonicalUuid(transferId));
    if (this.tid.length !== 16) throw new E2EError(`${transferId} is not a UUID`);
  }

  params(index, length) {
    const iv = new Uint8Array(12);
    const ivView = new DataView(iv.buffer);
    ivView.setUint32(4, Math.floor(index / 2 ** 32));
    ivView.setUint32(8, index >>> 0);
    const aad = new Uint8Array(24);
    aad.set(this.tid, 0);
    const view = new DataView(aad.buffer);
    view.setUint32(16, index);
    view.setUint32(20, length);
    return { name: "AES-GCM", iv, additionalData: aad, tagLength: 128 };
  }

  /** The ciphertext (plaintext + 16-byte tag) of chunk `index`. */
  async seal(index, plaintext) {
    return new Uint8Array(await crypto.subtle.encrypt(this.params(index, plaintext.byteLength), this.key, plaintext));
  }

  /** The plaintext of chunk `index`; E2EError if it is not exactly what the sender
   * sealed for this index of this transfer. */
  async open(index, ciphertext) {
    const length = ciphertext.byteLength - TAG_SIZE;
    if (length < 0) throw new E2EError(`${ciphertext.byteLength} bytes is shorter than the GCM tag`);
    try {
      return new Uint8Array(await crypto.subtle.decrypt(this.params(index, length), this.key, ciphertext));
    } catch {
      throw new E2EError(`chunk ${index} does not decrypt (tampered, moved or cut)`);
    }
  }
}

// --- safety numbers --------------------------------------------------------------------

async function fingerprint(user, key) {
  const id = utf8.encode(user);
  let digest = new Uint8Array(2 + key.length + id.length);
  digest.set(key, 2);
  digest.set(id, 2 + key.length);
  const buf = new Uint8Array(64 + key.length);
  buf.set(key, 64);
  let input = new Uint8Array(digest.length + key.length);
  input.set(digest, 0);
  input.set(key, digest.length);
  for (let i = 0; i < FINGERPRINT_ITERATIONS; i++) {
    digest = new Uint8Array(await crypto.subtle.digest("SHA-512", input));
    if (i === 0) input = buf;
    input.set(digest, 0);
  }
  let out = "";
  for (let i = 0; i < 30; i += 5) {
    let n = 0;
    for (let j = 0; j < 5; j++) n = n * 256 + digest[i + j];
    out += String(n % 100000).padStart(5, "0");
  }
  return out;
}

/** The 60-digit safety number of two identities (user id, 32-byte public key), the same
 * whichever side computes it (Signal's construction), in 12 groups of five. */
export async function safetyNumber(userA, keyA, userB, keyB) {
  const parts = [await fingerprint(userA, keyA), await fingerprint(userB, keyB)].sort();
  const digits = parts.join("");
  return digits.match(/.{5}/g).join(" ");
}
