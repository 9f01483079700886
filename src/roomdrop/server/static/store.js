// The main thread's side of opfs-worker.js (part files, frames taken in): one request →
// one promise; each frame's outcome comes back as an event (onEvent).

export class PartStore {
  constructor() {
    this.worker = new Worker(new URL("./opfs-worker.js", import.meta.url), { type: "module" });
    this.next = 1;
    this.waiting = new Map();
    this.onEvent = () => {};
    this.worker.onmessage = (event) => {
      if (event.data.event) {
        this.onEvent(event.data);
        return;
      }
      const { id, ok, result, error } = event.data;
      const w = this.waiting.get(id);
      if (!w) return;
      this.waiting.delete(id);
      if (ok) w.resolve(result);
      else w.reject(new Error(error));
    };
    this.worker.onerror = (event) => {
      console.error("opfs worker failed", event.message || event);
    };
  }

  call(op, args, transfer = []) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args }, transfer);
    });
  }

  /** Open (or make) the part file of content `key`; `e2e` {key: the content key as a
   * CryptoKey, tid} for an end-to-end encrypted transfer (null in the clear), `mime`
   * {declared, allow, deny} for the check of chunk 0 (policy.js). */
  open(key, filename, e2e = null, mime = null) {
    return this.call("open", { key, filename, e2e, mime });
  }

  write(part, index, data) {
    // data: a Uint8Array view; copy out exactly its bytes so the buffer can be moved
    const copy = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength
      ? data.buffer
      : data.slice().buffer;
    return this.call("write", { part, index, data: copy }, [copy]);
  }

  /** Hand a received frame (its buffer moves) to the worker; the outcome comes as an event. */
  frame(part, tid, data, via) {
    this.worker.postMessage({ op: "frame", args: { part, tid, data, via } }, [data]);
  }

  verify(part) {
    return this.call("verify", { part });
  }

  place(part, filename) {
    return this.call("place", { part, filename });
  }

  close(part) {
    return this.call("close", { part });
  }

  remove(part) {
    return this.call("remove", { part });
  }

  removeByKey(key) {
    return this.call("removeByKey", { key });
  }

  sweep() {
    return this.call("sweep", {});
  }

  async receivedFile(name) {
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle("roomdrop-received");
    const handle = await dir.getFileHandle(name);
    return handle.getFile();
  }
}
