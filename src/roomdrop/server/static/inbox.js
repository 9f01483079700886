// The receiving end's frame inbox: received frames wait in a queue here and go to the
// part store's worker (store.js, opfs-worker.js; their buffers move, no copy), which
// decodes, reassembles, decrypts or verifies, and writes them. At most WORKER_FRAMES are
// in the worker at once, so a pause stops the writing at once: queued frames of a
// transfer that is no longer active are dropped (§4). At most INBOX_BYTES wait: beyond
// that a frame is dropped and its chunk asked for again later, like the reference
// client's inbox, so memory stays bounded whatever the rate. incoming.js owns it.

const INBOX_BYTES = 32 * 1024 * 1024;
const WORKER_FRAMES = 16;

export class Inbox {
  /** @param {import("./store.js").PartStore} store */
  constructor(store) {
    this.store = store;
    this.items = [];
    this.head = 0;
    this.bytes = 0;
    this.inWorker = 0;
    this.dropped = 0; // frames dropped because the inbox was full
  }

  /** A frame of transfer `t` (whose part file is open); false if dropped (full). */
  push(t, tid, data, via) {
    if (this.bytes > INBOX_BYTES) {
      this.dropped += 1;
      return false;
    }
    this.items.push({ t, part: t._.part, tid, data, via });
    this.bytes += data.byteLength;
    this.feed();
    return true;
  }

  /** The worker is done with one frame. */
  consumed() {
    this.inWorker = Math.max(0, this.inWorker - 1);
    this.feed();
  }

  feed() {
    while (this.inWorker < WORKER_FRAMES && this.head < this.items.length) {
      const item = this.items[this.head];
      this.items[this.head++] = undefined;
      this.bytes -= item.data.byteLength;
      const t = item.t;
      if (t._.final || t.status !== "active" || t._.part !== item.part) continue;
      this.inWorker++;
      this.store.frame(item.part, item.tid, item.data, item.via);
    }
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}
