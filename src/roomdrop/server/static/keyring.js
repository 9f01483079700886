// The session's side of end-to-end encryption (docs/protocol.md §14): this page's device
// key (keys.js), the keys the room's participants published, whether the server
// requires encryption, its MIME lists, the keys trusted on first use, and the checks a
// sender and a receiver make before a transfer starts.
//  * Sending (forReceiver): the receiver's published key, trusted on first use, is the
//    one the content key is sealed to. A receiver that published none gets the file in
//    the clear if the server allows it, else E2ERequired. A file kept for someone away
//    (kept: keeping.js) is sealed to the key they last published in the room (`seen`),
//    and cannot be kept for someone the server has not seen with one (UnknownReceiver).
//  * Receiving (forOffer): an offer is opened only if it is sealed to this device's key,
//    by the key its sender published, and that key is trusted; else E2EError
//    (e2e-failed), E2ERequired or KeyChanged. A file kept for this user (offer.store)
//    may come from a sender who has left: then the key they last published (`seen`).
//  * A known user with a new key (KeyChanged): the page warns (on the participant, on
//    the offer, on the transfer waiting to be sent) and the person may trust the new
//    key (trust), which updates the store and lets what waited for it go on.
// The safety number of each pair is computed once and kept.
// Counterpart: src/roomdrop/client/keyring.py

import { E2EError, decodeKey, safetyNumber } from "./e2e.js";
import { TrustStore, deviceKey, serverId } from "./keys.js";

export class E2ERequired extends Error {
  constructor(message) {
    super(message);
    this.code = "e2e-required";
  }
}

export class KeyChanged extends Error {
  constructor(user, key, message) {
    super(message);
    this.code = "key-changed";
    this.user = user;
    this.key = key;
  }
}

export class UnknownReceiver extends Error {
  constructor(message) {
    super(message);
    this.code = "unknown-receiver";
  }
}

export class Keyring {
  /** @param {function} onChange what the keys shown changed (participants re-rendered) */
  constructor(onChange = () => {}) {
    this.onChange = onChange;
    this.user = null;
    this.device = null; // {pair, public, publicText} once loaded (init)
    this.store = new TrustStore();
    this.published = new Map(); // participant → the key the server published for them
    // whoever has been in the room lately (room-state.seen, those here among them) → the
    // key they last published there: a file is kept for them under it, and a kept
    // file's sender is checked against it
    this.seen = new Map();
    this.requireE2e = null;
    this.mime = { allow: [], deny: [] };
    this.peers = new Map(); // participant → {key, seen: known|first|changed, number}
    this.numbers = new Map(); // `${user} ${key}` → its safety number (a promise)
    this.waiters = []; // [{user, key, resolve}] waiting for the person to trust a key
  }

  /** The device key, loaded (or made) before the page joins: it goes in the URL. A
   * browser that cannot keep one (no X25519 in WebCrypto, no IndexedDB) joins without:
   * it can then only send and receive in the clear, where the server allows that. */
  async init(user) {
    if (user !== this.user) this.numbers.clear();
    this.user = user;
    try {
      this.device = await deviceKey();
    } catch (e) {
      console.error("no device key: end-to-end encryption is not possible in this browser", e);
      this.device = null;
    }
    return this.device;
  }

  // --- what the server says ------------------------------------------------------------

  onRoomState(p) {
    const keys = p.keys || {};
    this.published = new Map(Object.entries(keys).filter(([u]) => u !== this.user));
    const seen = Object.entries(p.seen || {}).filter(([u, s]) => u !== this.user && s && s.key);
    this.seen = new Map([...seen.map(([u, s]) => [u, s.key]), ...this.published]);
    this.requireE2e = typeof p.require_e2e === "boolean" ? p.require_e2e : null;
    if (p.mime) this.mime = { allow: [...(p.mime.allow || [])], deny: [...(p.mime.deny || [])] };
    for (const user of [...this.peers.keys()]) if (!this.published.has(user)) this.peers.delete(user);
    for (const [user, key] of this.published) this.look(user, key);
    this.onChange();
  }

  onJoined(user, key) {
    if (user === this.user) return;
    if (key == null) {
      this.published.delete(user);
      this.seen.delete(user);
      this.peers.delete(user);
    } else {
      this.published.set(user, key);
      this.seen.set(user, key);
      this.look(user, key);
    }
    this.onChange();
  }

  /** `user` left: their key stays in `seen` (a file may be kept for them under it). */
  onLeft(user) {
    this.published.delete(user);
    this.peers.delete(user);
  }

  /** What the participant list shows of `user`: {key, seen, number} or undefined. */
  peer(user) {
    return this.peers.get(user);
  }

  /** A published key, checked against the trusted ones (for the participant list). */
  async look(user, key) {
    try {
      const peer = await this.checked(user, key);
      if (this.published.get(user) === key) this.peers.set(user, peer);
    } catch (e) {
      console.warn(`the key of ${user}:`, e);
    }
    this.onChange();
  }

  // --- the checks ----------------------------------------------------------------------

  /** The receiver to seal a transfer to ({user, key, number}), null to send in the
   * clear. Throws E2ERequired, or KeyChanged (trust() and then ask again). `kept`: a
   * file kept for later, for someone who may have left (the key they last had); throws
   * UnknownReceiver if there is none. */
  async forReceiver(receiver, { kept = false } = {}) {
    let key = this.device ? this.published.get(receiver) : null;
    if (key == null && kept) key = this.device ? this.seen.get(receiver) : null;
    if (key == null && kept) {
      throw new UnknownReceiver(
        this.device
          ? `${receiver} has not been in this room with a device key lately: a file can be kept only for someone the server has seen (their key seals it)`
          : "this browser has no device key: a file can be kept only end-to-end encrypted",
      );
    }
    if (key == null) {
      if (this.requireE2e) {
        throw new E2ERequired(
          `${receiver} published no device key (a client without end-to-end encryption?), ` +
            "and this server carries only end-to-end encrypted transfers",
        );
      }
      return null;
    }
    return this.trusted(receiver, key);
  }

  /** The sender of an offer addressed to this page ({user, key, number}), null for an
   * offer in the clear. Throws E2EError, E2ERequired or KeyChanged. `takingUp`: a
   * transfer this page takes up after a reload, whose sender may have left the room
   * (then its key must be trusted here, published or not). */
  async forOffer(offer, sender, { takingUp = false } = {}) {
    const e2e = offer.e2e;
    if (!e2e) {
      if (this.requireE2e) {
        throw new E2ERequired("the offer is not end-to-end encrypted, and this server carries only end-to-end encrypted transfers");
      }
      return null;
    }
    if (!this.device) throw new E2EError("this browser has no device key to open the offer with");
    if (e2e.receiver_key !== this.device.publicText) {
      throw new E2EError(`the offer's content key is sealed to the device key ${e2e.receiver_key}, not to this device's ${this.device.publicText}`);
    }
    let published = this.published.get(sender);
    if (published == null && offer.store) published = this.seen.get(sender); // kept for this page: its sender may be gone
    if (published !== e2e.sender_key && !(takingUp && published == null)) {
      const what = published != null ? `published ${published}` : "published no key";
      throw new E2EError(`the offer is sealed by the device key ${e2e.sender_key}, but ${sender} ${what}`);
    }
    if (takingUp && published == null) {
      const known = await this.store.get(sender);
      if (!known.trusted.includes(e2e.sender_key)) {
        throw new E2EError(`the key ${e2e.sender_key} of ${sender} is not one trusted here`);
      }
    }
    return this.trusted(sender, e2e.sender_key);
  }

  /** The safety number of this device and `user`'s `key` (text). */
  safetyNumber(user, key) {
    const id = `${user} ${key}`;
    let number = this.numbers.get(id);
    if (!number) {
      number = safetyNumber(this.user, this.device.public, user, decodeKey(key));
      this.numbers.set(id, number);
      number.catch(() => this.numbers.delete(id));
    }
    return number;
  }

  /** {user, key, seen, number}: `key` checked against the ones trusted for `user`. */
  async checked(user, key) {
    decodeKey(key);
    const seen = await this.store.check(user, key);
    return { user, key, seen, number: await this.safetyNumber(user, key) };
  }

  async trusted(user, key) {
    const peer = await this.checked(user, key);
    if (this.published.get(user) === key) this.peers.set(user, peer);
    if (peer.seen === "changed") {
      const known = await this.store.get(user);
      const before = await Promise.all(known.trusted.map(async (k) => `${k} (safety number ${await this.safetyNumber(user, k)})`));
      throw new KeyChanged(
        user,
        key,
        `the device key of ${user} on ${serverId()} changed: trusted here is ${before.join("; ")}; ` +
          `${user} now shows ${key} (safety number ${peer.number}). A new device or a cleared browser ` +
          `changes the key, and so does someone in the middle: compare the new safety number with ${user} ` +
          "before you trust the new key",
      );
    }
    return peer;
  }

  // --- the person's decision -----------------------------------------------------------

  /** The person trusts `key` as `user`'s (after comparing the safety number). */
  async trust(user, key) {
    await this.store.trust(user, key);
    const peer = this.peers.get(user);
    if (peer && peer.key === key) this.peers.set(user, { ...peer, seen: "known" });
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) {
      if (w.user === user && w.key === key) w.resolve(true);
      else this.waiters.push(w);
    }
    this.onChange();
  }

  /** Until the person trusts `key` for `user` (true), or `abandon` is called (false). */
  untilTrusted(user, key) {
    let waiter;
    const promise = new Promise((resolve) => {
      waiter = { user, key, resolve };
      this.waiters.push(waiter);
    });
    const abandon = () => {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      waiter.resolve(false);
    };
    return { promise, abandon };
  }
}
