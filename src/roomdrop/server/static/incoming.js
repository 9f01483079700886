// The receiving end: consider an offer, accept it with the chunks still lacking, take
// chunks in from the relay or a data channel, and announce the verified file.
//  * Offers. An offer addressed to this page is checked (opening.js: sealed to this
//    device by its sender's published, trusted key; a new key of a known sender is
//    shown with a warning and Accept waits for the person to trust it), shown
//    (consider) and accepted (accept, with the chunks its part file lacks, its content
//    key opened for the worker) or rejected (reject) by the person. A new offer of
//    content this page is already receiving from the same sender supersedes the old
//    transfer; the part file stays for the new one to resume from. A file kept on the
//    server for this user (keeping.js) is offered the same way, its chunks from the store.
//  * Chunks. Every frame waits in a bounded inbox (inbox.js), then goes to the part
//    store's worker (store.js, opfs-worker.js), which reassembles, decrypts (or verifies
//    its sha256), checks chunk 0's type and writes it (take); its answer comes back to
//    onStoreEvent. A bad chunk (one that does not decrypt) is asked for again; chunk 0
//    not of the declared or an allowed type fails the transfer (mime-type-not-allowed);
//    when the last chunk is stored the whole file is verified and put in place
//    (finishReceiving), and file-share-complete goes to the server.
//  * Asking. After a resume, or when nothing has arrived for STALL_TIMEOUT, or when a
//    data channel drops, this page asks for every chunk it lacks (requestMissing). It
//    reports its progress to the server every second (tick).
//  * Taking up. A reloaded page adopts a transfer the server still holds and resumes
//    it from its part file (takeUp).
//  * A room that requires a malware scan at the receiver (room-state.require_scan): the
//    page cannot scan, so it shows each offer with CANNOT_SCAN and no Accept, and accepts
//    nothing (the server would refuse it with scan-required).
// Counterpart: src/roomdrop/client/incoming.py

import { finishReceiving } from "./completion.js";
import { Inbox } from "./inbox.js";
import { Opening, sealedHow } from "./opening.js";
import { canonicalUuid, chunkLength, formatBytes, rangesOf, sanitizeFilename, uuidOfBytes } from "./protocol.js";
import { FINAL, Role, isLive, newTransfer, now, pick, setProgress } from "./transfers.js";

const STALL_TIMEOUT = 2000;
const REPORT_EVERY = 1000;
const REQUEST_AGAIN_AFTER = 1000;
const CANNOT_SCAN =
  "This page cannot receive it here: the room takes only receivers that scan each file " +
  "for malware before saving it, which a browser cannot. Receive it with " +
  "roomdrop receive --scan URL, or reject it.";

/** The offer a transfer of room-state stands for. */
export function offerOf(o) {
  return {
    transfer_id: canonicalUuid(o.transfer_id),
    receiver_id: o.receiver_id,
    filename: o.filename,
    file_size: o.file_size,
    mime_type: o.mime_type || "application/octet-stream",
    chunk_size: o.chunk_size,
    total_chunks: o.total_chunks,
    sha256: o.sha256,
    e2e: o.e2e || null,
    store: o.store === true, // kept for this user: its sender may be away (keeping.js)
  };
}

function contentKey(t) {
  return { sha256: t.sha256, file_size: t.file_size, chunk_size: t.chunk_size };
}

function receiveInternals(lastChunk) {
  return { part: null, held: null, heldCount: 0, heldBytes: 0, writing: new Set(), lastChunk, lastRequest: 0, lastReport: 0, completedSent: false };
}

export class Incoming extends Role {
  /**
   * @param {object} host the session (transfers.js, Host)
   * @param {import("./store.js").PartStore} store the part files
   */
  constructor(host, store) {
    super(host);
    this.store = store;
    store.onEvent = (e) => this.onStoreEvent(e);
    this.inbox = new Inbox(store);
    this.opening = new Opening(host);
  }

  get dropped() {
    return this.inbox.dropped;
  }

  /** Fail `t` here and tell the server (and so the sender). */
  fail(t, code, message) {
    this.host.trySend("file-share-error", { transfer_id: t.transfer_id, code, message });
    this.finish(t, "failed", message, code);
  }

  /** Its part file closes, keeping the verified chunks, unless it arrived. */
  ended(t, status) {
    if (t._.part && status !== "completed") {
      const part = t._.part;
      t._.part = null;
      this.store.close(part).catch(() => {});
    }
  }

  activated(t) {
    t._.lastChunk = now();
    this.requestMissing(t, "resume");
  }

  // --- offers ---------------------------------------------------------------------------

  consider(p, from) {
    const tid = canonicalUuid(p.transfer_id);
    if (this.host.transfers.has(tid)) return;
    this.supersede(p, from);
    const t = newTransfer(
      {
        transfer_id: tid,
        direction: "receive",
        peer: from,
        filename: sanitizeFilename(p.filename),
        file_size: p.file_size,
        chunk_size: p.chunk_size,
        total_chunks: p.total_chunks,
        mime_type: p.mime_type || "application/octet-stream",
        sha256: p.sha256,
        status: "pending",
      },
      receiveInternals(0),
    );
    t._.kept = p.store === true; // kept on the server for this user (keeping.js)
    this.host.transfers.set(tid, t);
    this.host.display.render(t);
    t._.checking = this.checkOffer(t, p, from);
  }

  /** The offer's keys are checked (opening.js), then it is shown for the person to answer
   * (with a warning, Accept waiting, while its sender's new key is not trusted). */
  async checkOffer(t, p, from) {
    const { display } = this.host;
    let ok = false;
    try {
      const fail = (code, message) => this.fail(t, code, message);
      ok = await this.opening.check(t, p, from, fail, () => display.renderOffer(t));
    } catch (e) {
      console.error("checking an offer", e);
      this.fail(t, "e2e-failed", String(e.message || e));
    }
    t._.checking = null;
    if (!ok || t._.final) return;
    const cannot = this.host.requireScan ? CANNOT_SCAN : null;
    display.showOffer(t, () => this.accept(t), () => this.reject(t), cannot);
    display.render(t);
    if (cannot) display.note(`${from} offers ${t.filename}: ${cannot}`, "error");
    display.note(`${from} offers ${t.filename} (${formatBytes(t.file_size)}, ${t.mime_type}), ${sealedHow(t)}`);
  }

  /** A new offer of content this page is receiving from the same sender replaces it. */
  supersede(p, from) {
    for (const t of this.host.transfers.values()) {
      if (
        t.direction === "receive" &&
        isLive(t) &&
        t.peer === from &&
        t.sha256 === p.sha256 &&
        t.file_size === p.file_size &&
        t.chunk_size === p.chunk_size
      ) {
        this.finish(t, "failed", `superseded by ${p.transfer_id}`, "superseded", { quiet: true });
      }
    }
  }

  async openPart(t) {
    const e2e = await this.opening.contentKey(t);
    const { part, held } = await this.store.open(contentKey(t), t.filename, e2e, this.opening.mime(t));
    t._.part = part;
    t._.held = new Uint8Array(t.total_chunks);
    let bytes = 0;
    for (const i of held) {
      t._.held[i] = 1;
      bytes += chunkLength(i, t.file_size, t.chunk_size);
    }
    t._.heldCount = held.length;
    t._.heldBytes = bytes;
    t.resumed_bytes = bytes;
    setProgress(t, held.length, bytes);
  }

  async accept(t) {
    if (t._.final || t.status !== "pending" || t._.accepting || t._.keyChanged || t._.checking) return;
    const { display } = this.host;
    if (this.host.requireScan) return display.note(CANNOT_SCAN, "error");
    t._.accepting = true;
    this.opening.settled(t);
    display.removeOffer(t);
    try {
      await this.openPart(t);
    } catch (e) {
      this.fail(t, e.code === "e2e-failed" ? "e2e-failed" : "storage-error", String(e.message || e));
      return;
    }
    if (t._.final) {
      this.store.close(t._.part).catch(() => {});
      return;
    }
    const missing = this.missingChunks(t);
    const payload = { transfer_id: t.transfer_id };
    if (missing.length < t.total_chunks) payload.missing = rangesOf(missing);
    if (!this.host.trySend("file-share-accept", payload)) {
      display.note("not connected to the server: try again in a moment", "error");
      this.store.close(t._.part).catch(() => {});
      t._.part = null;
      t._.accepting = false;
      display.showOffer(t, () => this.accept(t), () => this.reject(t));
      return;
    }
    t.status = "active";
    t._.started = t._.lastChunk = now();
    t._.samples = [];
    if (t.resumed_bytes) {
      display.note(`resuming ${t.filename}: ${formatBytes(t.resumed_bytes)} of ${formatBytes(t.file_size)} already here`);
    }
    display.render(t);
    if (t._.heldCount === t.total_chunks) await this.finishReceiving(t);
  }

  reject(t) {
    if (t._.final || t.status !== "pending") return;
    if (!this.host.trySend("file-share-reject", { transfer_id: t.transfer_id, reason: "declined" })) {
      this.host.display.note("not connected to the server: try again in a moment", "error");
      return;
    }
    this.opening.settled(t);
    this.store.removeByKey(contentKey(t)).catch(() => {});
    this.finish(t, "rejected", "declined", null, { quiet: true });
    this.host.display.note(`${t.filename}: rejected`);
  }

  /** A transfer the server holds for this user, unknown here (the page was reloaded):
   * taken up from its part file. */
  async takeUp(o) {
    const { display } = this.host;
    const tid = canonicalUuid(o.transfer_id);
    const t = newTransfer(
      {
        ...pick(offerOf(o), ["filename", "file_size", "chunk_size", "total_chunks", "mime_type", "sha256"]),
        filename: sanitizeFilename(o.filename),
        transfer_id: tid,
        direction: "receive",
        peer: o.sender_id,
        status: o.status,
      },
      receiveInternals(now()),
    );
    this.host.transfers.set(tid, t);
    display.render(t);
    const fail = (code, message) => this.fail(t, code, message);
    if (!(await this.opening.check(t, offerOf(o), o.sender_id, fail, () => {}, { takingUp: true }))) return;
    try {
      await this.openPart(t);
    } catch (e) {
      if (e.code === "e2e-failed") this.fail(t, "e2e-failed", String(e.message || e));
      else this.finish(t, "failed", String(e.message || e), "storage-error");
      return;
    }
    display.note(`taking up ${t.filename} again: ${formatBytes(t._.heldBytes)} of ${formatBytes(t.file_size)} already here`);
    t._.started = now();
    if (t._.heldCount === t.total_chunks) {
      t.status = "active";
      await this.finishReceiving(t);
      return;
    }
    let status = o.status;
    try {
      status = (await this.host.api.transfer(this.host.room, tid)).status;
    } catch {}
    if (t._.final) return;
    if (status === "paused") {
      t.status = "paused";
      this.host.trySend("file-share-resume", { transfer_id: tid });
    } else if (status === "active") {
      t.status = "active";
      t._.lastChunk = now();
      this.requestMissing(t, "resume");
    } else if (FINAL.has(status)) {
      this.finish(t, status);
    }
    display.render(t);
  }

  /** It ended while this page was away (room-state says so): the verified chunks of its
   * part file are kept, as when the server gives up on a transfer. */
  end(t, status, error, code) {
    if (t._.part) {
      const part = t._.part;
      t._.part = null;
      this.store.close(part).catch(() => {});
    }
    this.finish(t, status, error, code);
  }

  // --- what the sender and the server say -----------------------------------------------

  /** The accept of this user (another of its pages, or this one's echo). */
  onAccept(p, from) {
    const t = this.get(p.transfer_id);
    if (!t) return;
    if (from === this.host.user && !t._.final) t.status = "active";
    this.host.display.render(t);
  }

  onReject(p) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    this.finish(t, "rejected", p.reason || "declined");
  }

  /** The server's echo of this page's own file-share-complete: nothing to do. */
  onComplete(p) {}

  async onCancel(p, from) {
    const t = this.get(p.transfer_id);
    if (t && !t._.final && t._.part) {
      const part = t._.part;
      t._.part = null;
      if (from == null) {
        // the server gave up on it (sender gone, inactivity): keep what arrived
        this.store.close(part).catch(() => {});
      } else {
        this.store.remove(part).catch(() => {});
      }
    }
    return super.onCancel(p, from);
  }

  /** The data channel to `remote` went down: what was in flight on it is asked for again. */
  onLinkDown(remote, wasOpen) {
    for (const t of this.host.transfers.values()) {
      if (t.peer !== remote || t._.final) continue;
      if (t.direction === "receive" && wasOpen) this.requestMissing(t, "missing");
    }
  }

  // --- asking for chunks ----------------------------------------------------------------

  missingChunks(t) {
    const out = [];
    const held = t._.held;
    if (!held) return out;
    for (let i = 0; i < t.total_chunks; i++) if (!held[i] && !t._.writing.has(i)) out.push(i);
    return out;
  }

  /** Ask the sender for every chunk this page still lacks (§13.3). */
  requestMissing(t, reason) {
    const at = now();
    if (reason === "resume" && at - t._.lastRequest < REQUEST_AGAIN_AFTER) return;
    if (t._.final || t.status !== "active" || !t._.held) return;
    const missing = this.missingChunks(t);
    t._.lastRequest = at;
    if (!missing.length) return;
    this.host.trySend("file-share-chunk-request", { transfer_id: t.transfer_id, ranges: rangesOf(missing), reason });
  }

  /** The clock, for an active transfer: its progress to the server every second, and a
   * request for what it lacks when nothing has arrived for STALL_TIMEOUT. */
  tick(t, at) {
    if (!t._.held || !this.host.online()) return;
    if (at - t._.lastReport >= REPORT_EVERY) {
      t._.lastReport = at;
      this.host.trySend("file-share-progress", {
        transfer_id: t.transfer_id,
        chunks_sent: t._.heldCount,
        bytes_transferred: t._.heldBytes,
        progress_percent: t.progress_percent,
        status: "active",
      });
    }
    if (at - t._.lastChunk > STALL_TIMEOUT && at - t._.lastRequest > STALL_TIMEOUT) {
      this.requestMissing(t, "missing");
    }
  }

  // --- taking chunks --------------------------------------------------------------------

  onRelayFrame(data) {
    this.take(data, "relay", null);
  }

  onLinkFrame(remote, data) {
    this.take(data, "p2p", remote);
  }

  take(data, via, remote) {
    if (data.byteLength < 72) return;
    const tid = uuidOfBytes(new Uint8Array(data, 4, 16));
    const t = this.get(tid);
    if (!t || t.direction !== "receive" || t._.final || !t._.part) return;
    if (remote !== null && remote !== t.peer) return; // not this transfer's sender
    if (t.status !== "active") return; // chunks while pending or paused are dropped (§4)
    t._.lastChunk = now();
    this.inbox.push(t, tid, data, via);
  }

  /** The part store's worker answers for one frame (consumed) or one chunk (its result). */
  onStoreEvent(e) {
    if (e.event === "consumed") {
      this.inbox.consumed();
      return;
    }
    const t = this.get(e.tid);
    if (!t || t._.final || t._.part !== e.part) return;
    const index = e.index;
    switch (e.result) {
      case "stored": {
        t._.lastChunk = now();
        if (t._.held[index]) return;
        t._.held[index] = 1;
        t._.heldCount++;
        t._.heldBytes += e.length;
        t.bytes_via[e.via] += e.length;
        t.transport = e.via;
        setProgress(t, t._.heldCount, t._.heldBytes);
        if (t._.heldCount === t.total_chunks) this.finishReceiving(t);
        return;
      }
      case "duplicate":
        t._.lastChunk = now();
        return;
      case "bad-checksum": {
        const what = t.e2e ? "did not decrypt (tampered with on the way?)" : "failed its sha256 check";
        this.host.display.note(`${t.filename}: chunk ${index} ${what}; asking for it again`);
        this.host.trySend("file-share-chunk-request", { transfer_id: t.transfer_id, ranges: [[index, index + 1]], reason: "bad-checksum" });
        return;
      }
      case "mime-refused": {
        const part = t._.part;
        t._.part = null;
        this.store.remove(part).catch(() => {});
        this.fail(t, "mime-type-not-allowed", `${t.filename}: ${e.message}`);
        return;
      }
      case "error":
        this.fail(t, "storage-error", e.message);
        return;
      default:
        console.warn(`dropping a chunk of ${t.filename} (${e.result}): ${e.message || ""}`);
    }
  }

  // --- completing -----------------------------------------------------------------------

  /** Every chunk is in: the whole file verified and put in place (completion.js). */
  finishReceiving(t) {
    return finishReceiving(this, t);
  }

  /** Tells the server (false when its socket is down: catch-up sends it again). */
  announceComplete(t) {
    t._.completedSent = this.host.trySend("file-share-complete", { transfer_id: t.transfer_id, sha256: t.sha256 });
  }

  /** Completed here, but the server was not told (catchup.js tells it once it holds the
   * transfer active again). */
  unannounced(t) {
    return t.direction === "receive" && t.status === "completed" && !t._.completedSent;
  }

  /** Resumed: a transfer completed here while the server paused it is announced now. */
  onResume(p, from) {
    const t = this.get(p.transfer_id);
    if (t && this.unannounced(t)) this.announceComplete(t);
    else super.onResume(p, from);
  }
}
