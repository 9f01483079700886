// The whole file's sha256 of a file to send (the offer's sha256, §2.3), streamed in a
// worker (hash-worker.js), its progress shown on the transfer's row.
// One File sent to several receivers ("Send to everyone", picker.js) is hashed once: the
// transfers of the same File share one hash (its progress shown on each row), and a
// transfer that asks once it is done gets the digest at once. A hash that failed is
// forgotten (the next one asking reads the file again).

let hashWorker = null;
let hashIds = 0;
const hashes = new WeakMap(); // File → {digest: Promise, progress, waiting: Set of [t, render]}

function worker() {
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
  return hashWorker;
}

/** The sha256 of `file`, hashed once however many transfers ask for it. */
function hashOnce(file) {
  let h = hashes.get(file);
  if (h) return h;
  h = { progress: 0, waiting: new Set() };
  const w = worker();
  const id = ++hashIds;
  h.digest = new Promise((resolve, reject) => {
    w.waiting.set(id, {
      resolve,
      reject: (e) => {
        hashes.delete(file);
        reject(e);
      },
      progress: (p) => {
        h.progress = Math.min(p, 0.999);
        for (const [t, render] of h.waiting) {
          t._.hashing = h.progress;
          render(t);
        }
      },
    });
    w.postMessage({ id, file });
  });
  hashes.set(file, h);
  return h;
}

/** The whole file's sha256 of `t._.file` (§2.3: the offer's sha256). */
export async function hashFile(t, render) {
  const h = hashOnce(t._.file);
  const entry = [t, render];
  h.waiting.add(entry);
  t._.hashing = h.progress;
  try {
    const digest = await h.digest;
    t._.hashing = 1;
    return digest;
  } finally {
    h.waiting.delete(entry);
  }
}
