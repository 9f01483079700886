// The sending end: offer a file, send the chunks the receiver lacks, and follow its
// answers until the file is verified at the other end.
//  * Offer or take up. sendFile hashes the file (hashing.js), then either adopts a
//    transfer of the same content that the server still holds (this page was reloaded:
//    takeUp, its content key opened from the sender's sealed copy) or offers it anew
//    (offer, its content key sealed to the receiver's device key: sealing.js, which
//    also waits for the person to trust a receiver's new key). If the server loses the
//    transfer (it restarted), the file is offered again under a new id.
//  * The pump. Once the receiver accepts (with the chunks it lacks), one loop per
//    transfer (pump) sends the queued chunks while the transfer is active and the server
//    reachable, over the data channel if one opens within ICE_TIMEOUT, else through the
//    relay (chooseTransport). If the data channel dies mid-transfer it chooses again.
//    Every chunk is sealed under the transfer's content key (sealing.js frames), on
//    either path.
//  * Requests. Every file-share-chunk-request puts chunks back in the queue; a request
//    for a transfer not known yet is kept until it is (takeUp).
//  * Ends. file-share-complete from the receiver, a reject, a cancel, an error, or what
//    the server says in room-state (catchup.js) ends the transfer.
//  * Kept for someone away (keeping.js): offered with store, sealed to the key they last
//    published, accepted by the server, sent through the relay only, ended `stored`.
// Counterpart: src/roomdrop/client/outgoing.py

import { hashFile } from "./hashing.js";
import { keepingText, storedText } from "./keeping.js";
import {
  CHUNK_SIZE,
  DATA_CHANNEL_MAX_MESSAGE,
  canonicalUuid,
  formatBytes,
  indexesIn,
  newUuid,
  sanitizeFilename,
  totalChunks,
} from "./protocol.js";
import { sealedHow } from "./opening.js";
import { LinkDown } from "./rtc.js";
import { Sealing } from "./sealing.js";
import { NotConnected } from "./signalling.js";
import { LIVE, Role, Slots, newTransfer, now, pick, setProgress, syncProgress, waitWake, wake } from "./transfers.js";

const ICE_TIMEOUT = 5000;

function sendInternals(file, hashing, kept = false) {
  return { file, queue: new Set(), counted: null, countedBytes: 0, offered: false, accepted: false, hashing, decided: false, kept };
}

export class Outgoing extends Role {
  /**
   * @param {object} host the session (transfers.js, Host)
   * @param {import("./links.js").Links} links
   */
  constructor(host, links) {
    super(host);
    this.links = links;
    this.sealing = new Sealing(host);
    this.stashed = new Map(); // transfer id → chunk requests that came before it was known
    this.queues = new Map(); // receiver → the promise of the last file queued for them
    this.slots = new Slots(() => host.maxTransfers); // turns within the per-user limit
  }

  activated(t) {
    wake(t);
  }

  // --- offer or take up -----------------------------------------------------------------

  /** Files chosen by the person (picker.js), sent to `to` one after another; `kept`:
   * kept on the server for `to`, who is away (keeping.js). */
  enqueueFiles(files, to, { kept = false } = {}) {
    const { display } = this.host;
    if (!to) {
      display.note("choose a participant to send to first", "error");
      return;
    }
    if (to === this.host.user) {
      display.note("you cannot send files to yourself", "error");
      return;
    }
    for (const file of files) {
      const t = newTransfer(
        {
          transfer_id: newUuid(),
          direction: "send",
          peer: to,
          filename: sanitizeFilename(file.name),
          file_size: file.size,
          mime_type: file.type || "application/octet-stream",
          total_chunks: totalChunks(file.size, CHUNK_SIZE),
          status: "pending",
        },
        sendInternals(file, 0, kept),
      );
      this.host.transfers.set(t.transfer_id, t);
      display.render(t);
      const before = this.queues.get(to) || Promise.resolve();
      const next = before.then(() => this.sendFile(t)).catch((e) => {
        console.error(e);
        if (!t._.final) this.finish(t, "failed", String(e.message || e), "error");
      });
      this.queues.set(to, next);
    }
  }

  async sendFile(t) {
    const { display } = this.host;
    if (t._.final) return;
    t._.note = "computing sha256…";
    display.render(t);
    try {
      t.sha256 = await hashFile(t, (x) => display.render(x));
    } catch (e) {
      this.finish(t, "failed", `cannot read ${t.filename}: ${e.message || e}`, "storage-error");
      return;
    }
    t._.note = null;
    if (t._.final) return;
    await this.slots.take(); // several receivers at once: at most the server's limit
    try {
      await this.offerAndSend(t);
    } finally {
      this.slots.free();
    }
  }

  async offerAndSend(t) {
    const { display } = this.host;
    for (;;) {
      if (!t._.kept) {
        await this.host.waitFor(t.peer);
        if (t._.final) return;
        this.links.ensure(t.peer).catch(() => {});
      }
      const orphan = this.adoptable(t);
      if (orphan && (await this.sealing.takeUp(t, orphan))) {
        await this.takeUp(t, orphan);
      } else if (!(await this.offer(t))) {
        return;
      }
      const pump = this.pump(t);
      await t._.done;
      wake(t);
      await pump;
      if (!t._.reoffer) return;
      // the server restarted and lost it: the same file again, under a new id (§6.5)
      display.note(`the server lost ${t.filename}; offering it again`);
      const again = newTransfer(
        { ...pick(t, ["direction", "peer", "filename", "file_size", "mime_type", "total_chunks", "sha256"]), transfer_id: newUuid() },
        sendInternals(t._.file, 1, t._.kept),
      );
      this.host.transfers.set(again.transfer_id, again);
      display.render(again);
      t = again;
    }
  }

  /** Offer `t`, sealed to its receiver (false: it ended instead). */
  async offer(t) {
    let peer;
    try {
      peer = await this.sealing.receiver(t);
      if (t._.final) return false;
      t._.e2e = peer ? await this.sealing.seal(t, peer) : null;
    } catch (e) {
      if (!t._.final) this.finish(t, "failed", String(e.message || e), e.code || "e2e-failed");
      return false;
    }
    const payload = {
      transfer_id: t.transfer_id,
      receiver_id: t.peer,
      filename: t.filename,
      file_size: t.file_size,
      mime_type: t.mime_type,
      chunk_size: t.chunk_size,
      total_chunks: t.total_chunks,
      sha256: t.sha256,
      e2e: t._.e2e || undefined,
      store: t._.kept || undefined,
    };
    if (!this.host.trySend("file-share-offer", payload)) {
      this.finish(t, "failed", "not connected to the server", "server-unreachable");
      return false;
    }
    const how = sealedHow(t);
    this.host.display.note(t._.kept ? keepingText(t, how) : `offered ${t.filename} (${formatBytes(t.file_size)}) to ${t.peer}, ${how}; waiting for an answer`);
    return true;
  }

  /** Cancel pressed before the offer went (waiting for a new key to be trusted). */
  cancelUnsent(t) {
    if (t._.offered || !t._.keyChanged) return false;
    t._.abandonTrust?.();
    this.finish(t, "cancelled", "cancelled by you before it was offered");
    return true;
  }

  /** A live transfer of the same content to the same receiver that the server holds and
   * no transfer of this page is sending. */
  adoptable(t) {
    for (const o of this.host.serverTransfers.values()) {
      if (
        o.sender_id === this.host.user &&
        o.receiver_id === t.peer &&
        o.sha256 === t.sha256 &&
        o.file_size === t.file_size &&
        o.chunk_size === t.chunk_size &&
        Boolean(o.store) === t._.kept &&
        (o.status === "active" || o.status === "paused")
      ) {
        const mine = this.get(canonicalUuid(o.transfer_id));
        if (mine && !mine._.orphan) continue;
        if (mine && mine._.final) continue;
        return o;
      }
    }
    return null;
  }

  /** A transfer this sender left (the page was reloaded) is taken up under its id. */
  async takeUp(t, o) {
    const { transfers, display } = this.host;
    const tid = canonicalUuid(o.transfer_id);
    const old = transfers.get(tid);
    if (old) {
      display.forget(old);
      transfers.delete(tid);
    }
    transfers.delete(t.transfer_id);
    display.forget(t);
    t.transfer_id = tid;
    transfers.set(tid, t);
    t._.offered = true;
    t._.accepted = true;
    t._.counted = new Uint8Array(t.total_chunks);
    let status = o.status;
    try {
      status = (await this.host.api.transfer(this.host.room, tid)).status;
    } catch {}
    display.note(`taking up ${t.filename} again (${status})`);
    if (status === "paused") {
      t.status = "paused";
      this.host.trySend("file-share-resume", { transfer_id: tid });
    } else if (status === "active") {
      t.status = "active";
    } else {
      t._.reoffer = true;
      this.finish(t, "failed", "the server no longer holds it; offering it again", "unknown-transfer", { quiet: true });
      return;
    }
    for (const request of this.stashed.get(tid) || []) this.queueRequest(t, request);
    this.stashed.delete(tid);
    t._.started = now();
    display.render(t);
  }

  /** The server lost it (it restarted): sendFile offers the file again, under a new id. */
  reoffer(t) {
    t._.reoffer = true;
    this.finish(t, "failed", "the server lost it; offering it again", "unknown-transfer", { quiet: true });
  }

  /** A live transfer the server says this user sends, unknown here: shown, not sent. */
  showOrphan(o) {
    const tid = canonicalUuid(o.transfer_id);
    const t = newTransfer(
      {
        ...pick(o, ["filename", "file_size", "chunk_size", "total_chunks", "mime_type", "sha256", "status", "bytes_transferred", "chunks_sent", "progress_percent"]),
        transfer_id: tid,
        direction: "send",
        peer: o.receiver_id,
      },
      { orphan: true, queue: new Set() },
    );
    t._.note = "sent from an earlier visit: choose the same file again for this participant to go on";
    this.host.transfers.set(tid, t);
    this.host.display.render(t);
  }

  /** The server's echo of this page's own offer: it holds the transfer. */
  onOfferSeen(p) {
    const t = this.get(p.transfer_id);
    if (t && t.direction === "send") {
      t._.offered = true;
      this.host.display.render(t);
    }
  }

  /** error: the server refused a message (an offer, a relayed chunk, …). */
  onRefusal(p) {
    const t = p.transfer_id ? this.get(p.transfer_id) : null;
    // a kept file's offer is echoed before the store takes it: it may be refused until accepted
    const waiting = t && (!t._.offered || (t._.kept && !t._.accepted));
    if (t && t.direction === "send" && waiting && !t._.final) {
      t._.refused = true;
      t.refused = true;
      this.finish(t, "failed", `refused: ${p.message}`, p.code);
      return;
    }
    if (p.code === "transfer-not-active" || p.code === "relay-closed") {
      // relayed chunks caught by a pause: the receiver asks for them again after the resume
      console.debug("relay refused a chunk:", p.message);
      return;
    }
    const about = t ? `${t.filename}: ` : "";
    this.host.display.note(`${about}the server refused a message: ${p.code}: ${p.message}`, "error");
  }

  // --- the receiver's answers -----------------------------------------------------------

  async onAccept(p, from) {
    const t = this.get(p.transfer_id);
    if (!t) return;
    if (from === this.host.user || t._.final || t._.orphan) return;
    t.status = "active";
    t._.accepted = true;
    t._.offered = true;
    const total = t.total_chunks;
    let indexes;
    if (p.missing == null) {
      indexes = Array.from({ length: total }, (_, i) => i);
    } else {
      indexes = [...indexesIn(p.missing)].filter((i) => i < total);
    }
    syncProgress(t, indexes);
    t.resumed_bytes = t._.countedBytes;
    t._.resumedKnown = true;
    t._.queue = new Set(indexes);
    t._.started = now();
    t._.samples = [];
    if (t.resumed_bytes) {
      this.host.display.note(`${t._.kept ? "the server" : t.peer} already has ${formatBytes(t.resumed_bytes)} of ${t.filename}; sending the rest`);
    }
    wake(t);
    this.host.display.render(t);
    this.cancelSuperseded(t);
  }

  /** The older transfers of the same content to the same receiver end with this one. */
  cancelSuperseded(t) {
    const { serverTransfers } = this.host;
    for (const o of [...serverTransfers.values()]) {
      const tid = canonicalUuid(o.transfer_id);
      const mine = this.get(tid);
      if (
        tid !== t.transfer_id &&
        o.sender_id === this.host.user &&
        o.receiver_id === t.peer &&
        o.sha256 === t.sha256 &&
        LIVE.has(o.status) &&
        (!mine || mine._.orphan)
      ) {
        this.host.trySend("file-share-cancel", { transfer_id: tid, reason: `superseded by ${t.transfer_id}` });
        serverTransfers.delete(tid);
      }
    }
  }

  onReject(p) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    this.finish(t, "rejected", `${t.peer} rejected it${p.reason ? `: ${p.reason}` : ""}`);
  }

  onComplete(p, from) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    if (from === this.host.user) return;
    if (p.sha256 !== t.sha256) {
      console.warn("completion with another sha256 not taken", p);
      return;
    }
    setProgress(t, t.total_chunks, t.file_size);
    this.finish(t, "completed");
  }

  /** file-share-stored: every chunk of a file kept for someone away is in the server's
   * store (or, catching up, room-state says it is); from now on it is kept.js's. */
  stored(t) {
    if (!t || t.direction !== "send" || t._.final) return;
    t._.note = storedText(t);
    t._.room = this.host.room; // where it is withdrawn from, whichever room the page is in
    this.finish(t, "stored");
  }

  onChunkRequest(p) {
    const t = this.get(p.transfer_id);
    if (!t || t.direction !== "send" || t._.orphan) {
      if (!this.stashed.has(p.transfer_id)) this.stashed.set(p.transfer_id, []);
      this.stashed.get(p.transfer_id).push(p);
      return;
    }
    this.queueRequest(t, p);
  }

  queueRequest(t, request) {
    const indexes = [...indexesIn(request.ranges || [])].filter((i) => i < t.total_chunks);
    // the store asks again for chunks that came too far ahead: not its whole list
    if (request.reason !== "bad-checksum" && !(t._.kept && request.reason === "missing")) {
      // the receiver's whole list of what it lacks (the reference client's convention)
      syncProgress(t, indexes);
      if (!t._.resumedKnown) {
        // taken up after a reload: the receiver's first list says what it already held
        t._.resumedKnown = true;
        t.resumed_bytes = t._.countedBytes;
      }
    }
    for (const i of indexes) t._.queue.add(i);
    wake(t);
  }

  onProgress(p) {
    const t = this.get(p.transfer_id);
    if (t && !t._.final && t._.orphan) {
      setProgress(t, p.chunks_sent, p.bytes_transferred);
      this.host.display.render(t);
    }
    super.onProgress(p);
  }

  /** The data channel to `remote` went down: the pumps sending to them choose again. */
  onLinkDown(remote) {
    for (const t of this.host.transfers.values()) {
      if (t.peer !== remote || t._.final) continue;
      if (t.direction === "send") wake(t);
    }
  }

  // --- the pump: a sender's chunks on their way -----------------------------------------

  async pump(t) {
    let ahead = null; // the next chunks, read and sealed while the ones before them go out
    while (!t._.final) {
      if (!t._.accepted || !t._.queue.size || t.status !== "active" || !this.host.online()) {
        ahead = null;
        await waitWake(t);
        continue;
      }
      if (!t._.decided) {
        t.transport = await this.chooseTransport(t);
        t._.decided = true;
        this.host.display.render(t);
        continue; // the world may have changed while ICE was trying
      }
      const batch = await (ahead || this.sealing.readAhead(t, null));
      ahead = null;
      if (batch.error) {
        this.fail(t, "storage-error", `cannot read ${t.filename} (changed or gone?): ${batch.error.message || batch.error}`);
        return;
      }
      // the chunks after these are read and sealed while these are sent
      ahead = this.sealing.readAhead(t, batch.chunks[batch.chunks.length - 1].index);
      for (const chunk of batch.chunks) {
        if (t.status !== "active" || t._.final) break;
        if (!t._.queue.has(chunk.index)) continue; // no longer asked for
        if (!(await this.sendChunk(t, chunk))) {
          ahead = null; // the transport is chosen again, or the server is away: start over
          break;
        }
      }
    }
  }

  /** One sealed chunk on the transport chosen; false if it did not go (the link is
   * down: the transport is chosen again; the server is away). */
  async sendChunk(t, { index, length, sealed }) {
    const via = t.transport;
    try {
      if (via === "p2p") {
        const link = this.links.get(t.peer);
        if (!link) throw new LinkDown("no link");
        await link.send(this.sealing.encode(t, index, sealed, DATA_CHANNEL_MAX_MESSAGE));
      } else {
        await this.host.sendFrame(this.sealing.encode(t, index, sealed, null)[0]);
      }
    } catch (e) {
      if (e instanceof LinkDown) {
        this.host.display.note(`data channel to ${t.peer} lost`);
        t._.decided = false;
        return false;
      }
      if (e instanceof NotConnected) return false;
      throw e;
    }
    t._.queue.delete(index);
    t.bytes_via[via] += length;
    if (t._.counted && !t._.counted[index]) {
      t._.counted[index] = 1;
      t._.countedBytes += length;
      setProgress(t, t.chunks_sent + 1, t._.countedBytes);
    }
    return true;
  }

  async chooseTransport(t) {
    if (t._.kept) return "relay"; // into the server's store
    const started = performance.now();
    const link = await this.links.ensure(t.peer);
    if (await link.waitOpen(ICE_TIMEOUT)) return "p2p";
    // the time the attempt really took, as the CLI says it (outgoing.py)
    const took = ((performance.now() - started) / 1000).toFixed(1);
    this.host.display.note(`no peer-to-peer connection to ${t.peer} after ${took} s; sending through the relay`);
    return "relay";
  }

  fail(t, code, message) {
    this.host.trySend("file-share-error", { transfer_id: t.transfer_id, code, message });
    this.finish(t, "failed", message, code);
  }
}
