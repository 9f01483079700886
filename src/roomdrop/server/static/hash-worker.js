// The sha256 of a whole File, streamed in slices (never the whole file in memory), off
// the main thread: {id, file} in; {id, progress} while it runs, then {id, sha256} or
// {id, error}.

import { createSHA256 } from "./vendor/hash-wasm/sha256.js";

const SLICE = 4 * 1024 * 1024;

self.onmessage = async (event) => {
  const { id, file } = event.data;
  try {
    const hasher = await createSHA256(); // WebAssembly: ~3x @noble/hashes' speed here
    hasher.init();
    let last = 0;
    for (let at = 0; at < file.size; at += SLICE) {
      const buf = await file.slice(at, Math.min(file.size, at + SLICE)).arrayBuffer();
      hasher.update(new Uint8Array(buf));
      const now = Date.now();
      if (now - last > 100) {
        last = now;
        self.postMessage({ id, progress: Math.min(file.size, at + SLICE) / file.size });
      }
    }
    self.postMessage({ id, sha256: hasher.digest("hex") });
  } catch (e) {
    self.postMessage({ id, error: String((e && e.message) || e) });
  }
};
