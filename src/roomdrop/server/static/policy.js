// What files may travel, at the receiver (docs/protocol.md §14.5): the server's MIME
// allow and deny lists (room-state.payload.mime) applied to what the first decrypted
// chunk shows the content to be, and to the declared type. With end-to-end encryption
// the receiving page is the only side with plaintext, so the check is made here (in
// opfs-worker.js, before chunk 0 is written).
// Counterpart: src/roomdrop/protocol/policy.py (MimePolicy) and source.py
// (sniff_mime_type); the sniffer is file-type (vendor/file-type, loaded on first use).

const GENERIC_TYPES = new Set(["application/octet-stream", "binary/octet-stream", ""]);
const MAGIC_BYTES = 8192;

/** Python's fnmatch.fnmatchcase as a RegExp (shell-style: * ? [seq] [!seq]). */
function translate(pattern) {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") out += ".*";
    else if (c === "?") out += ".";
    else if (c === "[") {
      let j = i + 1;
      if (pattern[j] === "!") j++;
      if (pattern[j] === "]") j++;
      while (j < pattern.length && pattern[j] !== "]") j++;
      if (j >= pattern.length) {
        out += "\\[";
        continue;
      }
      let body = pattern.slice(i + 1, j);
      i = j;
      const negate = body.startsWith("!");
      if (negate) body = body.slice(1);
      body = body.replace(/\\/g, "\\\\").replace(/\]/g, "\\]").replace(/\^/g, "\\^");
      out += negate ? `[^${body}]` : `[${body}]`;
    } else out += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  }
  return new RegExp(`^(?:${out})$`, "s");
}

/** The allow and deny lists (patterns, case-insensitive; deny wins; an empty allow
 * list allows everything not denied). */
export class MimePolicy {
  constructor(allow = [], deny = []) {
    this.allow = allow.map((p) => translate(String(p).toLowerCase()));
    this.deny = deny.map((p) => translate(String(p).toLowerCase()));
  }

  allowed(mime) {
    const m = String(mime).toLowerCase();
    if (this.deny.some((r) => r.test(m))) return false;
    return this.allow.length === 0 || this.allow.some((r) => r.test(m));
  }

  /** Why content recognised as `sniffed` may not travel as `declared`, or null: it must
   * pass the lists too, and must not contradict a specific declared type. Aliases
   * within one top-level type and a generic declaration are no contradiction. */
  objection(declared, sniffed) {
    const d = String(declared).toLowerCase();
    if (sniffed == null || sniffed === d) return null;
    const message = `declared ${d}, but the content is ${sniffed}`;
    if (!this.allowed(sniffed)) return `${message}, which is not allowed here`;
    if (GENERIC_TYPES.has(d) || d.split("/")[0] === sniffed.split("/")[0]) return null;
    return message;
  }
}

let sniffer = null;

/** The MIME type the content's first bytes show, or null. */
export async function sniffMimeType(head) {
  if (!head || head.byteLength === 0) return null;
  if (!sniffer) sniffer = import("./vendor/file-type/file-type.js");
  const { fileTypeFromBuffer } = await sniffer;
  const bytes = head.byteLength > MAGIC_BYTES ? head.subarray(0, MAGIC_BYTES) : head;
  try {
    const kind = await fileTypeFromBuffer(bytes);
    return kind ? kind.mime : null;
  } catch {
    return null;
  }
}
