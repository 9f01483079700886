// The whole file's sha256 of a file to send (the offer's sha256, §2.3), streamed in a
// worker (hash-worker.js), its progress shown on the transfer's row.

let hashWorker = null;
let hashIds = 0;

/** The whole file's sha256, streamed in a worker (§2.3: the offer's sha256). */
export function hashFile(t, render) {
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
