// The wire format of docs/protocol.md: binary frames (§3.3), fragmentation (§3.4),
// range lists (§2.1), chunk planning (§3.1), file names (§9.1), and how sizes, durations
// and percentages are shown (as the CLI shows them).

export const HEADER_SIZE = 72;
export const MAX_CHUNK_SIZE = 1024 * 1024;
export const DATA_CHANNEL_MAX_MESSAGE = 65536;
export const CHUNK_SIZE = 65536;
export const FLAG_SEALED = 0x01; // the data is AES-256-GCM ciphertext (§14.4)
export const TAG_SIZE = 16;
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function toHex(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let out = "";
  for (let i = 0; i < u8.length; i++) out += HEX[u8[i]];
  return out;
}

export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

/** A new UUID4, canonical lowercase. */
export function newUuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return uuidOfBytes(b);
}

export function uuidBytes(uuid) {
  return fromHex(uuid.replace(/[^0-9a-fA-F]/g, "").toLowerCase());
}

export function uuidOfBytes(b) {
  const h = toHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Canonical form of any UUID spelling (§2.1), or the input if it is not one. */
export function canonicalUuid(text) {
  const hex = String(text).toLowerCase().replace(/^urn:uuid:/, "").replace(/[{}-]/g, "");
  return /^[0-9a-f]{32}$/.test(hex) ? uuidOfBytes(fromHex(hex)) : String(text);
}

// --- chunks -------------------------------------------------------------------------

export function totalChunks(fileSize, chunkSize) {
  return Math.ceil(fileSize / chunkSize);
}

export function chunkLength(index, fileSize, chunkSize) {
  return Math.min(chunkSize, fileSize - index * chunkSize);
}

/** Sorted distinct indexes → merged half-open ranges, e.g. [0,1,2,5] → [[0,3],[5,6]]. */
export function rangesOf(indexes) {
  const out = [];
  for (const i of indexes) {
    const last = out[out.length - 1];
    if (last && i === last[1]) last[1] = i + 1;
    else out.push([i, i + 1]);
  }
  return out;
}

export function* indexesIn(ranges) {
  for (const [start, end] of ranges) for (let i = start; i < end; i++) yield i;
}

export function countIn(ranges) {
  let n = 0;
  for (const [start, end] of ranges) n += end - start;
  return n;
}

// --- frames -------------------------------------------------------------------------

/** One chunk → its frames, each at most `max` bytes (null: one whole frame). Sealed
 * (§14.4): `data` is the chunk's ciphertext, the flag SEALED is set and the checksum
 * zero (`checksumHex` is ignored). */
export function encodeFrames(tid, index, total, chunkSize, data, checksumHex, max, sealed = false) {
  const length = data.byteLength;
  const bounds = fragmentBounds(length, max);
  const idBytes = uuidBytes(tid);
  const sum = sealed ? new Uint8Array(32) : fromHex(checksumHex);
  const src = data instanceof Uint8Array ? data : new Uint8Array(data);
  return bounds.map(([offset, size]) => {
    const frame = new Uint8Array(HEADER_SIZE + size);
    const view = new DataView(frame.buffer);
    frame[0] = 0x52; // R
    frame[1] = 0x44; // D
    frame[2] = 1;
    frame[3] = sealed ? FLAG_SEALED : 0;
    frame.set(idBytes, 4);
    view.setUint32(20, index);
    view.setUint32(24, total);
    view.setUint32(28, chunkSize);
    view.setUint32(32, length);
    view.setUint32(36, offset);
    frame.set(sum, 40);
    frame.set(src.subarray(offset, offset + size), HEADER_SIZE);
    return frame.buffer;
  });
}

/** §3.4 fragment_bounds: [[offset, size], ...]. */
export function fragmentBounds(length, max) {
  if (max == null || length + HEADER_SIZE <= max) return [[0, length]];
  const room = max - HEADER_SIZE;
  const parts = Math.ceil(length / room);
  const base = Math.floor(length / parts);
  const extra = length % parts;
  const out = [];
  let offset = 0;
  for (let p = 0; p < parts; p++) {
    const size = base + (p < extra ? 1 : 0);
    out.push([offset, size]);
    offset += size;
  }
  return out;
}

/** §3.3 decode_frame: a frame object, or throws Error("protocol-error: ..."). */
export function decodeFrame(buffer) {
  if (buffer.byteLength < HEADER_SIZE) throw new Error("frame shorter than 72 bytes");
  const u8 = new Uint8Array(buffer);
  const view = new DataView(buffer);
  if (u8[0] !== 0x52 || u8[1] !== 0x44) throw new Error("bad magic");
  if (u8[2] !== 1) throw new Error(`unknown frame version ${u8[2]}`);
  if (u8[3] !== 0 && u8[3] !== FLAG_SEALED) throw new Error(`unknown flags ${u8[3]}`);
  const sealed = u8[3] === FLAG_SEALED;
  const frame = {
    sealed,
    transferId: uuidOfBytes(u8.subarray(4, 20)),
    index: view.getUint32(20),
    total: view.getUint32(24),
    chunkSize: view.getUint32(28),
    length: view.getUint32(32),
    offset: view.getUint32(36),
    checksum: toHex(u8.subarray(40, 72)),
    data: u8.subarray(HEADER_SIZE),
  };
  if (frame.index >= frame.total) throw new Error("chunk_index not below total_chunks");
  if (frame.chunkSize < 1 || frame.chunkSize > MAX_CHUNK_SIZE) throw new Error("bad chunk_size");
  if (sealed) {
    if (u8.subarray(40, 72).some((b) => b !== 0)) throw new Error("a sealed frame's checksum is not zero");
    if (frame.length <= TAG_SIZE || frame.length > frame.chunkSize + TAG_SIZE) throw new Error("bad chunk_length");
  } else if (frame.length < 1 || frame.length > frame.chunkSize) throw new Error("bad chunk_length");
  const n = frame.data.byteLength;
  if (n < 1 || frame.offset + n > frame.length) throw new Error("fragment out of bounds");
  return frame;
}

/** §3.5 ChunkAssembler: fragments → whole chunks. */
export class ChunkAssembler {
  constructor(maxPartial = 4) {
    this.maxPartial = maxPartial;
    this.partial = new Map(); // key → {frame, buf, covered: [[s,e]...]}
  }

  feed(frame) {
    if (frame.offset === 0 && frame.data.byteLength === frame.length) {
      return { ...frame, data: frame.data };
    }
    const key = `${frame.transferId}:${frame.index}`;
    let p = this.partial.get(key);
    if (p && (p.checksum !== frame.checksum || p.length !== frame.length || p.total !== frame.total || p.sealed !== frame.sealed)) {
      this.partial.delete(key);
      p = undefined;
    }
    if (!p) {
      if (this.partial.size >= this.maxPartial) {
        this.partial.delete(this.partial.keys().next().value);
      }
      p = {
        checksum: frame.checksum,
        sealed: frame.sealed,
        length: frame.length,
        total: frame.total,
        buf: new Uint8Array(frame.length),
        covered: [],
      };
      this.partial.set(key, p);
    }
    p.buf.set(frame.data, frame.offset);
    p.covered.push([frame.offset, frame.offset + frame.data.byteLength]);
    p.covered.sort((a, b) => a[0] - b[0]);
    const merged = [];
    for (const [s, e] of p.covered) {
      const last = merged[merged.length - 1];
      if (last && s <= last[1]) last[1] = Math.max(last[1], e);
      else merged.push([s, e]);
    }
    p.covered = merged;
    if (merged.length === 1 && merged[0][0] === 0 && merged[0][1] === p.length) {
      this.partial.delete(key);
      return { ...frame, offset: 0, data: p.buf };
    }
    return null;
  }

  forget(tid) {
    for (const key of [...this.partial.keys()]) if (key.startsWith(`${tid}:`)) this.partial.delete(key);
  }
}

// --- names --------------------------------------------------------------------------

const RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9]|clock\$)$/i;
const utf8 = new TextEncoder();

function cutToBytes(text, max) {
  let out = "";
  for (const ch of text) {
    if (utf8.encode(out + ch).length > max) break;
    out += ch;
  }
  return out;
}

function sanitizeOnce(name) {
  let s = name.normalize("NFC").replace(/\\/g, "/");
  s = s.slice(s.lastIndexOf("/") + 1);
  s = s.replace(/[\p{Cc}\p{Cf}\p{Cs}]/gu, "");
  if (utf8.encode(s).length > 200) {
    const dot = s.lastIndexOf(".");
    let ext = dot > 0 ? s.slice(dot) : "";
    if (utf8.encode(ext).length > 32) ext = "";
    const stem = ext ? s.slice(0, dot) : s;
    s = cutToBytes(stem, 200 - utf8.encode(ext).length) + ext;
  }
  s = s.replace(/[<>:"|?*\/]/g, "");
  const dot = s.indexOf(".");
  const stem = dot >= 0 ? s.slice(0, dot) : s;
  if (RESERVED.test(stem.trim())) s = dot >= 0 ? `${stem}_${s.slice(dot)}` : `${s}_`;
  s = s.trim().replace(/^[. ]+/, "").replace(/[. ]+$/, "");
  if (!s || s.startsWith(".")) s = "unnamed" + s;
  const d = s.lastIndexOf(".");
  if (d === 0) s = "unnamed" + s;
  return s;
}

/** §9.1 sanitize_filename, closely enough for a browser's download name. */
export function sanitizeFilename(name) {
  let s = String(name || "");
  for (let i = 0; i < 4; i++) {
    const next = sanitizeOnce(s);
    if (next === s) break;
    s = next;
  }
  return s || "unnamed";
}

/** What a figure not known yet (a speed in its first half second) shows. */
export const PLACEHOLDER = "—";

/** A size as the CLI shows it (roomdrop.client.display.human_size): decimal units
 * (1 kB = 1000 bytes, as rich's columns and the commands' messages), one decimal above
 * bytes. */
export function formatBytes(n) {
  if (n == null || !isFinite(n)) return PLACEHOLDER;
  let v = n;
  for (const unit of ["bytes", "kB", "MB", "GB"]) {
    if (v < 1000 || unit === "GB") return unit === "bytes" ? `${v.toFixed(0)} bytes` : `${v.toFixed(1)} ${unit}`;
    v /= 1000;
  }
  return `${n} bytes`;
}

export function formatDuration(s) {
  if (s == null || !isFinite(s)) return PLACEHOLDER;
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A percentage with one decimal, never rounded up to 100 before the end. */
export function formatPercent(p) {
  if (!(p > 0)) return "0 %";
  if (p >= 100) return "100 %";
  return `${(Math.floor(p * 10) / 10).toFixed(1)} %`;
}

/** The JWT's `sub` claim, or null. */
export function userOfToken(token) {
  try {
    const part = token.split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const pad = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(pad), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}
