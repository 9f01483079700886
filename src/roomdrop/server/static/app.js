// roomdrop in the browser: sign in, join a room, send files to a participant and receive
// theirs, peer to peer over a WebRTC data channel or through the server's relay.
// It follows the reference client (src/roomdrop/client/session.py, docs/protocol.md §13).
//
// Modules: protocol.js (frames, ranges, names), rtc.js (the data channel), store.js and
// opfs-worker.js (part files in the origin-private file system, per-chunk and whole-file
// sha256), vendor/noble-hashes (streaming sha256).
//
// For tests: <body data-ready="true"> once the page can be used, data-state
// "signin" | "joining" | "joined" | "reconnecting" | "closed". data-testid hooks:
// name-input, token-input, room-input, join-button, share-link, me, participant
// (data-user), file-input, offer (data-transfer-id) with offer-accept / offer-reject,
// transfer (data-transfer-id, data-status, data-direction "send" | "receive") with
// transfer-status, transfer-transport, transfer-progress, transfer-percent,
// transfer-pause / -resume / -cancel, transfer-save; message (the log, newest first).
// window.roomdrop: {user, room, joined, participants, transfers: Map id → transfer
// (status, transport, bytes_via {p2p, relay}, resumed_bytes, sha256, error, error_code,
// refused, ...), messages}.

import {
  CHUNK_SIZE,
  DATA_CHANNEL_MAX_MESSAGE,
  canonicalUuid,
  chunkLength,
  countIn,
  decodeFrame,
  encodeFrames,
  formatBytes,
  formatDuration,
  indexesIn,
  newUuid,
  rangesOf,
  sanitizeFilename,
  toHex,
  totalChunks,
  userOfToken,
  uuidOfBytes,
} from "./protocol.js";
import { LinkDown, PeerLink } from "./rtc.js";
import { PartStore } from "./store.js";

const ICE_TIMEOUT = 5000;
const STALL_TIMEOUT = 2000;
const REPORT_EVERY = 1000;
const REQUEST_AGAIN_AFTER = 1000;
const TICK = 250;
const RELAY_HIGH_WATER = 1024 * 1024;
const LIVE = new Set(["pending", "active", "paused"]);
const FINAL = new Set(["completed", "failed", "cancelled", "rejected"]);

class NotConnected extends Error {}

const $ = (sel, root = document) => root.querySelector(sel);
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- state ------------------------------------------------------------------------------

const S = {
  user: null,
  token: null,
  room: null,
  joinedRoom: null,
  ws: null,
  connected: false,
  connections: 0,
  closing: false,
  participants: new Set(),
  serverTransfers: new Map(),
  links: new Map(),
  dropped: 0,
  transfers: new Map(),
  stashedRequests: new Map(),
  queues: new Map(),
  selected: null,
  iceServers: null,
  store: null,
  messages: [],
  inbox: Promise.resolve(),
};

window.roomdrop = {
  // user and room are set once the page has joined (the room is shown)
  get user() {
    return S.joinedRoom ? S.user : null;
  },
  get room() {
    return S.joinedRoom;
  },
  get joined() {
    return S.connected;
  },
  get participants() {
    return [...S.participants];
  },
  transfers: S.transfers,
  messages: S.messages,
  _state: S, // for debugging and tests: the page's whole state
};

// --- a transfer -------------------------------------------------------------------------

/** Public fields are enumerable (window.roomdrop.transfers); the rest hides in `_`. */
function newTransfer(fields, internals) {
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
    ...fields,
  };
  Object.defineProperty(t, "_", {
    value: {
      el: null,
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

function wake(t) {
  const w = t._.wakers;
  t._.wakers = [];
  w.forEach((f) => f());
}

function waitWake(t, ms = 1000) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    t._.wakers.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Bring a transfer to a final status (once), like session.py's _resolve. */
function finish(t, status, error = null, code = null, { quiet = false } = {}) {
  if (t._.final) return;
  t._.final = true;
  t.status = status;
  t.error = error;
  t.error_code = code;
  if (status === "completed") {
    t.progress_percent = 100;
    t.bytes_transferred = t.file_size;
    t.chunks_sent = t.total_chunks;
  }
  t.speed_bps = 0;
  t.eta_seconds = null;
  if (t.direction === "receive" && t._.part && status !== "completed") {
    const part = t._.part;
    t._.part = null;
    S.store.close(part).catch(() => {});
  }
  removeOffer(t);
  wake(t);
  t._.doneResolve(status);
  if (!quiet) {
    if (status === "completed") {
      const how = t.direction === "send" ? `sent to ${t.peer}` : `received from ${t.peer}`;
      note(`${t.filename}: ${how} (${carriedBy(t)}), sha256 verified`);
    } else {
      note(`${t.filename}: ${status}${code ? ` (${code})` : ""}${error ? `: ${error}` : ""}`, "error");
    }
  }
  render(t);
}

function carriedBy(t) {
  const { p2p, relay } = t.bytes_via;
  if (p2p === 0 && relay === 0) return t.transport;
  return p2p >= relay ? "p2p" : "relay";
}

function isLive(t) {
  return !t._.final && LIVE.has(t.status);
}

// --- messages to the person -------------------------------------------------------------

function note(text, kind = "info") {
  S.messages.push(text);
  const box = $("#messages");
  if (!box) return;
  const li = document.createElement("li");
  li.textContent = text;
  li.className = kind;
  box.prepend(li);
  while (box.children.length > 30) box.lastChild.remove();
}

// --- the server -------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch {}
  if (!response.ok) {
    const detail = body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    const err = new Error(detail || `HTTP ${response.status}`);
    err.status = response.status;
    err.code = body && body.code;
    throw err;
  }
  return body;
}

function send(type, payload) {
  const ws = S.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || !S.connected) {
    throw new NotConnected("not connected to the server");
  }
  const clean = {};
  const signalling = type === "offer" || type === "answer" || type === "ice-candidate";
  for (const [k, v] of Object.entries(payload)) {
    if (v === undefined || (v === null && !signalling)) continue;
    clean[k] = v;
  }
  ws.send(JSON.stringify({ type, payload: clean, sender_id: null, room_id: null, timestamp: null }));
}

function trySend(type, payload) {
  try {
    send(type, payload);
    return true;
  } catch (e) {
    if (!(e instanceof NotConnected)) throw e;
    return false;
  }
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/webrtc/ws/${encodeURIComponent(S.room)}?token=${encodeURIComponent(S.token)}`;
}

function connect() {
  return new Promise((resolve, reject) => {
    let settled = false;
    let delay = 200;
    const open = () => {
      const ws = new WebSocket(wsUrl());
      ws.binaryType = "arraybuffer";
      S.ws = ws;
      ws.onmessage = (event) => {
        if (typeof event.data === "string") {
          let msg;
          try {
            msg = JSON.parse(event.data);
          } catch {
            return;
          }
          S.inbox = S.inbox
            .then(() => onMessage(msg))
            .catch((e) => console.error("handling", msg && msg.type, e));
          if (msg.type === "room-state" && !settled) {
            settled = true;
            S.inbox.then(() => resolve());
          }
        } else {
          onRelayFrame(event.data);
        }
      };
      ws.onopen = () => {
        delay = 200;
      };
      ws.onclose = (event) => {
        if (ws !== S.ws) return;
        const wasConnected = S.connected;
        S.connected = false;
        document.body.dataset.state = "reconnecting";
        for (const t of S.transfers.values()) wake(t);
        const fatal = { 4401: "the server refused the token", 4400: "invalid room name", 4409: "this user joined the room elsewhere (this page was replaced)" }[event.code];
        if (fatal || S.closing) {
          const text = fatal ? `${fatal}${event.reason ? `: ${event.reason}` : ""}` : "left the room";
          note(text, "error");
          document.body.dataset.state = fatal ? "closed" : "left";
          if (!settled) {
            settled = true;
            reject(new Error(text));
          }
          return;
        }
        if (wasConnected) note("lost the connection to the server; reconnecting", "error");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 5000);
      };
    };
    open();
  });
}

// --- control messages -------------------------------------------------------------------

async function onMessage(msg) {
  const handler = HANDLERS[msg.type];
  if (!handler) return;
  const payload = msg.payload || {};
  if (payload.transfer_id) payload.transfer_id = canonicalUuid(payload.transfer_id);
  try {
    await handler(payload, msg.sender_id ?? null, msg);
  } catch (e) {
    if (e instanceof NotConnected) return;
    throw e;
  }
}

const HANDLERS = {
  "room-state": onRoomState,
  "user-joined": (p) => {
    S.participants.add(p.user_id);
    renderParticipants();
    for (const t of S.transfers.values()) if (t.peer === p.user_id) wake(t);
    wakeJoinWaiters();
  },
  "user-left": (p) => {
    S.participants.delete(p.user_id);
    if (S.selected === p.user_id) S.selected = null;
    renderParticipants();
    const link = S.links.get(p.user_id);
    if (link) {
      S.links.delete(p.user_id);
      link.close();
    }
    const live = [...S.transfers.values()].filter((t) => t.peer === p.user_id && isLive(t));
    if (live.length) note(`${p.user_id} left the room; their transfers wait for them to come back`, "error");
  },
  offer: onSignal,
  answer: onSignal,
  "ice-candidate": onSignal,
  error: onRefusal,
  "file-share-offer": onOffer,
  "file-share-accept": onAccept,
  "file-share-reject": onReject,
  "file-share-complete": onComplete,
  "file-share-pause": onPause,
  "file-share-resume": onResume,
  "file-share-cancel": onCancel,
  "file-share-error": onFileShareError,
  "file-share-chunk-request": onChunkRequest,
  "file-share-progress": onProgress,
};

// room-state comes first on every connection, and again on the same one when the server
// may have lost messages meant for this page (protocol.md §11.11): catch up from it.
async function onRoomState(p) {
  const resync = S.connected; // already connected: the same connection, not a new one
  S.participants = new Set(p.participants || []);
  S.participants.add(S.user);
  const known = new Map();
  for (const raw of p.transfers || []) {
    if (raw && raw.transfer_id) known.set(canonicalUuid(raw.transfer_id), raw);
  }
  S.serverTransfers = known;
  S.connected = true;
  if (!resync) S.connections += 1;
  if (!$("#room").hidden) document.body.dataset.state = "joined";
  if (S.connections > 1 && !resync) note("reconnected to the server");
  renderParticipants();
  wakeJoinWaiters();
  for (const t of [...S.transfers.values()]) {
    if (t._.final) continue;
    const held = known.get(t.transfer_id);
    if (t.direction === "send") {
      if (t._.orphan) {
        if (!held) finish(t, "failed", "the server no longer knows it", "unknown-transfer", { quiet: true });
        continue;
      }
      if (!held) {
        if (t._.offered || t._.accepted) {
          t._.reoffer = true;
          finish(t, "failed", "the server lost it; offering it again", "unknown-transfer", { quiet: true });
        }
      } else if (["cancelled", "failed", "rejected"].includes(held.status)) {
        finish(t, held.status, held.error, held.error_code);
      } else if (held.status === "completed") {
        finish(t, "completed");
      } else if ((held.status === "active" || held.status === "paused") && !t._.accepted) {
        // accepted while this page was away (or the accept was lost): which chunks the
        // receiver lacks is not known here, so all are queued (it drops those it holds)
        await onAccept({ transfer_id: t.transfer_id, missing: null }, held.receiver_id);
        alignStatus(t, held.status);
      } else {
        alignStatus(t, held.status);
      }
      wake(t);
    } else {
      if (!held) {
        finish(t, "failed", "the server no longer knows it", "unknown-transfer", { quiet: true });
      } else if (["cancelled", "failed", "rejected"].includes(held.status)) {
        // it ended while this page was away (or the message saying so was lost): keep
        // the verified chunks of the part file, as when the server gives up on a transfer
        if (t._.part) {
          const part = t._.part;
          t._.part = null;
          S.store.close(part).catch(() => {});
        }
        finish(t, held.status, held.error, held.error_code);
      } else if (t.status === "completed" && !t._.completedSent) {
        announceComplete(t);
      } else {
        alignStatus(t, held.status);
      }
    }
  }
  for (const o of known.values()) {
    if (S.transfers.has(o.transfer_id) || !o.sha256) continue;
    if (o.receiver_id === S.user && (o.status === "active" || o.status === "paused")) {
      takeUpIncoming(o).catch((e) => console.error("take up", e));
    } else if (o.receiver_id === S.user && o.status === "pending") {
      considerOffer(offerOf(o), o.sender_id);
    } else if (o.sender_id === S.user && LIVE.has(o.status)) {
      showOrphan(o);
    }
  }
}

/** A pause or resume this page missed (§13.4): brought to the server's status. */
function alignStatus(t, server) {
  if (server === "paused" && t.status === "active") setPaused(t);
  else if (server === "active" && t.status === "paused") setActive(t);
}

function setPaused(t) {
  t.status = "paused";
  t._.samples = [];
  wake(t);
  render(t);
}

/** Active again: a receiver asks for what it lacks, a sender's pump goes on. */
function setActive(t) {
  t.status = "active";
  t._.samples = [];
  if (t.direction === "receive") {
    t._.lastChunk = now();
    requestMissing(t, "resume");
  } else {
    wake(t);
  }
  render(t);
}

function offerOf(o) {
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

function onRefusal(p) {
  const t = p.transfer_id ? S.transfers.get(p.transfer_id) : null;
  if (t && t.direction === "send" && !t._.offered && !t._.final) {
    t._.refused = true;
    t.refused = true;
    finish(t, "failed", `refused: ${p.message}`, p.code);
    return;
  }
  if (p.code === "transfer-not-active" || p.code === "relay-closed") {
    // relayed chunks caught by a pause: the receiver asks for them again after the resume
    console.debug("relay refused a chunk:", p.message);
    return;
  }
  const about = t ? `${t.filename}: ` : "";
  note(`${about}the server refused a message: ${p.code}: ${p.message}`, "error");
}

async function onSignal(p, from, msg) {
  if (!from || from === S.user) return;
  const link = getLink(from);
  try {
    await link.onSignal(msg.type, p);
  } catch (e) {
    console.warn("signalling with", from, "failed", e);
  }
}

// --- participants and links -------------------------------------------------------------

let joinWaiters = [];
function wakeJoinWaiters() {
  const w = joinWaiters;
  joinWaiters = [];
  w.forEach((f) => f());
}

async function waitFor(user) {
  let told = false;
  while (!(S.connected && S.participants.has(user))) {
    if (!told && S.connected) {
      note(`waiting for ${user} to join the room`);
      told = true;
    }
    await new Promise((r) => {
      joinWaiters.push(r);
      setTimeout(r, 1000);
    });
  }
}

async function iceServers() {
  if (S.iceServers === null) {
    try {
      const config = await api("/webrtc/config");
      S.iceServers = Array.isArray(config.ice_servers) ? config.ice_servers : [];
    } catch (e) {
      console.warn("no ICE configuration", e);
      return [];
    }
  }
  return S.iceServers;
}

function getLink(remote) {
  let link = S.links.get(remote);
  if (!link) {
    link = new PeerLink(remote, {
      iceServers: S.iceServers || [],
      polite: S.user > remote,
      signal: async (kind, payload) => send(kind, payload),
      onFrame: (from, data) => onLinkFrame(from, data),
      onDown: (l, wasOpen) => onLinkDown(l, wasOpen),
    });
    S.links.set(remote, link);
  }
  return link;
}

/** The sender's side: a link that is open or opening, else a new offer. */
async function ensureLink(remote) {
  await iceServers();
  const link = getLink(remote);
  link.opts.iceServers = S.iceServers || [];
  if ((link.pc && !link.down) || link.isOpen) return link;
  link.down = false;
  (async () => {
    await waitFor(remote);
    try {
      await link.offer();
    } catch (e) {
      console.warn("offer to", remote, "failed", e);
      link.close();
    }
  })();
  return link;
}

function onLinkDown(link, wasOpen) {
  for (const t of S.transfers.values()) {
    if (t.peer !== link.remote || t._.final) continue;
    if (t.direction === "send") wake(t);
    else if (wasOpen) requestMissing(t, "missing");
  }
}

// --- sending ----------------------------------------------------------------------------

function enqueueFiles(files, to) {
  if (!to) {
    note("choose a participant to send to first", "error");
    return;
  }
  if (to === S.user) {
    note("you cannot send files to yourself", "error");
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
      { file, queue: new Set(), counted: null, countedBytes: 0, offered: false, accepted: false, hashing: 0, decided: false },
    );
    S.transfers.set(t.transfer_id, t);
    render(t);
    const before = S.queues.get(to) || Promise.resolve();
    const next = before.then(() => sendFile(t)).catch((e) => {
      console.error(e);
      if (!t._.final) finish(t, "failed", String(e.message || e), "error");
    });
    S.queues.set(to, next);
  }
}

let hashWorker = null;
let hashIds = 0;

/** The whole file's sha256, streamed in a worker (§2.3: the offer's sha256). */
function hashFile(t) {
  if (!hashWorker) {
    hashWorker = new Worker(new URL("./hash-worker.js", import.meta.url), { type: "module" });
    hashWorker.waiting = new Map();
    hashWorker.onmessage = (event) => {
      const { id, progress, sha256: digest, error } = event.data;
      const w = hashWorker.waiting.get(id);
      if (!w) return;
      if (progress !== undefined) return w.progress(progress);
      hashWorker.waiting.delete(id);
      if (error !== undefined) w.reject(new Error(error));
      else w.resolve(digest);
    };
  }
  const id = ++hashIds;
  return new Promise((resolve, reject) => {
    hashWorker.waiting.set(id, {
      resolve: (digest) => {
        t._.hashing = 1;
        resolve(digest);
      },
      reject,
      progress: (p) => {
        t._.hashing = Math.min(p, 0.999);
        render(t);
      },
    });
    hashWorker.postMessage({ id, file: t._.file });
  });
}

async function sendFile(t) {
  if (t._.final) return;
  t._.note = "computing sha256…";
  render(t);
  try {
    t.sha256 = await hashFile(t);
  } catch (e) {
    finish(t, "failed", `cannot read ${t.filename}: ${e.message || e}`, "storage-error");
    return;
  }
  t._.note = null;
  if (t._.final) return;
  for (;;) {
    await waitFor(t.peer);
    if (t._.final) return;
    ensureLink(t.peer).catch(() => {});
    const orphan = adoptable(t);
    if (orphan) {
      await takeUpOutgoing(t, orphan);
    } else {
      offer(t);
    }
    const pump = runPump(t);
    await t._.done;
    wake(t);
    await pump;
    if (!t._.reoffer) return;
    // the server restarted and lost it: the same file again, under a new id (§6.5)
    note(`the server lost ${t.filename}; offering it again`);
    const again = newTransfer(
      { ...pick(t, ["direction", "peer", "filename", "file_size", "mime_type", "total_chunks", "sha256"]), transfer_id: newUuid() },
      { file: t._.file, queue: new Set(), counted: null, countedBytes: 0, offered: false, accepted: false, hashing: 1, decided: false },
    );
    S.transfers.set(again.transfer_id, again);
    render(again);
    t = again;
  }
}

function pick(obj, keys) {
  return Object.fromEntries(keys.map((k) => [k, obj[k]]));
}

function offerPayload(t) {
  return {
    transfer_id: t.transfer_id,
    receiver_id: t.peer,
    filename: t.filename,
    file_size: t.file_size,
    mime_type: t.mime_type,
    chunk_size: t.chunk_size,
    total_chunks: t.total_chunks,
    sha256: t.sha256,
  };
}

function offer(t) {
  if (!trySend("file-share-offer", offerPayload(t))) {
    finish(t, "failed", "not connected to the server", "server-unreachable");
    return;
  }
  note(`offered ${t.filename} (${formatBytes(t.file_size)}) to ${t.peer}; waiting for an answer`);
}

function adoptable(t) {
  for (const o of S.serverTransfers.values()) {
    if (
      o.sender_id === S.user &&
      o.receiver_id === t.peer &&
      o.sha256 === t.sha256 &&
      o.file_size === t.file_size &&
      o.chunk_size === t.chunk_size &&
      (o.status === "active" || o.status === "paused")
    ) {
      const mine = S.transfers.get(canonicalUuid(o.transfer_id));
      if (mine && !mine._.orphan) continue;
      if (mine && mine._.final) continue;
      return o;
    }
  }
  return null;
}

/** A transfer this sender left (the page was reloaded) is taken up under its id. */
async function takeUpOutgoing(t, o) {
  const tid = canonicalUuid(o.transfer_id);
  const old = S.transfers.get(tid);
  if (old) {
    old._.el && old._.el.remove();
    S.transfers.delete(tid);
  }
  S.transfers.delete(t.transfer_id);
  t._.el && t._.el.remove();
  t._.el = null;
  t.transfer_id = tid;
  S.transfers.set(tid, t);
  t._.offered = true;
  t._.accepted = true;
  t._.counted = new Uint8Array(t.total_chunks);
  let status = o.status;
  try {
    status = (await api(`/webrtc/rooms/${encodeURIComponent(S.room)}/file-transfer/${tid}/progress`)).status;
  } catch {}
  note(`taking up ${t.filename} again (${status})`);
  if (status === "paused") {
    t.status = "paused";
    trySend("file-share-resume", { transfer_id: tid });
  } else if (status === "active") {
    t.status = "active";
  } else {
    t._.reoffer = true;
    finish(t, "failed", "the server no longer holds it; offering it again", "unknown-transfer", { quiet: true });
    return;
  }
  for (const request of S.stashedRequests.get(tid) || []) queueRequest(t, request);
  S.stashedRequests.delete(tid);
  t._.started = now();
  render(t);
}

function showOrphan(o) {
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
  S.transfers.set(tid, t);
  render(t);
}

async function onAccept(p, from) {
  const t = S.transfers.get(p.transfer_id);
  if (!t) return;
  if (t.direction === "receive") {
    if (from === S.user && !t._.final) t.status = "active";
    render(t);
    return;
  }
  if (from === S.user || t._.final || t._.orphan) return;
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
    note(`${t.peer} already has ${formatBytes(t.resumed_bytes)} of ${t.filename}; sending the rest`);
  }
  wake(t);
  render(t);
  cancelSuperseded(t);
}

/** Every chunk not listed counts as held by the receiver (§6.6 sync_progress). */
function syncProgress(t, missing) {
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

function setProgress(t, chunks, bytes) {
  t.chunks_sent = chunks;
  t.bytes_transferred = bytes;
  t.progress_percent = t.file_size ? Math.round((10000 * bytes) / t.file_size) / 100 : t.status === "completed" ? 100 : 0;
}

function cancelSuperseded(t) {
  for (const o of [...S.serverTransfers.values()]) {
    const tid = canonicalUuid(o.transfer_id);
    const mine = S.transfers.get(tid);
    if (
      tid !== t.transfer_id &&
      o.sender_id === S.user &&
      o.receiver_id === t.peer &&
      o.sha256 === t.sha256 &&
      LIVE.has(o.status) &&
      (!mine || mine._.orphan)
    ) {
      trySend("file-share-cancel", { transfer_id: tid, reason: `superseded by ${t.transfer_id}` });
      S.serverTransfers.delete(tid);
    }
  }
}

function onReject(p, from) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t._.final) return;
  if (t.direction === "send") {
    finish(t, "rejected", `${t.peer} rejected it${p.reason ? `: ${p.reason}` : ""}`);
  } else {
    finish(t, "rejected", p.reason || "declined");
  }
}

function onComplete(p, from) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t._.final) return;
  if (t.direction === "send") {
    if (from === S.user) return;
    if (p.sha256 !== t.sha256) {
      console.warn("completion with another sha256 not taken", p);
      return;
    }
    setProgress(t, t.total_chunks, t.file_size);
    finish(t, "completed");
  }
}

function onPause(p, from) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t._.final) return;
  if (t.status !== "active") return;
  const who = from == null ? "the server" : from === S.user ? "you" : from;
  note(`${t.filename}: paused by ${who}${p.reason ? ` (${p.reason})` : ""}`);
  setPaused(t);
}

function onResume(p, from) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t._.final) return;
  if (t.status !== "paused" && t.status !== "active") return;
  const who = from == null ? "the server" : from === S.user ? "you" : from;
  note(`${t.filename}: resumed by ${who}${p.reason ? ` (${p.reason})` : ""}`);
  setActive(t);
}

async function onCancel(p, from) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t._.final) return;
  const reason = p.reason || "cancelled";
  const who = from == null ? "the server" : from === S.user ? "you" : from;
  if (t.direction === "receive" && t._.part) {
    const part = t._.part;
    t._.part = null;
    if (from == null) {
      // the server gave up on it (sender gone, inactivity): keep what arrived
      S.store.close(part).catch(() => {});
    } else {
      S.store.remove(part).catch(() => {});
    }
  }
  finish(t, "cancelled", `cancelled by ${who}: ${reason}`, from == null ? "cancelled" : null);
}

function onFileShareError(p) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t._.final) return;
  finish(t, "failed", p.message, p.code);
}

function onChunkRequest(p) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t.direction !== "send" || t._.orphan) {
    if (!S.stashedRequests.has(p.transfer_id)) S.stashedRequests.set(p.transfer_id, []);
    S.stashedRequests.get(p.transfer_id).push(p);
    return;
  }
  queueRequest(t, p);
}

function queueRequest(t, request) {
  const indexes = [...indexesIn(request.ranges || [])].filter((i) => i < t.total_chunks);
  if (request.reason !== "bad-checksum") {
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

function onProgress(p) {
  const t = S.transfers.get(p.transfer_id);
  if (!t || t._.final) return;
  if (t._.orphan) {
    setProgress(t, p.chunks_sent, p.bytes_transferred);
    render(t);
  }
  t._.serverSpeed = p.speed_bps;
}

// --- the pump: a sender's chunks on their way -------------------------------------------

async function runPump(t) {
  while (!t._.final) {
    if (!t._.accepted || !t._.queue.size || t.status !== "active" || !S.connected) {
      await waitWake(t);
      continue;
    }
    if (!t._.decided) {
      t.transport = await chooseTransport(t);
      t._.decided = true;
      render(t);
      continue; // the world may have changed while ICE was trying
    }
    const index = t._.queue.values().next().value;
    const start = index * t.chunk_size;
    const length = chunkLength(index, t.file_size, t.chunk_size);
    let data;
    try {
      data = await t._.file.slice(start, start + length).arrayBuffer();
      if (data.byteLength !== length) throw new Error(`read ${data.byteLength} of ${length} bytes`);
    } catch (e) {
      failOutgoing(t, "storage-error", `cannot read ${t.filename} (changed or gone?): ${e.message || e}`);
      return;
    }
    if (t.status !== "active" || t._.final) continue;
    const checksum = toHex(await crypto.subtle.digest("SHA-256", data));
    const via = t.transport;
    try {
      if (via === "p2p") {
        const link = S.links.get(t.peer);
        if (!link) throw new LinkDown("no link");
        await link.send(encodeFrames(t.transfer_id, index, t.total_chunks, t.chunk_size, data, checksum, DATA_CHANNEL_MAX_MESSAGE));
      } else {
        await relaySend(encodeFrames(t.transfer_id, index, t.total_chunks, t.chunk_size, data, checksum, null)[0]);
      }
    } catch (e) {
      if (e instanceof LinkDown) {
        note(`data channel to ${t.peer} lost`);
        t._.decided = false;
        continue;
      }
      if (e instanceof NotConnected) continue;
      throw e;
    }
    t._.queue.delete(index);
    t.bytes_via[via] += length;
    if (t._.counted && !t._.counted[index]) {
      t._.counted[index] = 1;
      t._.countedBytes += length;
      setProgress(t, t.chunks_sent + 1, t._.countedBytes);
    }
  }
}

async function chooseTransport(t) {
  const link = await ensureLink(t.peer);
  if (await link.waitOpen(ICE_TIMEOUT)) return "p2p";
  note(`no peer-to-peer connection to ${t.peer} within 5 s; sending through the relay`);
  return "relay";
}

async function relaySend(frame) {
  const ws = S.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || !S.connected) throw new NotConnected();
  ws.send(frame);
  while (ws.bufferedAmount > RELAY_HIGH_WATER) {
    if (ws.readyState !== WebSocket.OPEN) throw new NotConnected();
    await sleep(4);
  }
}

function failOutgoing(t, code, message) {
  trySend("file-share-error", { transfer_id: t.transfer_id, code, message });
  finish(t, "failed", message, code);
}

// --- receiving --------------------------------------------------------------------------

function onOffer(p, from) {
  const tid = p.transfer_id;
  if (from === S.user) {
    const t = S.transfers.get(tid);
    if (t && t.direction === "send") {
      t._.offered = true;
      render(t);
    }
    return;
  }
  if (p.receiver_id !== S.user || !from) return;
  considerOffer(p, from);
}

function considerOffer(p, from) {
  const tid = canonicalUuid(p.transfer_id);
  if (S.transfers.has(tid)) return;
  supersede(p, from);
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
    { part: null, held: null, heldCount: 0, heldBytes: 0, writing: new Set(), lastChunk: 0, lastRequest: 0, lastReport: 0, completedSent: false },
  );
  S.transfers.set(tid, t);
  render(t);
  showOffer(t);
  note(`${from} offers ${t.filename} (${formatBytes(t.file_size)}, ${t.mime_type})`);
}

/** A new offer of content this page is receiving from the same sender replaces it. */
function supersede(p, from) {
  for (const t of S.transfers.values()) {
    if (
      t.direction === "receive" &&
      isLive(t) &&
      t.peer === from &&
      t.sha256 === p.sha256 &&
      t.file_size === p.file_size &&
      t.chunk_size === p.chunk_size
    ) {
      finish(t, "failed", `superseded by ${p.transfer_id}`, "superseded", { quiet: true });
    }
  }
}

function contentKey(t) {
  return { sha256: t.sha256, file_size: t.file_size, chunk_size: t.chunk_size };
}

async function openPart(t) {
  const { part, held } = await S.store.open(contentKey(t), t.filename);
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

async function acceptOffer(t) {
  if (t._.final || t.status !== "pending" || t._.accepting) return;
  t._.accepting = true;
  removeOffer(t);
  try {
    await openPart(t);
  } catch (e) {
    const message = String(e.message || e);
    trySend("file-share-error", { transfer_id: t.transfer_id, code: "storage-error", message });
    finish(t, "failed", message, "storage-error");
    return;
  }
  if (t._.final) {
    S.store.close(t._.part).catch(() => {});
    return;
  }
  const missing = missingChunks(t);
  const payload = { transfer_id: t.transfer_id };
  if (missing.length < t.total_chunks) payload.missing = rangesOf(missing);
  if (!trySend("file-share-accept", payload)) {
    note("not connected to the server: try again in a moment", "error");
    S.store.close(t._.part).catch(() => {});
    t._.part = null;
    t._.accepting = false;
    showOffer(t);
    return;
  }
  t.status = "active";
  t._.started = t._.lastChunk = now();
  t._.samples = [];
  if (t.resumed_bytes) {
    note(`resuming ${t.filename}: ${formatBytes(t.resumed_bytes)} of ${formatBytes(t.file_size)} already here`);
  }
  render(t);
  if (t._.heldCount === t.total_chunks) await finishReceiving(t);
}

function rejectOffer(t) {
  if (t._.final || t.status !== "pending") return;
  if (!trySend("file-share-reject", { transfer_id: t.transfer_id, reason: "declined" })) {
    note("not connected to the server: try again in a moment", "error");
    return;
  }
  S.store.removeByKey(contentKey(t)).catch(() => {});
  finish(t, "rejected", "declined", null, { quiet: true });
  note(`${t.filename}: rejected`);
}

async function takeUpIncoming(o) {
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
    { part: null, held: null, heldCount: 0, heldBytes: 0, writing: new Set(), lastChunk: now(), lastRequest: 0, lastReport: 0, completedSent: false },
  );
  S.transfers.set(tid, t);
  render(t);
  try {
    await openPart(t);
  } catch (e) {
    finish(t, "failed", String(e.message || e), "storage-error");
    return;
  }
  note(`taking up ${t.filename} again: ${formatBytes(t._.heldBytes)} of ${formatBytes(t.file_size)} already here`);
  t._.started = now();
  if (t._.heldCount === t.total_chunks) {
    t.status = "active";
    await finishReceiving(t);
    return;
  }
  let status = o.status;
  try {
    status = (await api(`/webrtc/rooms/${encodeURIComponent(S.room)}/file-transfer/${tid}/progress`)).status;
  } catch {}
  if (t._.final) return;
  if (status === "paused") {
    t.status = "paused";
    trySend("file-share-resume", { transfer_id: tid });
  } else if (status === "active") {
    t.status = "active";
    t._.lastChunk = now();
    requestMissing(t, "resume");
  } else if (FINAL.has(status)) {
    finish(t, status);
  }
  render(t);
}

function missingChunks(t) {
  const out = [];
  const held = t._.held;
  if (!held) return out;
  for (let i = 0; i < t.total_chunks; i++) if (!held[i] && !t._.writing.has(i)) out.push(i);
  return out;
}

/** Ask the sender for every chunk this page still lacks (§13.3). */
function requestMissing(t, reason) {
  const at = now();
  if (reason === "resume" && at - t._.lastRequest < REQUEST_AGAIN_AFTER) return;
  if (t._.final || t.status !== "active" || !t._.held) return;
  const missing = missingChunks(t);
  t._.lastRequest = at;
  if (!missing.length) return;
  trySend("file-share-chunk-request", { transfer_id: t.transfer_id, ranges: rangesOf(missing), reason });
}

// Received frames wait in a queue here and go to the worker (their buffers move, no
// copy), which decodes, reassembles, verifies and writes them; at most WORKER_FRAMES are
// in the worker at once, so a pause stops the writing at once: queued frames of a
// transfer that is no longer active are dropped (§4). At most INBOX_BYTES wait: beyond
// that a frame is dropped and its chunk asked for again later, like the reference
// client's inbox, so memory stays bounded whatever the rate.
const INBOX_BYTES = 32 * 1024 * 1024;
const WORKER_FRAMES = 16;
const inbox = { items: [], head: 0, bytes: 0, inWorker: 0 };

function onRelayFrame(data) {
  routeFrame(data, "relay", null);
}

function onLinkFrame(remote, data) {
  routeFrame(data, "p2p", remote);
}

function routeFrame(data, via, remote) {
  if (data.byteLength < 72) return;
  const tid = uuidOfBytes(new Uint8Array(data, 4, 16));
  const t = S.transfers.get(tid);
  if (!t || t.direction !== "receive" || t._.final || !t._.part) return;
  if (remote !== null && remote !== t.peer) return; // not this transfer's sender
  if (t.status !== "active") return; // chunks while pending or paused are dropped (§4)
  t._.lastChunk = now();
  if (inbox.bytes > INBOX_BYTES) {
    S.dropped += 1;
    return;
  }
  inbox.items.push({ t, part: t._.part, tid, data, via });
  inbox.bytes += data.byteLength;
  feedWorker();
}

function feedWorker() {
  while (inbox.inWorker < WORKER_FRAMES && inbox.head < inbox.items.length) {
    const item = inbox.items[inbox.head];
    inbox.items[inbox.head++] = undefined;
    inbox.bytes -= item.data.byteLength;
    const t = item.t;
    if (t._.final || t.status !== "active" || t._.part !== item.part) continue;
    inbox.inWorker++;
    S.store.frame(item.part, item.tid, item.data, item.via);
  }
  if (inbox.head > 1024 && inbox.head * 2 > inbox.items.length) {
    inbox.items = inbox.items.slice(inbox.head);
    inbox.head = 0;
  }
}

function onStoreEvent(e) {
  if (e.event === "consumed") {
    inbox.inWorker = Math.max(0, inbox.inWorker - 1);
    feedWorker();
    return;
  }
  const t = S.transfers.get(e.tid);
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
      if (t._.heldCount === t.total_chunks) finishReceiving(t);
      return;
    }
    case "duplicate":
      t._.lastChunk = now();
      return;
    case "bad-checksum":
      note(`${t.filename}: chunk ${index} failed its sha256 check; asking for it again`);
      trySend("file-share-chunk-request", { transfer_id: t.transfer_id, ranges: [[index, index + 1]], reason: "bad-checksum" });
      return;
    case "error": {
      const message = e.message;
      trySend("file-share-error", { transfer_id: t.transfer_id, code: "storage-error", message });
      finish(t, "failed", message, "storage-error");
      return;
    }
    default:
      console.warn(`dropping a chunk of ${t.filename} (${e.result}): ${e.message || ""}`);
  }
}

/** Every chunk is in: check the whole file's sha256, then put it in place (§4). */
async function finishReceiving(t) {
  if (t._.verifying || t._.final) return;
  t._.verifying = true;
  t._.note = "verifying sha256…";
  render(t);
  const part = t._.part;
  let digest;
  try {
    digest = (await S.store.verify(part)).sha256;
  } catch (e) {
    t._.verifying = false;
    const message = String(e.message || e);
    trySend("file-share-error", { transfer_id: t.transfer_id, code: "storage-error", message });
    finish(t, "failed", message, "storage-error");
    return;
  }
  t._.note = null;
  if (digest !== t.sha256) {
    const message = `file sha256 ${digest} does not match the offer's ${t.sha256}`;
    t._.part = null;
    await S.store.remove(part).catch(() => {});
    trySend("file-share-error", { transfer_id: t.transfer_id, code: "integrity-error", message });
    finish(t, "failed", message, "integrity-error");
    return;
  }
  let placed;
  try {
    placed = await S.store.place(part, t.filename);
  } catch (e) {
    const message = String(e.message || e);
    trySend("file-share-error", { transfer_id: t.transfer_id, code: "storage-error", message });
    finish(t, "failed", message, "storage-error");
    return;
  }
  t._.part = null;
  t.saved_name = placed.name;
  try {
    const file = await S.store.receivedFile(placed.name);
    t._.url = URL.createObjectURL(file);
  } catch (e) {
    console.error("cannot open the received file", e);
  }
  setProgress(t, t.total_chunks, t.file_size);
  finish(t, "completed");
  announceComplete(t);
}

function announceComplete(t) {
  t._.completedSent = trySend("file-share-complete", { transfer_id: t.transfer_id, sha256: t.sha256 });
}

// --- the clock --------------------------------------------------------------------------

function tick() {
  const at = now();
  for (const t of S.transfers.values()) {
    if (t._.final) continue;
    if (t.status === "active") {
      measure(t, at);
      if (t.direction === "receive" && t._.held && S.connected) {
        if (at - t._.lastReport >= REPORT_EVERY) {
          t._.lastReport = at;
          trySend("file-share-progress", {
            transfer_id: t.transfer_id,
            chunks_sent: t._.heldCount,
            bytes_transferred: t._.heldBytes,
            progress_percent: t.progress_percent,
            status: "active",
          });
        }
        if (at - t._.lastChunk > STALL_TIMEOUT && at - t._.lastRequest > STALL_TIMEOUT) {
          requestMissing(t, "missing");
        }
      }
    }
    render(t);
  }
}

function measure(t, at) {
  const s = t._.samples;
  s.push([at, t.bytes_transferred]);
  while (s.length > 2 && at - s[0][0] > 5000) s.shift();
  const [t0, b0] = s[0];
  const dt = (at - t0) / 1000;
  t.speed_bps = dt > 0.5 ? Math.max(0, (t.bytes_transferred - b0) / dt) : 0;
  t.eta_seconds = t.speed_bps > 0 ? (t.file_size - t.bytes_transferred) / t.speed_bps : null;
}

// --- the page ---------------------------------------------------------------------------

function renderParticipants() {
  const list = $("#participants");
  list.textContent = "";
  const others = [...S.participants].filter((u) => u !== S.user).sort();
  if (S.selected && !S.participants.has(S.selected)) S.selected = null;
  // with one other participant, files go to them; with more, to the one clicked
  if (S.selectedAuto && others.length !== 1) S.selected = null;
  if (!S.selected && others.length === 1) {
    S.selected = others[0];
    S.selectedAuto = true;
  }
  for (const user of others) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "participant";
    b.dataset.testid = "participant";
    b.setAttribute("data-testid", "participant");
    b.dataset.user = user;
    b.textContent = user;
    b.setAttribute("aria-pressed", String(S.selected === user));
    b.addEventListener("click", () => {
      S.selected = user;
      S.selectedAuto = false;
      renderParticipants();
    });
    li.append(b);
    list.append(li);
  }
  $("#me").textContent = S.user || "";
  $("#nobody").hidden = others.length > 0;
  $("#recipient").textContent = S.selected ? `Files go to ${S.selected}.` : "Choose a participant to send to.";
  $("#file-input").disabled = !S.connected;
}

function showOffer(t) {
  if (t._.offerEl) return;
  const li = document.createElement("li");
  li.className = "offer";
  li.setAttribute("data-testid", "offer");
  li.dataset.transferId = t.transfer_id;
  const text = document.createElement("p");
  const who = document.createElement("strong");
  who.textContent = t.peer;
  const name = document.createElement("strong");
  name.textContent = t.filename;
  text.append(who, " offers ", name, ` (${formatBytes(t.file_size)}, ${t.file_size.toLocaleString()} bytes, ${t.mime_type})`);
  const accept = button("Accept", "offer-accept", () => acceptOffer(t));
  accept.classList.add("primary");
  accept.setAttribute("aria-label", `Accept ${t.filename} from ${t.peer}`);
  const reject = button("Reject", "offer-reject", () => rejectOffer(t));
  reject.setAttribute("aria-label", `Reject ${t.filename} from ${t.peer}`);
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(accept, reject);
  li.append(text, actions);
  t._.offerEl = li;
  $("#offers").append(li);
  $("#offers-section").hidden = false;
}

function removeOffer(t) {
  if (t._.offerEl) {
    t._.offerEl.remove();
    t._.offerEl = null;
  }
  $("#offers-section").hidden = $("#offers").children.length === 0;
}

function button(label, testid, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("data-testid", testid);
  b.addEventListener("click", onClick);
  return b;
}

function buildTransfer(t) {
  const li = document.createElement("li");
  li.className = "transfer";
  li.setAttribute("data-testid", "transfer");
  li.innerHTML = `
    <div class="head">
      <span class="dir"></span>
      <strong class="name"></strong>
    </div>
    <div class="tags">
      <span class="status" data-testid="transfer-status"></span>
      <span class="transport" data-testid="transfer-transport"></span>
    </div>
    <progress data-testid="transfer-progress" max="100" value="0"></progress>
    <div class="stats">
      <span class="percent" data-testid="transfer-percent"></span>
      <span class="bytes"></span>
      <span class="speed"></span>
      <span class="eta"></span>
    </div>
    <p class="note"></p>
    <div class="actions"></div>`;
  const actions = li.querySelector(".actions");
  const pause = button("Pause", "transfer-pause", () => control(t, "file-share-pause"));
  const resume = button("Resume", "transfer-resume", () => control(t, "file-share-resume"));
  const cancel = button("Cancel", "transfer-cancel", () => control(t, "file-share-cancel"));
  const save = document.createElement("a");
  save.className = "button primary";
  save.setAttribute("data-testid", "transfer-save");
  save.textContent = "Save";
  save.hidden = true;
  actions.append(pause, resume, cancel, save);
  Object.assign(t._, { pauseBtn: pause, resumeBtn: resume, cancelBtn: cancel, saveLink: save });
  $("#transfers").prepend(li);
  $("#transfers-section").hidden = false;
  return li;
}

function control(t, type) {
  if (t._.final) return;
  const payload = { transfer_id: t.transfer_id };
  if (type === "file-share-cancel") payload.reason = "user cancelled";
  if (!trySend(type, payload)) note("not connected to the server: try again in a moment", "error");
}

function render(t) {
  if (!t._.el) t._.el = buildTransfer(t);
  const el = t._.el;
  if (el.dataset.transferId !== t.transfer_id) el.dataset.transferId = t.transfer_id;
  el.dataset.status = t.status;
  el.dataset.direction = t.direction;
  const set = (sel, text) => {
    const node = el.querySelector(sel);
    if (node.textContent !== text) node.textContent = text;
  };
  if (t._.labelled !== t.filename) {
    t._.labelled = t.filename;
    t._.pauseBtn.setAttribute("aria-label", `Pause ${t.filename}`);
    t._.resumeBtn.setAttribute("aria-label", `Resume ${t.filename}`);
    t._.cancelBtn.setAttribute("aria-label", `Cancel ${t.filename}`);
    t._.saveLink.setAttribute("aria-label", `Save ${t.filename}`);
  }
  set(".dir", t.direction === "send" ? `to ${t.peer}` : `from ${t.peer}`);
  set(".name", t.filename);
  set(".status", t.status);
  const transport = carriedBy(t);
  set(".transport", transport || "");
  el.querySelector(".transport").hidden = !transport;
  const bar = el.querySelector("progress");
  let percent = t.progress_percent;
  if (t.direction === "send" && t._.hashing < 1 && !t._.final && !t._.orphan) percent = 0;
  bar.value = percent;
  const percentText = `${percent.toFixed(percent % 1 ? 2 : 0)} %`;
  if (bar.textContent !== percentText) bar.textContent = percentText;
  bar.setAttribute("aria-label", `${t.filename}: ${percentText}`);
  set(".percent", percentText);
  set(".bytes", `${formatBytes(t.bytes_transferred)} of ${formatBytes(t.file_size)}`);
  set(".speed", t.status === "active" && t.speed_bps ? `${formatBytes(t.speed_bps)}/s` : "");
  set(".eta", t.status === "active" && t.eta_seconds != null ? `ETA ${formatDuration(t.eta_seconds)}` : "");
  let noteText = t._.note || "";
  if (t.direction === "send" && t._.hashing < 1 && !t._.final && !t._.orphan) {
    noteText = `computing sha256… ${Math.floor(t._.hashing * 100)} %`;
  } else if (t.error) {
    noteText = t.error;
  }
  set(".note", noteText);
  el.querySelector(".note").classList.toggle("error", Boolean(t.error) && t.status !== "completed");
  const live = !t._.final && LIVE.has(t.status);
  t._.pauseBtn.disabled = !(live && t.status === "active");
  t._.resumeBtn.disabled = !(live && t.status === "paused");
  t._.cancelBtn.disabled = !live;
  const save = t._.saveLink;
  const ready = t.direction === "receive" && t.status === "completed" && Boolean(t._.url);
  if (ready && save.getAttribute("href") !== t._.url) {
    save.href = t._.url;
    save.download = t.filename;
  }
  save.hidden = !ready;
}

// --- signing in -------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const joinButton = $("#join-button");
  const token = $("#token-input").value.trim();
  const name = $("#name-input").value.trim();
  const room = $("#room-input").value.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(room)) {
    note("a room name is 1–128 letters, digits, '.', '_' or '-', starting with a letter or digit", "error");
    return;
  }
  joinButton.disabled = true;
  try {
    if (token) {
      const user = userOfToken(token);
      if (!user) throw new Error("that token is not a JWT with a user id (sub)");
      S.token = token;
      S.user = user;
    } else if (name) {
      if (!/^[A-Za-z0-9._ -]{1,64}$/.test(name)) {
        throw new Error("a name is 1–64 letters, digits, spaces, '.', '_' or '-'");
      }
      // the same name in the same browser is the same guest (so a reload can take its
      // transfers up again), as long as the token it got is still valid
      const remembered = rememberedGuest(name);
      if (remembered) {
        S.token = remembered.token;
        S.user = remembered.user;
      } else {
        const answer = await api("/webrtc/guest", { method: "POST", body: JSON.stringify({ name }) });
        S.token = answer.token;
        S.user = answer.user_id;
        try {
          const guests = JSON.parse(localStorage.getItem(GUEST_KEY) || "{}");
          guests[name] = { token: S.token, user: S.user };
          localStorage.setItem(GUEST_KEY, JSON.stringify(guests));
        } catch {}
      }
    } else {
      throw new Error("enter a name or paste a token");
    }
    S.room = room;
    if (!token) {
      try {
        sessionStorage.setItem(NAME_KEY, name);
      } catch {}
    }
    const url = new URL(location.href);
    url.searchParams.set("room", room);
    history.replaceState(null, "", url);
    document.body.dataset.state = "joining";
    await iceServers();
    await connect();
    $("#signin").hidden = true;
    $("#room").hidden = false;
    $("#room-name").textContent = room;
    const share = new URL(location.origin + location.pathname);
    share.searchParams.set("room", room);
    const link = $("#share-link");
    link.href = share.toString();
    link.textContent = share.toString();
    note(`joined room ${room} as ${S.user}`);
    renderParticipants();
    S.joinedRoom = room;
    document.body.dataset.state = "joined";
  } catch (e) {
    if (!token && name) {
      try {
        // a remembered guest the server refused: a new one next time
        const guests = JSON.parse(localStorage.getItem(GUEST_KEY) || "{}");
        delete guests[name];
        localStorage.setItem(GUEST_KEY, JSON.stringify(guests));
      } catch {}
    }
    S.token = null;
    S.user = null;
    document.body.dataset.state = "signin";
    note(`cannot join: ${e.message || e}`, "error");
    joinButton.disabled = false;
  }
}

const GUEST_KEY = "roomdrop-guests"; // name → {token, user}, in localStorage
const NAME_KEY = "roomdrop-name"; // this tab's last name, in sessionStorage

function rememberedGuest(name) {
  try {
    const last = (JSON.parse(localStorage.getItem(GUEST_KEY) || "{}") || {})[name];
    if (!last || !last.token || !last.user) return null;
    const exp = claimsOf(last.token).exp;
    if (typeof exp === "number" && exp * 1000 < Date.now() + 60000) return null;
    return last;
  } catch {
    return null;
  }
}

function claimsOf(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

function pauseAllOnLeave() {
  for (const t of S.transfers.values()) {
    if (!t._.final && t.status === "active") trySend("file-share-pause", { transfer_id: t.transfer_id });
  }
}

async function init() {
  S.store = new PartStore();
  S.store.onEvent = onStoreEvent;
  S.store.sweep().catch((e) => console.warn("sweep", e));
  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("#room-input").value = params.get("room");
  if (params.get("name")) $("#name-input").value = params.get("name");
  try {
    const last = sessionStorage.getItem(NAME_KEY);
    if (last && !$("#name-input").value) $("#name-input").value = last;
  } catch {}
  $("#signin-form").addEventListener("submit", signIn);
  let guests = false;
  try {
    guests = Boolean((await api("/webrtc/guest")).enabled);
  } catch {}
  $("#guest-fields").hidden = !guests;
  $("#guest-off").hidden = guests;
  $("#token-optional").hidden = !guests;
  $("#file-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    if (files.length) enqueueFiles(files, S.selected);
  });
  $("#share-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("#share-link").href);
      note("link copied");
    } catch {
      note("copy the link by hand: your browser refused the clipboard", "error");
    }
  });
  const drop = document.body;
  drop.addEventListener("dragover", (event) => {
    if (!S.connected) return;
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", (event) => {
    if (event.target === drop || !drop.contains(event.relatedTarget)) drop.classList.remove("dragging");
  });
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (!S.connected) return;
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) enqueueFiles(files, S.selected);
  });
  window.addEventListener("pagehide", () => {
    S.closing = true;
    pauseAllOnLeave();
  });
  setInterval(tick, TICK);
  document.body.dataset.state = "signin";
  document.body.dataset.ready = "true";
}

init();
