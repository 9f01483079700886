// The receiving end: consider an offer, accept it with the chunks still lacking, take
// chunks in from the relay or a data channel, and announce the verified file.
//  * Offers. An offer addressed to this page is shown (consider) and accepted (accept,
//    with the chunks its part file lacks) or rejected (reject) by the person. A new
//    offer of content this page is already receiving from the same sender supersedes
//    the old transfer; the part file stays for the new one to resume from.
//  * Chunks. Every frame waits in a bounded inbox, then goes to the part store's worker
//    (store.js, opfs-worker.js), which reassembles, verifies its sha256 and writes it
//    (take); its answer comes back to onStoreEvent. A bad chunk is asked for again;
//    when the last chunk is stored the whole file is verified and put in place
//    (finishReceiving), and file-share-complete goes to the server.
//  * Asking. After a resume, or when nothing has arrived for STALL_TIMEOUT, or when a
//    data channel drops, this page asks for every chunk it lacks (requestMissing). It
//    reports its progress to the server every second (tick).
//  * Taking up. A reloaded page adopts a transfer the server still holds and resumes
//    it from its part file (takeUp).
// Counterpart: src/roomdrop/client/incoming.py

import { canonicalUuid, chunkLength, formatBytes, rangesOf, sanitizeFilename, uuidOfBytes } from "./protocol.js";
import { FINAL, Role, isLive, newTransfer, now, pick, setProgress } from "./transfers.js";

const STALL_TIMEOUT = 2000;
const REPORT_EVERY = 1000;
const REQUEST_AGAIN_AFTER = 1000;
// Received frames wait in a queue here and go to the worker (their buffers move, no
// copy), which decodes, reassembles, verifies and writes them; at most WORKER_FRAMES are
// in the worker at once, so a pause stops the writing at once: queued frames of a
// transfer that is no longer active are dropped (§4). At most INBOX_BYTES wait: beyond
// that a frame is dropped and its chunk asked for again later, like the reference
// client's inbox, so memory stays bounded whatever the rate.
const INBOX_BYTES = 32 * 1024 * 1024;
const WORKER_FRAMES = 16;

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
    this.inbox = { items: [], head: 0, bytes: 0, inWorker: 0 };
    this.dropped = 0; // frames dropped because the inbox was full
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
    this.host.transfers.set(tid, t);
    const { display } = this.host;
    display.render(t);
    display.showOffer(t, () => this.accept(t), () => this.reject(t));
    display.note(`${from} offers ${t.filename} (${formatBytes(t.file_size)}, ${t.mime_type})`);
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
    const { part, held } = await this.store.open(contentKey(t), t.filename);
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
    if (t._.final || t.status !== "pending" || t._.accepting) return;
    const { display } = this.host;
    t._.accepting = true;
    display.removeOffer(t);
    try {
      await this.openPart(t);
    } catch (e) {
      const message = String(e.message || e);
      this.host.trySend("file-share-error", { transfer_id: t.transfer_id, code: "storage-error", message });
      this.finish(t, "failed", message, "storage-error");
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
    try {
      await this.openPart(t);
    } catch (e) {
      this.finish(t, "failed", String(e.message || e), "storage-error");
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
    const inbox = this.inbox;
    if (inbox.bytes > INBOX_BYTES) {
      this.dropped += 1;
      return;
    }
    inbox.items.push({ t, part: t._.part, tid, data, via });
    inbox.bytes += data.byteLength;
    this.feedWorker();
  }

  feedWorker() {
    const inbox = this.inbox;
    while (inbox.inWorker < WORKER_FRAMES && inbox.head < inbox.items.length) {
      const item = inbox.items[inbox.head];
      inbox.items[inbox.head++] = undefined;
      inbox.bytes -= item.data.byteLength;
      const t = item.t;
      if (t._.final || t.status !== "active" || t._.part !== item.part) continue;
      inbox.inWorker++;
      this.store.frame(item.part, item.tid, item.data, item.via);
    }
    if (inbox.head > 1024 && inbox.head * 2 > inbox.items.length) {
      inbox.items = inbox.items.slice(inbox.head);
      inbox.head = 0;
    }
  }

  /** The part store's worker answers for one frame (consumed) or one chunk (its result). */
  onStoreEvent(e) {
    if (e.event === "consumed") {
      this.inbox.inWorker = Math.max(0, this.inbox.inWorker - 1);
      this.feedWorker();
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
      case "bad-checksum":
        this.host.display.note(`${t.filename}: chunk ${index} failed its sha256 check; asking for it again`);
        this.host.trySend("file-share-chunk-request", { transfer_id: t.transfer_id, ranges: [[index, index + 1]], reason: "bad-checksum" });
        return;
      case "error": {
        const message = e.message;
        this.host.trySend("file-share-error", { transfer_id: t.transfer_id, code: "storage-error", message });
        this.finish(t, "failed", message, "storage-error");
        return;
      }
      default:
        console.warn(`dropping a chunk of ${t.filename} (${e.result}): ${e.message || ""}`);
    }
  }

  // --- completing -----------------------------------------------------------------------

  /** Every chunk is in: check the whole file's sha256, then put it in place (§4). */
  async finishReceiving(t) {
    if (t._.verifying || t._.final) return;
    t._.verifying = true;
    t._.note = "verifying sha256…";
    this.host.display.render(t);
    const part = t._.part;
    const failed = (code, message) => {
      this.host.trySend("file-share-error", { transfer_id: t.transfer_id, code, message });
      this.finish(t, "failed", message, code);
    };
    let digest;
    try {
      digest = (await this.store.verify(part)).sha256;
    } catch (e) {
      t._.verifying = false;
      failed("storage-error", String(e.message || e));
      return;
    }
    t._.note = null;
    if (digest !== t.sha256) {
      const message = `file sha256 ${digest} does not match the offer's ${t.sha256}`;
      t._.part = null;
      await this.store.remove(part).catch(() => {});
      failed("integrity-error", message);
      return;
    }
    let placed;
    try {
      placed = await this.store.place(part, t.filename);
    } catch (e) {
      failed("storage-error", String(e.message || e));
      return;
    }
    t._.part = null;
    t.saved_name = placed.name;
    try {
      const file = await this.store.receivedFile(placed.name);
      t._.url = URL.createObjectURL(file);
    } catch (e) {
      console.error("cannot open the received file", e);
    }
    setProgress(t, t.total_chunks, t.file_size);
    this.finish(t, "completed");
    this.announceComplete(t);
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
