// What the page's roles share: one transfer's bookkeeping, ending it once, its speed,
// and Role, the base of Outgoing (outgoing.js) and Incoming (incoming.js) with what
// either party may do to a transfer (pause, resume, cancel, an error, progress).
// Counterpart: src/roomdrop/client/transfers.py
//
// A transfer is one object in window.roomdrop.transfers: its enumerable fields are
// public (newTransfer lists them); the rest hides in its non-enumerable `_`:
//   shared by every role: final, wakers, samples, done, doneResolve, started, note (the
//     line shown under it), serverSpeed;
//   the sender's (outgoing.js): file, queue, counted, countedBytes, offered, accepted,
//     decided, reoffer, resumedKnown, refused, orphan (sent from an earlier visit: shown,
//     not sent), hashing (0…1, the offer's sha256 being computed), kept (kept on the
//     server for a receiver who is away: keeping.js); kept.js's (once `stored`): room
//     (the room it is kept in), withdrawing (its Withdraw under way); sealing.js's: e2e
//     (the offer's e2e part), cipher (its chunks' ChunkCipher), keyChanged ({user, key,
//     message}: waiting for the person to trust the receiver's new key), abandonTrust;
//   the receiver's (incoming.js): part, held, heldCount, heldBytes, writing, lastChunk,
//     lastRequest, lastReport, completedSent, accepting, verifying, url (the saved file),
//     kept (the offer's store: kept for this user on the server);
//     opening.js's: e2e (the offer's e2e part), keyChanged (the sender's new key, not
//     trusted yet: accepting waits), checking (the offer's keys being checked).
// display.js reads final, note, hashing, orphan, url, keyChanged, kept and withdrawing,
// and writes none.
//
// Host: what a role may ask of its session (session.js is the only implementation):
//   user, room                 this page's user id and room
//   transfers                  Map id → transfer, both directions (window.roomdrop.transfers)
//   serverTransfers            Map id → the transfers of the latest room-state
//   requireScan                room-state.require_scan: only receivers that scan for malware
//                              (this page cannot: incoming.js accepts nothing)
//   display                    display.js: note(text, kind), render(t), showOffer(t, accept,
//                              reject, cannot), removeOffer(t), forget(t)
//   api                        http.js: the REST calls
//   send(type, payload)        a control message (throws NotConnected, signalling.js)
//   trySend(type, payload)     the same; false when not connected
//   sendFrame(frame)           a chunk frame through the relay (async; throws NotConnected)
//   online()                   connected to the server and in the room
//   waitFor(user)              until user is in the room (async)
//   maxTransfers               room-state.max_transfers_per_user: how many transfers this
//                              user may have under way (null: no figure from the server)
//   keyring                    keyring.js: the device key, the published, seen and trusted keys
//   roster                     keeping.js: who has been in the room lately, the kept files listed

import { CHUNK_SIZE, chunkLength } from "./protocol.js";

export const LIVE = new Set(["pending", "active", "paused"]);
export const FINAL = new Set(["completed", "failed", "cancelled", "rejected"]);
// a sender's transfer also ends `stored`: all of a file kept for someone away is in the
// server's store (keeping.js), a success; for the server it waits for its receiver

export const now = () => performance.now();

/** At most `limit()` holders at once (null or 0: no limit): the sender's turns within
 * the server's per-user limit, so that sending to many receivers at once offers no more
 * than the server takes (the rest wait for a place instead of being refused). */
export class Slots {
  constructor(limit) {
    this.limit = limit;
    this.busy = 0;
    this.waiting = [];
  }

  async take() {
    while (this.limit() && this.busy >= this.limit()) {
      await new Promise((r) => this.waiting.push(r));
    }
    this.busy++;
  }

  free() {
    this.busy--;
    const next = this.waiting.shift();
    if (next) next();
  }
}

/** Public fields are enumerable (window.roomdrop.transfers); the rest hides in `_`. */
export function newTransfer(fields, internals) {
  const t = {
    transfer_id: null,
    direction: null,
    peer: null,
    filename: "",
    file_size: 0,
    chunk_size: CHUNK_SIZE,
    total_chunks: 0,
    mime_type: "application/octet-stream",
    sha256: null,
    status: "pending",
    transport: null,
    bytes_via: { p2p: 0, relay: 0 },
    resumed_bytes: 0,
    bytes_transferred: 0,
    chunks_sent: 0,
    progress_percent: 0,
    speed_bps: 0,
    eta_seconds: null,
    error: null,
    error_code: null,
    saved_name: null,
    e2e: false, // end-to-end encrypted (the CLI's --json result says the same)
    safety_number: null, // of this page's device key and the peer's, when e2e
    ...fields,
  };
  Object.defineProperty(t, "_", {
    value: {
      final: false,
      wakers: [],
      samples: [],
      doneResolve: null,
      done: null,
      ...internals,
    },
    enumerable: false,
  });
  t._.done = new Promise((resolve) => (t._.doneResolve = resolve));
  return t;
}

/** Whoever waits on `t` (its pump) looks again. */
export function wake(t) {
  const w = t._.wakers;
  t._.wakers = [];
  w.forEach((f) => f());
}

export function waitWake(t, ms = 1000) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    t._.wakers.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export function carriedBy(t) {
  const { p2p, relay } = t.bytes_via;
  if (p2p === 0 && relay === 0) return t.transport;
  return p2p >= relay ? "p2p" : "relay";
}

export function isLive(t) {
  return !t._.final && LIVE.has(t.status);
}

export function setProgress(t, chunks, bytes) {
  t.chunks_sent = chunks;
  t.bytes_transferred = bytes;
  t.progress_percent = t.file_size ? Math.round((10000 * bytes) / t.file_size) / 100 : t.status === "completed" ? 100 : 0;
}

/** A sender's count of the chunks its receiver holds: every chunk not in `missing`
 * (§6.6 sync_progress). */
export function syncProgress(t, missing) {
  const counted = new Uint8Array(t.total_chunks).fill(1);
  for (const i of missing) counted[i] = 0;
  let bytes = 0;
  let count = 0;
  for (let i = 0; i < t.total_chunks; i++) {
    if (counted[i]) {
      bytes += chunkLength(i, t.file_size, t.chunk_size);
      count++;
    }
  }
  t._.counted = counted;
  t._.countedBytes = bytes;
  setProgress(t, count, bytes);
}

/** Speed and ETA over the last 5 s (the clock calls it for every active transfer). The
 * window starts where the bytes started moving: the wait before the first chunk (the
 * data channel being tried, for one) does not count, nor does the idle end of a stall,
 * so the first speed shown, half a second in, is the real one (0 until then: display.js
 * shows a placeholder). */
export function measure(t, at) {
  const s = t._.samples;
  s.push([at, t.bytes_transferred]);
  while (s.length > 2 && (at - s[0][0] > 5000 || s[1][1] === s[0][1])) s.shift();
  const [t0, b0] = s[0];
  const dt = (at - t0) / 1000;
  t.speed_bps = dt > 0.5 ? Math.max(0, (t.bytes_transferred - b0) / dt) : 0;
  t.eta_seconds = t.speed_bps > 0 ? (t.file_size - t.bytes_transferred) / t.speed_bps : null;
}

export function pick(obj, keys) {
  return Object.fromEntries(keys.map((k) => [k, obj[k]]));
}

/** One direction of the page: its transfers (in host.transfers) and what either party
 * may do to one. */
export class Role {
  /** @param {object} host the session (see Host above) */
  constructor(host) {
    this.host = host;
  }

  get(tid) {
    return this.host.transfers.get(tid);
  }

  /** Bring a transfer to a final status (once), like transfers.py's Role.resolve. */
  finish(t, status, error = null, code = null, { quiet = false } = {}) {
    if (t._.final) return;
    t._.final = true;
    t.status = status;
    t.error = error;
    t.error_code = code;
    if (status === "completed" || status === "stored") {
      t.progress_percent = 100;
      t.bytes_transferred = t.file_size;
      t.chunks_sent = t.total_chunks;
    }
    t.speed_bps = 0;
    t.eta_seconds = null;
    this.ended(t, status);
    const display = this.host.display;
    display.removeOffer(t);
    wake(t);
    t._.doneResolve(status);
    if (!quiet) {
      if (status === "completed") {
        const how = t.direction === "send" ? `sent to ${t.peer}` : `received from ${t.peer}`;
        display.note(`${t.filename}: ${how} (${carriedBy(t)}), sha256 verified`);
      } else if (status === "stored") {
        display.note(`${t.filename}: ${t._.note || "kept on the server"} (end-to-end encrypted; delivered, then deleted)`);
      } else {
        display.note(`${t.filename}: ${status}${code ? ` (${code})` : ""}${error ? `: ${error}` : ""}`, "error");
      }
    }
    display.render(t);
  }

  /** The server no longer knows it (room-state): it ends without a word. */
  forget(t) {
    this.finish(t, "failed", "the server no longer knows it", "unknown-transfer", { quiet: true });
  }

  /** What a role does with its own state when one of its transfers ends (finish). */
  ended(t, status) {}

  /** What a role does when one of its transfers is active again (setActive). */
  activated(t) {}

  /** A pause or resume this page missed (§13.4): brought to the server's status. */
  align(t, server) {
    if (server === "paused" && t.status === "active") this.setPaused(t);
    else if (server === "active" && t.status === "paused") this.setActive(t);
  }

  setPaused(t) {
    t.status = "paused";
    t._.samples = [];
    wake(t);
    this.host.display.render(t);
  }

  /** Active again: a receiver asks for what it lacks, a sender's pump goes on. */
  setActive(t) {
    t.status = "active";
    t._.samples = [];
    this.activated(t);
    this.host.display.render(t);
  }

  who(from) {
    return from == null ? "the server" : from === this.host.user ? "you" : from;
  }

  // --- what either party may do to a transfer ------------------------------------------

  onPause(p, from) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    if (t.status !== "active") return;
    this.host.display.note(`${t.filename}: paused by ${this.who(from)}${p.reason ? ` (${p.reason})` : ""}`);
    this.setPaused(t);
  }

  onResume(p, from) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    if (t.status !== "paused" && t.status !== "active") return;
    this.host.display.note(`${t.filename}: resumed by ${this.who(from)}${p.reason ? ` (${p.reason})` : ""}`);
    this.setActive(t);
  }

  async onCancel(p, from) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    const reason = p.reason || "cancelled";
    this.finish(t, "cancelled", `cancelled by ${this.who(from)}: ${reason}`, from == null ? "cancelled" : null);
  }

  onFileShareError(p) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    this.finish(t, "failed", p.message, p.code);
  }

  onProgress(p) {
    const t = this.get(p.transfer_id);
    if (!t || t._.final) return;
    t._.serverSpeed = p.speed_bps;
  }
}
