// The receiving end's last step: every chunk is in, so the part file's whole-file sha256
// is checked against the offer's, the file is put in place (roomdrop-received/, from
// where the page offers it for saving) and the server is told (file-share-complete).
// A mismatch removes the part file and fails the transfer (integrity-error). The chunks
// in the part file are plaintext: an end-to-end encrypted transfer was decrypted chunk
// by chunk on its way in (opfs-worker.js), so the digest is the plaintext's, as offered.
// incoming.js uses it. Counterpart: the completing part of src/roomdrop/client/incoming.py

import { setProgress } from "./transfers.js";

/** Every chunk of `t` is in: check the whole file's sha256, then put it in place (§4),
 * tell the server. `role` is the Incoming the transfer is of. */
export async function finishReceiving(role, t) {
  if (t._.verifying || t._.final) return;
  t._.verifying = true;
  t._.note = "verifying sha256…";
  role.host.display.render(t);
  const part = t._.part;
  const failed = (code, message) => role.fail(t, code, message);
  let digest;
  try {
    digest = (await role.store.verify(part)).sha256;
  } catch (e) {
    t._.verifying = false;
    failed("storage-error", String(e.message || e));
    return;
  }
  t._.note = null;
  if (digest !== t.sha256) {
    const message = `file sha256 ${digest} does not match the offer's ${t.sha256}`;
    t._.part = null;
    await role.store.remove(part).catch(() => {});
    failed("integrity-error", message);
    return;
  }
  let placed;
  try {
    placed = await role.store.place(part, t.filename);
  } catch (e) {
    failed("storage-error", String(e.message || e));
    return;
  }
  t._.part = null;
  t.saved_name = placed.name;
  try {
    const file = await role.store.receivedFile(placed.name);
    t._.url = URL.createObjectURL(file);
  } catch (e) {
    console.error("cannot open the received file", e);
  }
  setProgress(t, t.total_chunks, t.file_size);
  role.finish(t, "completed");
  role.announceComplete(t);
}
