// Catching up from room-state: what the server holds is the truth. The server sends
// room-state at every (re)connection, and again on the same connection when it may have
// lost messages meant for this page (its Redis subscription broke: docs/protocol.md
// §11.11, §13.4). Either way this page aligns with it:
//
//   the server says            the sender (catchUpOutgoing)
//   nothing (it restarted)     offers the file again if the offer had reached it (an
//                              offer still on its way is waited for); an orphan ends
//   cancelled/failed/rejected  ends it the same way
//   completed                  ends it as completed (the receiver verified it meanwhile)
//   stored                     ends it as stored (kept for someone away: all in the
//                              server's store, keeping.js)
//   (a stored one, final here) delivering, delivered, withdrawn, declined or expired:
//                              its row says so (kept.js align)
//   active/paused              takes a missed accept (all chunks queued), then pauses or
//                              resumes to match
//
//   the server says            the receiver (catchUpIncoming)
//   nothing (it restarted)     ends it (unknown-transfer), keeping the part file
//   cancelled/failed/rejected  ends it, keeping the verified chunks
//   completed here, not sent   announces the completion it could not send (its socket was
//                              down) if active, on the resume if paused (a disconnect's
//                              pause resumes by itself, §11.8): the only final transfer
//                              caught up
//   active/paused              pauses or resumes to match and, active, asks for every
//                              chunk it lacks
//   pending, not known here    considers the offer it missed
//   stored, for this page      lists it once ("kept for you: …"); the server offers it
//                              right after (an offer shown waits, as pending)
//   active/paused, not known   takes it up from its part file (this page was reloaded)
//   a live one it sends, not   shows it (an orphan of an earlier visit)
//   known here
//   a stored one it sends, not lists it, with Withdraw (kept.js show: kept from a
//   known here                 page since reloaded, another tab, or the CLI)
//
// Each side goes through its role's public methods only. The transfers are visited in
// the order the page knows them, both directions in one pass (the reference client
// does one role after the other).
// Counterpart: src/roomdrop/client/catchup.py

import { canonicalUuid } from "./protocol.js";
import { offerOf } from "./incoming.js";
import { keptHere } from "./kept.js";
import { LIVE, wake } from "./transfers.js";

const ENDED = ["cancelled", "failed", "rejected"];

/** The transfers a room-state lists, by (canonical) id. */
export function transfersOf(state) {
  const known = new Map();
  for (const raw of state.transfers || []) {
    if (raw && raw.transfer_id) known.set(canonicalUuid(raw.transfer_id), raw);
  }
  return known;
}

/**
 * @param {object} page {user, room, transfers (Map), outgoing, incoming, kept (kept.js), roster
 *   (keeping.js), display}
 * @param {Map} known the room-state's transfers (transfersOf)
 */
export async function catchUp({ user, room, transfers, outgoing, incoming, kept, roster, display }, known) {
  for (const t of [...transfers.values()]) {
    const held = known.get(t.transfer_id);
    if (keptHere(t)) {
      if (t._.room === room) kept.align(t, held); // final here, not on the server
      continue;
    }
    if (t._.final) {
      if (incoming.unannounced(t) && held?.status === "active") incoming.announceComplete(t);
      continue;
    }
    if (t.direction === "send") await catchUpOutgoing(outgoing, t, held);
    else catchUpIncoming(incoming, t, held);
  }
  for (const o of known.values()) {
    const listed = roster.keptText(o, user); // the server offers each of them now
    if (listed) display.note(listed);
  }
  for (const o of known.values()) {
    if (transfers.has(o.transfer_id) || !o.sha256) continue;
    if (o.receiver_id === user && (o.status === "active" || o.status === "paused")) {
      incoming.takeUp(o).catch((e) => console.error("take up", e));
    } else if (o.receiver_id === user && o.status === "pending") {
      incoming.consider(offerOf(o), o.sender_id);
    } else if (o.sender_id === user && LIVE.has(o.status)) {
      outgoing.showOrphan(o);
    } else if (o.sender_id === user && o.status === "stored") {
      kept.show(o);
    }
  }
}

async function catchUpOutgoing(outgoing, t, held) {
  if (t._.orphan) {
    if (!held) outgoing.forget(t);
    return;
  }
  if (!held) {
    if (t._.offered || t._.accepted) outgoing.reoffer(t);
  } else if (ENDED.includes(held.status)) {
    outgoing.finish(t, held.status, held.error, held.error_code);
  } else if (held.status === "completed") {
    outgoing.finish(t, "completed");
  } else if (held.status === "stored") {
    outgoing.stored(t); // all in the server's store while this page was away
  } else if ((held.status === "active" || held.status === "paused") && !t._.accepted) {
    // accepted while this page was away (or the accept was lost): which chunks the
    // receiver lacks is not known here, so all are queued (it drops those it holds)
    await outgoing.onAccept({ transfer_id: t.transfer_id, missing: null }, held.receiver_id);
    outgoing.align(t, held.status);
  } else {
    outgoing.align(t, held.status);
  }
  wake(t);
}

function catchUpIncoming(incoming, t, held) {
  if (!held) {
    incoming.forget(t);
  } else if (ENDED.includes(held.status)) {
    // it ended while this page was away (or the message saying so was lost)
    incoming.end(t, held.status, held.error, held.error_code);
  } else {
    incoming.align(t, held.status);
  }
}
