// Files kept on the server for someone who is not in the room (stored delivery,
// docs/protocol.md §16; the CLI's `roomdrop send --store`): the page's side of it.
//  * Who has been here (Roster): room-state's `seen` (whoever was in the room within
//    ROOMDROP_STORE_TTL, those here now among them, and when they were last here), kept
//    current on user-joined and user-left (one who leaves is away, last seen now). The
//    participant list (display.js) shows those away beside those here.
//  * Sending. On someone away who published a device key, "Keep a file for NAME…" (the
//    sender's explicit choice, never a default) offers the file with `store: true`
//    (outgoing.js enqueueFiles with kept), sealed to the key they last published in the
//    room (keyring.js forReceiver with kept). The server accepts on the store's behalf
//    (a file-share-accept from nobody), the chunks go through the relay only (no data
//    channel: the other end is the server's store), and file-share-stored ends the
//    transfer as `stored`: a success (storedText). From then on its row is kept.js's (with
//    Withdraw; delivered, declined, expired). A refusal (unknown-receiver,
//    store-quota-exceeded, store-unavailable, …) fails it with the server's message.
//  * Receiving. On joining, what is kept for this user is listed (keptText, from
//    room-state: transfers `stored` for this user, once each); the server then offers
//    each one (store: true, from its sender, who may be away) and the page answers it
//    as any offer (incoming.js), its sender's key checked against the one they last
//    published when they are away (keyring.js forOffer with offer.store).
// Counterpart: src/roomdrop/client/outgoing.py (store), client/keyring.py (seen),
// client/catchup.py (stored)

import { formatBytes } from "./protocol.js";

const pad = (n) => String(n).padStart(2, "0");

/** "14:02" today, "3 Nov 14:02" another day (the browser's local time). */
export function clockText(at, now = Date.now()) {
  const d = new Date(at);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (d.toDateString() === new Date(now).toDateString()) return hm;
  return `${d.toLocaleDateString(undefined, { day: "numeric", month: "short" })} ${hm}`;
}

/** What the page says as a file kept for someone away is offered, and once it is in. */
export function keepingText(t, how) {
  return `keeping ${t.filename} (${formatBytes(t.file_size)}) for ${t.peer} on the server, ${how}, until they join`;
}

export function storedText(t) {
  return `kept on the server for ${t.peer} until they join`;
}

/** Who has been in the room lately, and the files kept for this user it was told of. */
export class Roster {
  constructor() {
    this.lastSeen = new Map(); // user → when they were last in the room (ms since the epoch)
    this.listed = new Set(); // the kept files already listed (transfer ids)
  }

  /** room-state: its `seen` is the truth (a server without stored delivery sends none). */
  onRoomState(p, me) {
    this.lastSeen = new Map();
    for (const [user, s] of Object.entries(p.seen || {})) {
      if (user === me || !s) continue;
      const at = Date.parse(s.last_seen);
      this.lastSeen.set(user, Number.isNaN(at) ? Date.now() : at);
    }
  }

  /** user-joined or user-left: they were here just now. */
  saw(user) {
    this.lastSeen.set(user, Date.now());
  }

  /** Those seen lately who are not in the room now, sorted. */
  away(participants, me) {
    return [...this.lastSeen.keys()].filter((u) => u !== me && !participants.has(u)).sort();
  }

  lastSeenText(user) {
    const at = this.lastSeen.get(user);
    return at == null ? "away" : `away · last seen ${clockText(at)}`;
  }

  /** "kept for you: NAME (SIZE) from alice …" for a room-state transfer kept for this
   * user, null if it is not one or was listed already. */
  keptText(o, me) {
    if (o.receiver_id !== me || o.status !== "stored" || this.listed.has(o.transfer_id)) return null;
    this.listed.add(o.transfer_id);
    const since = o.stored_at && !Number.isNaN(Date.parse(o.stored_at)) ? `, since ${clockText(Date.parse(o.stored_at))}` : "";
    return `kept for you: ${o.filename} (${formatBytes(o.file_size)}) from ${o.sender_id}${since}; it is offered to you now`;
  }
}
