// The files this user keeps on the server for someone away once they are all in the store
// (status `stored`, docs/protocol.md §16), like `roomdrop kept`: each keeps its row, with
// Withdraw, until it is delivered, withdrawn, declined or expires.
//  * Listing. The page that kept a file keeps its row (outgoing.js ended it `stored`); a
//    page loaded afresh lists the ones its room-state names with this user as sender and
//    status `stored` (show, from catchup.js), so the sender can withdraw from anywhere.
//  * Withdrawing (withdraw) is cancelling the transfer, over REST (DELETE, with the CLI's
//    reason, "withdrawn by its sender") for the server's answer to this very request: it
//    deletes the object at once and the receiver, when they join, is offered nothing. A
//    file delivered or expired meanwhile is refused, and its row then says what became of
//    it (the server's record).
//  * Afterwards. Once stored, the transfer is final for the page (no pump, no clock) but
//    not for the server: what it says of it (the receiver's accept, reject or completion, a
//    cancel by either party or the server, an expiry) comes here (session.js owner routes
//    every transfer keptHere to this role), and so does room-state after a reconnect
//    (catchup.js align).
// Counterpart: src/roomdrop/client/kept.py

import { clockText, storedText } from "./keeping.js";
import { canonicalUuid, formatBytes } from "./protocol.js";
import { newTransfer, pick } from "./transfers.js";

export const WITHDRAWN = "withdrawn by its sender"; // kept.py's WITHDRAWN
const DISCARDED = "discarded by its receiver"; // kept.py's DISCARDED

/** A file this page keeps for someone away, all in the server's store: this role's. */
export function keptHere(t) {
  return Boolean(t) && t.direction === "send" && t.status === "stored";
}

const since = (o) => (o.stored_at && !Number.isNaN(Date.parse(o.stored_at)) ? `, since ${clockText(Date.parse(o.stored_at))}` : "");

export class Kept {
  /** @param {object} host the session (transfers.js, Host) */
  constructor(host) {
    this.host = host;
  }

  get(tid) {
    const t = this.host.transfers.get(tid);
    return keptHere(t) ? t : null;
  }

  /** A room-state transfer this user keeps for someone, unknown here (a reload, another
   * tab or the CLI kept it): its row, with Withdraw. */
  show(o) {
    const tid = canonicalUuid(o.transfer_id);
    const t = newTransfer(
      {
        ...pick(o, ["filename", "file_size", "chunk_size", "total_chunks", "mime_type", "sha256"]),
        transfer_id: tid,
        direction: "send",
        peer: o.receiver_id,
        status: "stored",
        transport: "relay",
        bytes_transferred: o.file_size,
        chunks_sent: o.total_chunks,
        progress_percent: 100,
      },
      { final: true, kept: true, queue: new Set(), room: o.room_id || this.host.room },
    );
    t._.doneResolve("stored");
    t._.note = `${storedText(t)}${since(o)}`;
    this.host.transfers.set(tid, t);
    this.host.display.note(`you keep ${t.filename} (${formatBytes(t.file_size)}) for ${t.peer} on the server${since(o)}; Withdraw takes it back`);
    this.host.display.render(t);
  }

  /** Withdraw pressed (display.js): the server deletes it, or says why it cannot. */
  async withdraw(t) {
    if (!keptHere(t) || t._.withdrawing) return;
    const { api, display } = this.host;
    const room = t._.room || this.host.room;
    t._.withdrawing = true;
    display.render(t);
    let record;
    try {
      record = await api.cancel(room, t.transfer_id, WITHDRAWN);
    } catch (e) {
      t._.withdrawing = false;
      display.note(`${t.filename}: cannot withdraw it: ${e.code ? `${e.code}: ` : ""}${e.message || e}`, "error");
      // delivered, declined or expired meanwhile: its record says which
      record = await api.transfer(room, t.transfer_id).catch(() => null);
      if (record) this.align(t, record);
      display.render(t);
      return;
    }
    this.align(t, record);
  }

  /** What the server's record `o` (room-state's, or a REST answer) says became of `t`;
   * none: it no longer lists it. */
  align(t, o) {
    if (!keptHere(t)) return;
    if (!o) {
      this.end(t, "failed", null, "the server no longer lists it", "unknown-transfer");
    } else if (o.status === "active" || o.status === "paused") {
      this.delivering(t);
    } else if (o.status === "completed") {
      delivered(t, { sha256: t.sha256 }, this.host.display);
    } else if (o.status === "cancelled") {
      this.cancelled(t, o.error === WITHDRAWN ? "you" : o.error === DISCARDED ? t.peer : null, o.error);
    } else if (o.status === "rejected") {
      this.end(t, "rejected", `${t.peer} declined it; the server deleted it`);
    } else if (o.status === "failed") {
      this.end(t, "failed", null, o.error || "failed on the server", o.error_code);
    }
  }

  /** Its receiver takes it from the store (the delivery's pauses are theirs). */
  delivering(t) {
    const note = `${t.peer} is taking it from the server's store`;
    if (t._.note === note) return;
    t._.note = note;
    this.host.display.render(t);
  }

  cancelled(t, by, reason) {
    if (by === "you") {
      this.end(t, "cancelled", `withdrawn: the server deleted it; ${t.peer} will not be offered it`);
    } else if (by === t.peer) {
      this.end(t, "cancelled", `${t.peer} discarded it; the server deleted it`);
    } else {
      this.end(t, "cancelled", null, `cancelled by the server${reason ? `: ${reason}` : ""}`, "cancelled");
    }
  }

  /** It ended on the server: the row says how (it was final here already). */
  end(t, status, note, error = null, code = null) {
    t.status = status;
    t.error = error;
    t.error_code = code;
    t._.note = note;
    t._.withdrawing = false;
    this.host.display.note(`${t.filename}: ${note || error}`, error ? "error" : "info");
    this.host.display.render(t);
  }

  // --- what the server says of it (session.js owner) ------------------------------------

  onAccept(p, from) {
    const t = this.get(p.transfer_id);
    if (t && from === t.peer) this.delivering(t);
  }

  onComplete(p, from) {
    const t = this.get(p.transfer_id);
    if (t && from !== this.host.user) delivered(t, p, this.host.display);
  }

  onReject(p) {
    const t = this.get(p.transfer_id);
    if (t) this.align(t, { status: "rejected" });
  }

  /** Withdrawn (by this page: the echo of its DELETE; by another of this user's clients,
   * `roomdrop kept --withdraw`), discarded by its receiver, or cancelled by the server. */
  onCancel(p, from) {
    const t = this.get(p.transfer_id);
    if (t) this.cancelled(t, from === this.host.user ? "you" : from, p.reason);
  }

  onFileShareError(p) {
    const t = this.get(p.transfer_id);
    if (t) this.end(t, "failed", null, p.message, p.code);
  }

  onPause() {}

  onResume() {}

  onProgress() {}
}

/** A file this page kept for someone reached them (file-share-complete while this page is
 * here, or room-state says so): its row says so. */
export function delivered(t, p, display) {
  if (p.sha256 !== t.sha256) return;
  t.status = "completed";
  t._.note = `delivered to ${t.peer} from the server's store`;
  t._.withdrawing = false;
  display.note(`${t.filename}: delivered to ${t.peer} from the server's store, sha256 verified`);
  display.render(t);
}
