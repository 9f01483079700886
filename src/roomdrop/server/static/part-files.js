// Part files in the origin-private file system (docs/protocol.md §6.2), written in place
// through sync access handles, so that what arrived survives a reload or a closed tab.
// Only opfs-worker.js imports this module (sync access handles exist in workers only).
//
//   roomdrop-parts/<name>.part         chunk i at i*chunk_size, pre-sized to file_size
//   roomdrop-parts/<name>.part.jsonl   line 1 the content key, then one held index a line
//   roomdrop-received/<name>           verified files, offered for saving from here
//
// The whole file's sha256 is kept up to date while contiguous chunks arrive (a streaming
// sha256: hash-wasm's WebAssembly SHA-256, ~3x @noble/hashes' speed here: it is the
// receiving worker's biggest cost), and finished at verify() by reading back the rest. Every
// chunk written here is plaintext (an end-to-end encrypted chunk is decrypted first, in
// opfs-worker.js): the part file is on the receiver's own disk.

import { createSHA256 } from "./vendor/hash-wasm/sha256.js";
const PARTS = "roomdrop-parts";
const RECEIVED = "roomdrop-received";
const EXPIRY_MS = 3600 * 1000;
const RECEIVED_KEEP_MS = 24 * 3600 * 1000;
const enc = new TextEncoder();

let rootP = null;
const open = new Map(); // part name → state

async function dirs() {
  if (!rootP) {
    rootP = (async () => {
      const root = await navigator.storage.getDirectory();
      return {
        parts: await root.getDirectoryHandle(PARTS, { create: true }),
        received: await root.getDirectoryHandle(RECEIVED, { create: true }),
      };
    })();
  }
  return rootP;
}

async function exists(dir, name) {
  try {
    await dir.getFileHandle(name);
    return true;
  } catch {
    return false;
  }
}

function numberedNames(name) {
  const dot = name.lastIndexOf(".");
  const stem = dot > 0 ? name.slice(0, dot) : name;
  const ext = dot > 0 ? name.slice(dot) : "";
  const out = [name];
  for (let i = 1; i < 10000; i++) out.push(`${stem} (${i})${ext}`);
  return out;
}

function parseRecord(text, key) {
  const lines = text.split("\n");
  let header;
  try {
    header = JSON.parse(lines[0]);
  } catch {
    return null;
  }
  if (
    !header ||
    header.roomdrop_part !== 1 ||
    header.sha256 !== key.sha256 ||
    header.file_size !== key.file_size ||
    header.chunk_size !== key.chunk_size
  ) {
    return null;
  }
  const total = Math.ceil(key.file_size / key.chunk_size);
  const held = new Set();
  // the last element has no trailing newline: a torn write (or ""), ignored
  for (let i = 1; i < lines.length - 1; i++) {
    const line = lines[i];
    if (!/^[0-9]+$/.test(line)) continue;
    const n = Number(line);
    if (n < total) held.add(n);
  }
  return [...held].sort((a, b) => a - b);
}

function headerLine(key, filename) {
  const total = Math.ceil(key.file_size / key.chunk_size);
  return (
    JSON.stringify({
      roomdrop_part: 1,
      sha256: key.sha256,
      file_size: key.file_size,
      chunk_size: key.chunk_size,
      total_chunks: total,
      filename,
    }) + "\n"
  );
}

export async function openPart({ key, filename }) {
  const hasher = await newHasher();
  const { parts } = await dirs();
  const total = Math.ceil(key.file_size / key.chunk_size);
  let name = null;
  let held = [];
  const records = [];
  for await (const [entry, handle] of parts.entries()) {
    if (handle.kind === "file" && entry.endsWith(".part.jsonl")) records.push(entry);
  }
  records.sort();
  for (const rec of records) {
    const part = rec.slice(0, -".jsonl".length);
    if (open.has(part) || !(await exists(parts, part))) continue;
    try {
      const text = await (await (await parts.getFileHandle(rec)).getFile()).text();
      const found = parseRecord(text, key);
      if (found) {
        name = part;
        held = found;
        break;
      }
    } catch {
      continue;
    }
  }
  if (name === null) {
    const estimate = await navigator.storage.estimate().catch(() => null);
    if (estimate && estimate.quota - estimate.usage < key.file_size) {
      throw new Error(
        `disk full: ${key.file_size} bytes needed, ${estimate.quota - estimate.usage} free (browser storage quota)`,
      );
    }
    for (const candidate of numberedNames(filename)) {
      const part = `${candidate}.part`;
      if (!(await exists(parts, part)) && !(await exists(parts, `${part}.jsonl`))) {
        name = part;
        break;
      }
    }
  }
  const fileHandle = await parts.getFileHandle(name, { create: true });
  const recordHandle = await parts.getFileHandle(`${name}.jsonl`, { create: true });
  const file = await fileHandle.createSyncAccessHandle();
  let record;
  try {
    record = await recordHandle.createSyncAccessHandle();
  } catch (e) {
    file.close();
    throw e;
  }
  if (file.getSize() !== key.file_size) file.truncate(key.file_size);
  // rewrite the record compactly, with this offer's filename
  const body = enc.encode(headerLine(key, filename) + held.map((i) => `${i}\n`).join(""));
  record.truncate(0);
  record.write(body, { at: 0 });
  record.flush();
  const heldMap = new Uint8Array(total);
  for (const i of held) heldMap[i] = 1;
  const state = {
    name,
    key,
    total,
    file,
    record,
    recordSize: body.byteLength,
    held: heldMap,
    hasher,
    hashNext: 0,
    dirty: false,
    unrecorded: [],
  };
  open.set(name, state);
  return { part: name, held };
}

export function chunkLen(st, i) {
  return Math.min(st.key.chunk_size, st.key.file_size - i * st.key.chunk_size);
}

function hashForward(st) {
  while (st.hashNext < st.total && st.held[st.hashNext]) {
    const len = chunkLen(st, st.hashNext);
    const buf = new Uint8Array(len);
    const n = st.file.read(buf, { at: st.hashNext * st.key.chunk_size });
    if (n !== len) throw new Error(`short read of chunk ${st.hashNext}: ${n} of ${len} bytes`);
    st.hasher.update(buf);
    st.hashNext++;
  }
}

/** The state of an open part file, or undefined. */
export function partState(part) {
  return open.get(part);
}

function state(part) {
  const st = open.get(part);
  if (!st) throw new Error(`part file ${part} is not open`);
  return st;
}

export function write({ part, index, data }) {
  const st = state(part);
  if (st.held[index]) return { stored: false };
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const at = index * st.key.chunk_size;
  let done = 0;
  while (done < bytes.byteLength) {
    const n = st.file.write(bytes.subarray(done), { at: at + done });
    if (n <= 0) throw new Error(`disk full: could not write chunk ${index}`);
    done += n;
  }
  // the index goes in the record only after its data is in the part file; indexes are
  // appended in batches (one small write costs about a millisecond here)
  st.unrecorded.push(index);
  if (st.unrecorded.length >= RECORD_BATCH) recordHeld(st);
  st.held[index] = 1;
  st.dirty = true;
  if (index === st.hashNext) {
    st.hasher.update(bytes);
    st.hashNext++;
  }
  hashForward(st);
  return { stored: true };
}

const RECORD_BATCH = 64;

function recordHeld(st) {
  if (!st.unrecorded.length) return;
  const line = enc.encode(st.unrecorded.map((i) => `${i}\n`).join(""));
  st.unrecorded = [];
  st.record.write(line, { at: st.recordSize });
  st.recordSize += line.byteLength;
}

export function verify({ part }) {
  const st = state(part);
  for (let i = 0; i < st.total; i++) if (!st.held[i]) throw new Error(`chunk ${i} is missing`);
  hashForward(st);
  st.file.flush();
  return { sha256: st.hasher.digest("hex") };
}

async function newHasher() {
  const hasher = await createSHA256();
  hasher.init();
  return hasher;
}

function closeState(st) {
  open.delete(st.name);
  try {
    recordHeld(st);
  } catch {}
  try {
    st.file.flush();
  } catch {}
  try {
    st.file.close();
  } catch {}
  try {
    st.record.flush();
    st.record.close();
  } catch {}
}

async function removeEntry(dir, name) {
  try {
    await dir.removeEntry(name);
  } catch {}
}

export async function place({ part, filename }) {
  const st = state(part);
  closeState(st);
  const { parts, received } = await dirs();
  let target = null;
  for (const candidate of numberedNames(filename)) {
    if (!(await exists(received, candidate))) {
      target = candidate;
      break;
    }
  }
  const handle = await parts.getFileHandle(part);
  let moved = false;
  if (typeof handle.move === "function") {
    try {
      await handle.move(received, target);
      moved = true;
    } catch {
      moved = false;
    }
  }
  if (!moved) {
    // copy in slices (never the whole file in memory), then drop the part file
    const src = await handle.createSyncAccessHandle();
    const dst = await (await received.getFileHandle(target, { create: true })).createSyncAccessHandle();
    try {
      const size = src.getSize();
      dst.truncate(0);
      const buf = new Uint8Array(1024 * 1024);
      for (let at = 0; at < size; ) {
        const n = src.read(buf, { at });
        if (n <= 0) break;
        dst.write(buf.subarray(0, n), { at });
        at += n;
      }
      dst.flush();
    } finally {
      src.close();
      dst.close();
    }
    await removeEntry(parts, part);
  }
  await removeEntry(parts, `${part}.jsonl`);
  return { name: target };
}

export async function closePart({ part }) {
  const st = open.get(part);
  if (st) closeState(st);
  return {};
}

export async function removePart({ part }) {
  const st = open.get(part);
  if (st) closeState(st);
  const { parts } = await dirs();
  await removeEntry(parts, part);
  await removeEntry(parts, `${part}.jsonl`);
  return {};
}

/** Reject: a part file of the same content left by an earlier run goes (§6.4). */
export async function removeByKey({ key }) {
  const { parts } = await dirs();
  const names = [];
  for await (const [entry, handle] of parts.entries()) {
    if (handle.kind === "file" && entry.endsWith(".part.jsonl")) names.push(entry);
  }
  for (const rec of names) {
    const part = rec.slice(0, -".jsonl".length);
    if (open.has(part)) continue;
    try {
      const text = await (await (await parts.getFileHandle(rec)).getFile()).text();
      if (parseRecord(text, key)) {
        await removeEntry(parts, part);
        await removeEntry(parts, rec);
      }
    } catch {}
  }
  return {};
}

/** Part files whose record was not written for an hour, and old received files. */
export async function sweep() {
  const { parts, received } = await dirs();
  const now = Date.now();
  const entries = [];
  for await (const [entry, handle] of parts.entries()) entries.push([entry, handle]);
  const names = new Set(entries.map(([n]) => n));
  for (const [entry, handle] of entries) {
    if (handle.kind !== "file") continue;
    if (entry.endsWith(".part.jsonl")) {
      const part = entry.slice(0, -".jsonl".length);
      if (open.has(part)) continue;
      try {
        const file = await handle.getFile();
        if (now - file.lastModified > EXPIRY_MS) {
          await removeEntry(parts, part);
          await removeEntry(parts, entry);
        }
      } catch {}
    } else if (entry.endsWith(".part") && !names.has(`${entry}.jsonl`) && !open.has(entry)) {
      await removeEntry(parts, entry); // a part file without its record is useless
    }
  }
  for await (const [entry, handle] of received.entries()) {
    if (handle.kind !== "file") continue;
    try {
      const file = await handle.getFile();
      if (now - file.lastModified > RECEIVED_KEEP_MS) await removeEntry(received, entry);
    } catch {}
  }
  return {};
}

export function flushAll() {
  for (const st of open.values()) {
    if (!st.dirty) continue;
    st.dirty = false;
    try {
      st.file.flush(); // the data first, then the indexes that claim it
      recordHeld(st);
      st.record.flush();
    } catch {}
  }
  return {};
}

