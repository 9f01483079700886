// The sending end's part of end-to-end encryption (docs/protocol.md §14): whom a
// transfer is sealed to (the receiver's published key, trusted on first use; a known
// receiver with a new key waits for the person to trust it), the sealed content key in
// the offer, the sender's own sealed copy opened again to take a transfer up after a
// reload, and each chunk sealed into its frames (flag SEALED, zero checksum): the pump's
// next chunks read in one slice of the file and sealed while those before them go out
// (readAhead). A file kept for someone away (keeping.js) is sealed to the key they last
// published in the room (keyring.js forReceiver with kept).
// outgoing.js uses it; the keys and checks are keyring.js's.
// Counterpart: the sealing parts of src/roomdrop/client/outgoing.py

import { ChunkCipher, E2EError, importContentKey, openOffer, sealOffer } from "./e2e.js";
import { KeyChanged } from "./keyring.js";
import { canonicalUuid, chunkLength, encodeFrames, toHex } from "./protocol.js";

const READ_AHEAD = 16; // chunks read in one slice of the file and sealed ahead of the channel

/** The fields of a transfer (or a room-state transfer object) its binding covers. */
export function bound(r, sender, receiver) {
  return {
    transfer_id: canonicalUuid(r.transfer_id),
    sender_id: sender,
    receiver_id: receiver,
    file_size: r.file_size,
    chunk_size: r.chunk_size,
    total_chunks: r.total_chunks,
    sha256: r.sha256,
    mime_type: r.mime_type,
  };
}

export class Sealing {
  /** @param {object} host the session (transfers.js, Host): user, keyring, display */
  constructor(host) {
    this.host = host;
  }

  /** The receiver of `t` to seal to ({user, key, number}), or null: in the clear. A
   * known receiver with a new key: the row warns and this waits until the person
   * trusts it (or the transfer ends: null). Throws E2ERequired. */
  async receiver(t) {
    const { keyring, display } = this.host;
    for (;;) {
      try {
        const peer = await keyring.forReceiver(t.peer, { kept: Boolean(t._.kept) });
        t._.keyChanged = null;
        return peer;
      } catch (e) {
        if (!(e instanceof KeyChanged)) throw e;
        if (t._.final) return null;
        t._.keyChanged = { user: e.user, key: e.key, message: e.message };
        display.note(`${t.filename}: not sent yet: ${e.message}`, "error");
        display.render(t);
        const wait = keyring.untilTrusted(e.user, e.key);
        t._.abandonTrust = wait.abandon;
        const trusted = await wait.promise;
        t._.abandonTrust = null;
        t._.keyChanged = null;
        display.render(t);
        if (!trusted || t._.final) return null;
      }
    }
  }

  /** A new content key for `t`, sealed to `peer`: the offer's e2e part; `t` encrypts
   * its chunks under it from now on. */
  async seal(t, peer) {
    const { keyring, user } = this.host;
    const { e2e, key } = await sealOffer(bound(t, user, t.peer), keyring.device, peer.key);
    await this.use(t, key, peer.number);
    return e2e;
  }

  /** Taking up `o` (a transfer of room-state this user sends): its content key from the
   * sender's own sealed copy. False if it cannot be (sealed by another device key: this
   * browser's storage was cleared), then the file is offered anew. True for a
   * transfer in the clear, if the server allows it. */
  async takeUp(t, o) {
    const { keyring, user } = this.host;
    if (!o.e2e) return !keyring.requireE2e;
    try {
      const key = await openOffer(bound(o, user, o.receiver_id), o.e2e, keyring.device, { asSender: true });
      const number = await keyring.safetyNumber(o.receiver_id, o.e2e.receiver_key);
      await this.use(t, key, number, canonicalUuid(o.transfer_id));
      return true;
    } catch (e) {
      if (!(e instanceof E2EError)) throw e;
      this.host.display.note(`cannot take up ${t.filename} (${e.message}); offering it anew`, "error");
      return false;
    }
  }

  async use(t, rawKey, number, tid = t.transfer_id) {
    t._.cipher = new ChunkCipher(await importContentKey(rawKey), tid);
    rawKey.fill(0);
    t.e2e = true;
    t.safety_number = number;
  }

  /** The queued chunks that follow `after` in the queue (all of them from its first if
   * null), at most READ_AHEAD of consecutive indexes: read in one slice of the file and
   * sealed (sealChunk). Resolves to {chunks: [{index, length, sealed}]} (null: nothing
   * queued there) or {error}; never rejects. */
  readAhead(t, after) {
    const picked = [];
    let past = after === null;
    for (const i of t._.queue) {
      if (!past) {
        past = i === after;
        continue;
      }
      if (picked.length && i !== picked[picked.length - 1] + 1) break;
      picked.push(i);
      if (picked.length >= READ_AHEAD) break;
    }
    if (!past) return this.readAhead(t, null); // `after` was taken out of the queue
    if (!picked.length) return null;
    return (async () => {
      const lengths = picked.map((i) => chunkLength(i, t.file_size, t.chunk_size));
      const total = lengths.reduce((a, b) => a + b, 0);
      const start = picked[0] * t.chunk_size;
      const buf = await t._.file.slice(start, start + total).arrayBuffer();
      if (buf.byteLength !== total) throw new Error(`read ${buf.byteLength} of ${total} bytes`);
      let at = 0;
      const chunks = picked.map((index, k) => {
        const data = new Uint8Array(buf, at, lengths[k]);
        at += lengths[k];
        return this.sealChunk(t, index, data).then((sealed) => ({ index, length: lengths[k], sealed }));
      });
      return { chunks: await Promise.all(chunks) };
    })().catch((error) => ({ error }));
  }

  /** Chunk `index` (its plaintext `data`, a Uint8Array) made ready to go (sealChunk): sealed under
   * the transfer's content key ({payload: ciphertext, sealed: true}), or in the clear
   * with its sha256 ({payload, checksum}). */
  async sealChunk(t, index, data) {
    if (t._.cipher) return { payload: await t._.cipher.seal(index, data), checksum: null, sealed: true };
    return { payload: data, checksum: toHex(await crypto.subtle.digest("SHA-256", data)), sealed: false };
  }

  /** The frames of a chunk sealChunk made ready, each at most `max` bytes (null: one whole
   * frame). */
  encode(t, index, { payload, checksum, sealed }, max) {
    return encodeFrames(t.transfer_id, index, t.total_chunks, t.chunk_size, payload, checksum, max, sealed);
  }

  /** The frames of chunk `index` (its plaintext `data`), each at most `max` bytes (null:
   * one whole frame): sealed under the transfer's content key, or in the clear with
   * its sha256. */
  async frames(t, index, data, max) {
    return this.encode(t, index, await this.sealChunk(t, index, new Uint8Array(data)), max);
  }
}
