// The receiving end's part of end-to-end encryption (docs/protocol.md §14): an offer is
// checked before it is shown (sealed to this device's key, by the key its sender
// published, and that key trusted: keyring.js forOffer), its content key opened at
// accept (or at take-up after a reload) and handed to the part store's worker with the
// MIME check of chunk 0 (opfs-worker.js decrypts and checks there).
//  * not sealed to this device, or by another key than the sender's published one, or
//    not opening: the transfer fails with e2e-failed (the sender is told);
//  * a known sender with a new key: the offer is shown with a warning, and Accept waits
//    until the person trusts the new key (or rejects the offer).
// incoming.js uses it. Counterpart: the opening parts of src/roomdrop/client/incoming.py

import { E2EError, importContentKey, openOffer } from "./e2e.js";
import { E2ERequired, KeyChanged } from "./keyring.js";
import { bound } from "./sealing.js";

/** How a transfer travels, for the message log. */
export function sealedHow(t) {
  if (t.e2e) return `end-to-end encrypted, safety number ${t.safety_number}`;
  return "NOT end-to-end encrypted (the server allows it, and can read it)";
}

export class Opening {
  /** @param {object} host the session (transfers.js, Host): keyring, display */
  constructor(host) {
    this.host = host;
  }

  /** Check the offer `p` from `from` for transfer `t`: true if it may be shown (a
   * changed key too: t._.keyChanged says so, and onTrusted() is called once the
   * person trusts it); false if it failed (`fail(code, message)` was called). */
  async check(t, p, from, fail, onTrusted, { takingUp = false } = {}) {
    const { keyring } = this.host;
    t._.e2e = p.e2e || null;
    try {
      const peer = await keyring.forOffer(p, from, { takingUp });
      t._.keyChanged = null;
      this.mark(t, peer);
      return true;
    } catch (e) {
      if (e instanceof KeyChanged && !takingUp) {
        t._.keyChanged = { user: e.user, key: e.key, message: e.message };
        t.e2e = true;
        t.safety_number = await keyring.safetyNumber(e.user, e.key);
        this.host.display.note(`${t.filename} from ${from}: ${e.message}`, "error");
        const wait = keyring.untilTrusted(e.user, e.key);
        t._.abandonTrust = wait.abandon;
        wait.promise.then((trusted) => {
          t._.abandonTrust = null;
          if (!trusted || t._.final) return;
          t._.keyChanged = null;
          onTrusted();
        });
        return true;
      }
      if (e instanceof E2EError || e instanceof E2ERequired || e instanceof KeyChanged) {
        fail(e.code, e.message);
        return false;
      }
      throw e;
    }
  }

  mark(t, peer) {
    t.e2e = Boolean(peer);
    t.safety_number = peer ? peer.number : null;
  }

  /** The answer to the offer went (accepted or rejected): nothing waits for a key. */
  settled(t) {
    t._.abandonTrust?.();
  }

  /** The transfer's content key for the worker ({key: a non-extractable CryptoKey,
   * tid}), null in the clear. Throws E2EError (it does not open for this offer). */
  async contentKey(t) {
    if (!t._.e2e) return null;
    const { keyring } = this.host;
    const raw = await openOffer(bound(t, t.peer, this.host.user), t._.e2e, keyring.device);
    const key = await importContentKey(raw);
    raw.fill(0);
    return { key, tid: t.transfer_id };
  }

  /** The MIME check of chunk 0: the declared type and the server's lists. */
  mime(t) {
    const { allow, deny } = this.host.keyring.mime;
    return { declared: t.mime_type, allow, deny };
  }
}
