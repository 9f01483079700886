// The part store's worker (store.js is its main-thread side): part files in the
// origin-private file system (part-files.js), and every received frame taken in here,
// off the main thread: decoded, reassembled, then
//  * end-to-end encrypted (the transfer's content key came with open, a non-extractable
//    CryptoKey): decrypted (e2e.js ChunkCipher), a chunk that does not decrypt being a
//    bad-checksum (§14.4); a frame not sealed is refused;
//  * in the clear (a server that allows it): checked against its sha256 (§4);
// its chunk 0 checked against the declared type and the server's MIME lists (policy.js,
// §14.5) before it is written; then written (plaintext) to the part file.

import { ChunkCipher } from "./e2e.js";
import { MimePolicy, sniffMimeType } from "./policy.js";
import { ChunkAssembler, decodeFrame, toHex } from "./protocol.js";
import {
  chunkLen,
  closePart,
  flushAll,
  openPart,
  partState,
  place,
  removeByKey,
  removePart,
  sweep,
  verify,
  write,
} from "./part-files.js";

// part name → how its frames are taken in: {assembler, checking (indexes being
// verified), cipher (null in the clear), policy, declared (the offer's type)}
const intake = new Map();

function consume(bytes) {
  self.postMessage({ event: "consumed", bytes });
}

/** open, with the transfer's e2e key ({key: CryptoKey, tid} or null) and its MIME check
 * ({declared, allow, deny}). */
async function openWith({ key, filename, e2e, mime }) {
  const opened = await openPart({ key, filename });
  intake.set(opened.part, {
    assembler: new ChunkAssembler(4),
    checking: new Set(),
    cipher: e2e ? new ChunkCipher(e2e.key, e2e.tid) : null,
    policy: new MimePolicy(mime?.allow || [], mime?.deny || []),
    declared: mime?.declared ?? null,
  });
  return opened;
}

const ending = (fn) => async (args) => {
  intake.delete(args.part);
  return fn(args);
};

/** The plaintext of a whole chunk, or {result} saying why there is none. */
async function plaintextOf(how, chunk, length) {
  if (how.cipher) {
    if (!chunk.sealed) return { result: "rejected", message: "a chunk in the clear for an end-to-end encrypted transfer" };
    if (chunk.data.byteLength !== length + 16) {
      return { result: "rejected", message: `chunk ${chunk.index} has ${chunk.data.byteLength - 16} bytes, not ${length}` };
    }
    try {
      return { data: await how.cipher.open(chunk.index, chunk.data) };
    } catch (e) {
      return { result: "bad-checksum", message: e.message };
    }
  }
  if (chunk.sealed) return { result: "rejected", message: "a sealed chunk for a transfer in the clear" };
  if (chunk.data.byteLength !== length) {
    return { result: "rejected", message: `chunk ${chunk.index} has ${chunk.data.byteLength} bytes, not ${length}` };
  }
  const digest = toHex(await crypto.subtle.digest("SHA-256", chunk.data));
  if (digest !== chunk.checksum) return { result: "bad-checksum", message: "sha256 mismatch" };
  return { data: chunk.data };
}

/** One binary frame (§3.3) of the transfer whose part file is `part`. Reports each
 *  whole chunk's fate as an event: stored, duplicate, bad-checksum, rejected,
 *  mime-refused (chunk 0 is not what the offer declared or the lists allow), error. */
async function frame({ part, data, via, tid }) {
  const size = data.byteLength;
  try {
    const st = partState(part);
    const how = intake.get(part);
    if (!st || !how) return;
    let f;
    try {
      f = decodeFrame(data);
    } catch (e) {
      self.postMessage({ event: "chunk", part, tid, via, result: "bad-frame", message: e.message });
      return;
    }
    if (f.transferId !== tid) return;
    const chunk = how.assembler.feed(f);
    if (!chunk) return;
    const index = chunk.index;
    const base = { event: "chunk", part, tid, via, index };
    if (chunk.total !== st.total || chunk.chunkSize !== st.key.chunk_size) {
      self.postMessage({ ...base, result: "rejected", message: "total_chunks or chunk_size differ from the offer" });
      return;
    }
    if (st.held[index] || how.checking.has(index)) {
      self.postMessage({ ...base, result: "duplicate" });
      return;
    }
    const length = chunkLen(st, index);
    how.checking.add(index);
    let plain;
    try {
      plain = await plaintextOf(how, chunk, length);
      if (plain.data && index === 0 && how.declared !== null) {
        const objection = how.policy.objection(how.declared, await sniffMimeType(plain.data));
        if (objection) plain = { result: "mime-refused", message: objection };
      }
    } finally {
      how.checking.delete(index);
    }
    if (!plain.data) {
      self.postMessage({ ...base, ...plain });
      return;
    }
    if (partState(part) !== st) return; // closed meanwhile
    try {
      const { stored } = write({ part, index, data: plain.data });
      self.postMessage({ ...base, result: stored ? "stored" : "duplicate", length });
    } catch (e) {
      self.postMessage({ ...base, result: "error", message: String(e.message || e) });
    }
  } finally {
    consume(size);
  }
}

setInterval(flushAll, 250);

const ops = {
  open: openWith,
  write,
  verify,
  place: ending(place),
  close: ending(closePart),
  remove: ending(removePart),
  removeByKey,
  sweep,
  flush: flushAll,
};

self.onmessage = async (event) => {
  const { id, op, args } = event.data;
  if (op === "frame") {
    frame(args).catch((e) => console.error("frame", e));
    return;
  }
  try {
    const result = await ops[op](args || {});
    self.postMessage({ id, ok: true, result });
  } catch (e) {
    self.postMessage({ id, ok: false, error: String((e && e.message) || e), name: e && e.name });
  }
};
