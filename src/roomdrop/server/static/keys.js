// The page's keys in IndexedDB (database "roomdrop-keys"): its device key, and the keys
// it trusts on first use (docs/protocol.md §14.1, §14.6). Counterparts:
// src/roomdrop/client/keys.py (the device key) and client/peerkeys.py (trust).
//
//  * device   the device key: a WebCrypto X25519 CryptoKeyPair whose private half is
//             NON-EXTRACTABLE (generated so; IndexedDB keeps the CryptoKey object itself,
//             never its bytes), made on first use and kept across reloads. Clearing the
//             site's data makes a new one (the others then see a new key and are warned).
//  * trusted  per server origin and user id: {trusted: [keys], pending: key | null}.
//             The first key seen for a user is trusted; a later, different one is not
//             (it is kept as pending) until the person trusts it; trusting adds a key,
//             it forgets none (a user may have several devices).
//
// The store holds public keys and user ids only; whoever can run script in this origin
// could change it, as they could use the device key: the page is only as trustworthy
// as the server that serves it (e2e.js says why).

import { deviceOf, generateDeviceKey } from "./e2e.js";

const DB = "roomdrop-keys";
const VERSION = 1;
const DEVICE = "device";
const TRUSTED = "trusted";

let dbP = null;

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function db() {
  if (!dbP) {
    dbP = new Promise((resolve, reject) => {
      const open = indexedDB.open(DB, VERSION);
      open.onupgradeneeded = () => {
        const d = open.result;
        if (!d.objectStoreNames.contains(DEVICE)) d.createObjectStore(DEVICE);
        if (!d.objectStoreNames.contains(TRUSTED)) d.createObjectStore(TRUSTED);
      };
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
      open.onblocked = () => reject(new Error("the key store is blocked by another tab"));
    });
    dbP.catch(() => (dbP = null));
  }
  return dbP;
}

/** One transaction on `store`: fn(objectStore) → a promise of its result, resolved once
 * the transaction has committed. */
async function inStore(store, mode, fn) {
  const d = await db();
  const tx = d.transaction(store, mode);
  const result = fn(tx.objectStore(store));
  Promise.resolve(result).catch(() => {}); // its failure is the transaction's, below
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("aborted"));
  });
  return result;
}

let deviceP = null;

/** This page's device key, {pair, public, publicText} (e2e.js deviceOf): loaded, or
 * made and stored on first use. */
export function deviceKey() {
  if (!deviceP) {
    deviceP = loadOrMakeDevice();
    deviceP.catch(() => (deviceP = null));
  }
  return deviceP;
}

async function loadOrMakeDevice() {
  const found = await inStore(DEVICE, "readonly", (s) => request(s.get("key")));
  if (found && found.privateKey && found.publicKey) return deviceOf(found);
  const pair = await generateDeviceKey();
  // add, not put: a second tab making one at the same moment loses, and takes the first
  let won = true;
  try {
    await inStore(DEVICE, "readwrite", (s) => request(s.add({ privateKey: pair.privateKey, publicKey: pair.publicKey }, "key")));
  } catch (e) {
    if (e && e.name !== "ConstraintError") throw e;
    won = false;
  }
  if (!won) return loadOrMakeDevice();
  return deviceOf(pair);
}

// --- trust on first use ----------------------------------------------------------------

/** The server trust is kept for: this page's origin (the server that serves it). */
export function serverId() {
  return location.origin;
}

const entryKey = (server, user) => JSON.stringify([server, user]);

export class TrustStore {
  constructor(server = serverId()) {
    this.server = server;
  }

  /** {trusted: [...], pending} of `user` (empty if never seen). */
  async get(user) {
    const value = await inStore(TRUSTED, "readonly", (s) => request(s.get(entryKey(this.server, user))));
    return { trusted: [...((value && value.trusted) || [])], pending: (value && value.pending) || null };
  }

  /** What `key` is for `user`: "known" (trusted already), "first" (the first key seen
   * for them: trusted from now on) or "changed" (not one of theirs: kept as pending). */
  async check(user, key) {
    let seen = "known";
    await inStore(TRUSTED, "readwrite", (s) => {
      const id = entryKey(this.server, user);
      const r = s.get(id);
      r.onsuccess = () => {
        const value = r.result || { trusted: [], pending: null };
        if (value.trusted.includes(key)) {
          seen = "known";
          if (value.pending === key) s.put({ ...value, pending: null }, id);
        } else if (value.trusted.length === 0) {
          seen = "first";
          s.put({ trusted: [key], pending: null, since: Date.now() }, id);
        } else {
          seen = "changed";
          if (value.pending !== key) s.put({ ...value, pending: key }, id);
        }
      };
    });
    return seen;
  }

  /** The person trusts `key` for `user` (after comparing the safety number). */
  async trust(user, key) {
    await inStore(TRUSTED, "readwrite", (s) => {
      const id = entryKey(this.server, user);
      const r = s.get(id);
      r.onsuccess = () => {
        const value = r.result || { trusted: [], pending: null };
        const trusted = value.trusted.includes(key) ? value.trusted : [...value.trusted, key];
        s.put({ ...value, trusted, pending: value.pending === key ? null : value.pending }, id);
      };
    });
  }
}
